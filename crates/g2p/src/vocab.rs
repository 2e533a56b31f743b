//! Kokoro phoneme vocabulary: one id per phoneme symbol (a single Unicode scalar).

use std::collections::HashMap;
use std::path::Path;

use crate::G2pError;

/// The Kokoro symbol table (`vocab.json`: `{"vocab": {symbol: id}}`, 114 symbols for v1.0).
#[derive(Debug, Clone)]
pub struct Vocab {
    ids: HashMap<char, i64>,
}

impl Vocab {
    /// Read `vocab.json` (either the Kokoro `config.json` shape `{"vocab": {..}}` or a bare map).
    pub fn load(path: &Path) -> Result<Vocab, G2pError> {
        let text = std::fs::read_to_string(path).map_err(|e| G2pError::Data(format!("cannot read {}: {e}", path.display())))?;
        Vocab::from_json(&text).map_err(|e| G2pError::Data(format!("{}: {e}", path.display())))
    }

    /// Parse the JSON text of a vocab file.
    pub fn from_json(text: &str) -> Result<Vocab, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let map = value.get("vocab").unwrap_or(&value);
        let map = map.as_object().ok_or("expected an object of symbol -> id")?;
        let mut ids = HashMap::with_capacity(map.len());
        for (symbol, id) in map {
            let mut chars = symbol.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(format!("symbol {symbol:?} is not a single character"));
            };
            let id = id.as_i64().ok_or_else(|| format!("id of {symbol:?} is not an integer"))?;
            ids.insert(c, id);
        }
        if ids.is_empty() {
            return Err("empty vocabulary".into());
        }
        Ok(Vocab { ids })
    }

    /// Token ids of a phoneme string; symbols not in the vocabulary are dropped, as Kokoro's
    /// `KModel.forward` does (`filter(lambda i: i is not None, map(vocab.get, phonemes))`).
    /// No padding tokens are added.
    pub fn encode(&self, phonemes: &str) -> Vec<i64> {
        phonemes.chars().filter_map(|c| self.ids.get(&c).copied()).collect()
    }

    /// [`Vocab::encode`] between Kokoro's pad token (0) at both ends: one model input.
    pub fn encode_padded(&self, phonemes: &str) -> Vec<i64> {
        let mut ids = Vec::with_capacity(phonemes.len() + 2);
        ids.push(0);
        ids.extend(phonemes.chars().filter_map(|c| self.ids.get(&c).copied()));
        ids.push(0);
        ids
    }

    /// Number of tokens `phonemes` encodes to (without allocating).
    pub fn count(&self, phonemes: &str) -> usize {
        phonemes.chars().filter(|c| self.ids.contains_key(c)).count()
    }

    pub fn contains(&self, symbol: char) -> bool {
        self.ids.contains_key(&symbol)
    }

    pub fn id(&self, symbol: char) -> Option<i64> {
        self.ids.get(&symbol).copied()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_drops_unknown() {
        let v = Vocab::from_json(r#"{"vocab": {"a": 43, " ": 16, "ˈ": 156}}"#).unwrap();
        assert_eq!(v.encode("ˈa xa"), vec![156, 43, 16, 43]);
        assert_eq!(v.count("ˈa xa"), 4);
        assert_eq!(v.len(), 3);
        assert!(Vocab::from_json(r#"{"ab": 1}"#).is_err());
    }
}

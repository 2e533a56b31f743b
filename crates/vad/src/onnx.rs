//! The 16 kHz weights out of Silero's ONNX export (`silero_vad.onnx`, `silero_vad_16k_op15.onnx`).
//!
//! The file is read by voice-onnx (the reader every model crate shares); this module keeps only
//! Silero's names.
//! `silero_vad.onnx` keeps both sample rates in one graph: an `If` on `sr == 16000` whose two
//! branches hold their own weights as `Constant` nodes (`If_0_then_branch__Inline_0__encoder.0.
//! reparam_conv.weight`, ...). The 16 kHz set is the one of the (sub)graph that holds the 16 kHz
//! STFT basis, shape (258, 1, 256); the 8 kHz branch's basis is (130, 1, 128). The parameters are
//! the PyTorch module's (`encoder.N.reparam_conv`, `decoder.rnn` as an `LSTMCell`, gate order
//! i, f, g, o; the graph reorders them for the ONNX `LSTM` op itself), renamed here to the names
//! of `silero_vad_16k.safetensors` so both sources share one loader.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use voice_onnx::{Graph, Model};

/// ONNX parameter name (suffix) -> our (safetensors) name.
pub(crate) const ONNX_NAMES: [(&str, &str); 15] = [
    ("stft.forward_basis_buffer", "stft_conv.weight"),
    ("encoder.0.reparam_conv.weight", "conv1.weight"),
    ("encoder.0.reparam_conv.bias", "conv1.bias"),
    ("encoder.1.reparam_conv.weight", "conv2.weight"),
    ("encoder.1.reparam_conv.bias", "conv2.bias"),
    ("encoder.2.reparam_conv.weight", "conv3.weight"),
    ("encoder.2.reparam_conv.bias", "conv3.bias"),
    ("encoder.3.reparam_conv.weight", "conv4.weight"),
    ("encoder.3.reparam_conv.bias", "conv4.bias"),
    ("decoder.rnn.weight_ih", "lstm_cell.weight_ih"),
    ("decoder.rnn.weight_hh", "lstm_cell.weight_hh"),
    ("decoder.rnn.bias_ih", "lstm_cell.bias_ih"),
    ("decoder.rnn.bias_hh", "lstm_cell.bias_hh"),
    ("decoder.decoder.2.weight", "final_conv.weight"),
    ("decoder.decoder.2.bias", "final_conv.bias"),
];

/// A parameter's shape and row-major values.
pub(crate) type Param = (Vec<usize>, Vec<f32>);

/// `name` is `suffix` or ends with it after a separator (`model.x`, `If_0_..._Inline_0__x`).
fn names_param(name: &str, suffix: &str) -> bool {
    name == suffix || (name.ends_with(suffix) && !name[..name.len() - suffix.len()].ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// The 16 kHz parameters, under the safetensors names, with the shapes the file gives (checked
/// against the model's by the caller).
pub(crate) fn parse(bytes: &[u8], expected: &HashMap<&str, Vec<usize>>) -> Result<HashMap<String, Param>> {
    let model = Model::parse(bytes.to_vec()).map_err(|e| anyhow!("not a valid ONNX protobuf: {e}"))?;
    let graphs = model.graph()?.all_graphs();
    let basis = ONNX_NAMES[0].0;
    let want_basis = &expected["stft_conv.weight"];
    let holds_basis = |g: &Graph| g.tensor_names().any(|n| names_param(n, basis) && g.tensor(n).is_ok_and(|t| t.dims() == *want_basis));
    let g = graphs.iter().find(|g| holds_basis(g)).ok_or_else(|| {
        anyhow!("no graph of the ONNX file holds a 16 kHz STFT basis `{basis}` of shape {want_basis:?}: not a Silero VAD v5/v6 16 kHz model")
    })?;
    let mut out = HashMap::new();
    for (onnx_name, ours) in ONNX_NAMES {
        let mut candidates: Vec<&str> = g.tensor_names().filter(|n| names_param(n, onnx_name)).collect();
        candidates.sort_unstable();
        let want = &expected[ours];
        let chosen: &str = match candidates.as_slice() {
            [] => bail!("the ONNX graph has no tensor `{onnx_name}` (for `{ours}`)"),
            [one] => one,
            many => {
                let fitting: Vec<&str> = many.iter().copied().filter(|n| g.tensor(n).is_ok_and(|t| t.dims() == *want)).collect();
                match fitting.as_slice() {
                    [one] => one,
                    _ => bail!("the ONNX graph has {} tensors named like `{onnx_name}`; cannot tell which is the 16 kHz one", many.len()),
                }
            }
        };
        let t = g.tensor(chosen)?;
        out.insert(ours.to_string(), (t.dims(), t.floats()?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_match_on_a_separator() {
        assert!(names_param("encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(names_param("model.encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(names_param("If_0_then_branch__Inline_0__encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(!names_param("xencoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(!names_param("encoder.0.reparam_conv.weight2", "encoder.0.reparam_conv.weight"));
    }
}

//! Reader for CTranslate2's `model.bin` (binary versions 4 to 6), the format faster-whisper uses
//! and the registry Whisper packages ship.
//!
//! Layout (little endian): u32 binary version, string spec name, u32 spec revision, u32 variable
//! count, then per variable: string name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, the
//! bytes; then u32 alias count and (alias, target) string pairs. A string is a u16 length that
//! counts a trailing NUL, then the bytes.
//!
//! Every length is checked against what is left of the file, so a corrupt or hostile file gives an
//! error instead of a panic or a huge allocation.

use std::{collections::HashMap, ops::Range};

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2DType {
    fn from_id(id: u8) -> Result<Self> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            other => bail!("unsupported CTranslate2 dtype id {other}"),
        })
    }
    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ct2Var {
    pub dims: Vec<usize>,
    pub dtype: Ct2DType,
    pub data: Range<usize>,
}

/// An index over the bytes of a model.bin: names to shapes, dtypes and byte ranges.
#[derive(Debug, Clone)]
pub struct Ct2Index {
    pub binary_version: u32,
    pub spec: String,
    pub spec_revision: u32,
    pub vars: HashMap<String, Ct2Var>,
    pub aliases: HashMap<String, String>,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| anyhow!("length overflow"))?;
        ensure!(end <= self.b.len(), "unexpected end of file at byte {} (needed {n} more)", self.pos);
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u16()? as usize;
        ensure!(n >= 1, "empty string field");
        let s = self.take(n)?;
        let s = &s[..n - 1]; // drop the NUL
        String::from_utf8(s.to_vec()).map_err(|_| anyhow!("string field is not UTF-8"))
    }
}

impl Ct2Index {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut c = Cursor { b: bytes, pos: 0 };
        let binary_version = c.u32().context("reading the header")?;
        ensure!((4..=6).contains(&binary_version), "CTranslate2 binary version {binary_version} is not supported (4 to 6 are)");
        let spec = c.string()?;
        let spec_revision = c.u32()?;
        let n = c.u32()? as usize;
        // Each variable takes at least 12 bytes: refuse counts the file cannot hold.
        ensure!(n <= bytes.len() / 12, "variable count {n} does not fit in a {}-byte file", bytes.len());
        let mut vars = HashMap::with_capacity(n);
        for i in 0..n {
            let name = c.string().with_context(|| format!("variable {i}: name"))?;
            let rank = c.u8()? as usize;
            ensure!(rank <= 8, "variable `{name}`: rank {rank} is implausible");
            let mut dims = Vec::with_capacity(rank);
            for _ in 0..rank {
                dims.push(c.u32()? as usize);
            }
            let dtype = Ct2DType::from_id(c.u8()?).with_context(|| format!("variable `{name}`"))?;
            let nbytes = c.u32()? as usize;
            let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("variable `{name}`: shape overflows"))?;
            // With a zero dimension the count is 0 whatever the others are, but strides (products
            // of the trailing dims) must still fit: refuse what candle could not lay out.
            ensure!(dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d.max(1))).is_some(), "variable `{name}`: shape {dims:?} overflows");
            ensure!(
                count.checked_mul(dtype.size()) == Some(nbytes),
                "variable `{name}`: shape {dims:?} of {dtype:?} needs {} bytes but {nbytes} are stored",
                count.saturating_mul(dtype.size())
            );
            let start = c.pos;
            c.take(nbytes).with_context(|| format!("variable `{name}`: data"))?;
            vars.insert(name, Ct2Var { dims, dtype, data: start..start + nbytes });
        }
        let mut aliases = HashMap::new();
        if c.pos < bytes.len() {
            let na = c.u32()? as usize;
            ensure!(na <= bytes.len() / 4, "alias count {na} is implausible");
            for _ in 0..na {
                let alias = c.string()?;
                let target = c.string()?;
                aliases.insert(alias, target);
            }
        }
        Ok(Self { binary_version, spec, spec_revision, vars, aliases })
    }

    pub fn get(&self, name: &str) -> Option<&Ct2Var> {
        self.vars.get(name).or_else(|| self.aliases.get(name).and_then(|t| self.vars.get(t)))
    }

    /// A scalar integer variable (e.g. `encoder/num_heads`).
    pub fn scalar_int(&self, bytes: &[u8], name: &str) -> Result<i64> {
        let v = self.get(name).ok_or_else(|| anyhow!("missing `{name}`"))?;
        ensure!(v.dims.iter().product::<usize>() == 1, "`{name}` is not a scalar");
        let b = &bytes[v.data.clone()];
        Ok(match v.dtype {
            Ct2DType::I8 => b[0] as i8 as i64,
            Ct2DType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            Ct2DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            other => bail!("`{name}` has dtype {other:?}, expected an integer"),
        })
    }

    /// A tensor on the CPU in `dtype`. int8 weights are dequantised with their `<name>_scale`
    /// (CTranslate2 stores q = round(w * scale) per output row).
    pub fn tensor(&self, bytes: &[u8], name: &str, dtype: DType) -> Result<Tensor> {
        let v = self.get(name).ok_or_else(|| anyhow!("the model has no variable `{name}`"))?;
        let raw = &bytes[v.data.clone()];
        let t = match v.dtype {
            Ct2DType::F32 => Tensor::from_raw_buffer(raw, DType::F32, &v.dims, &Device::Cpu)?,
            Ct2DType::F16 => Tensor::from_raw_buffer(raw, DType::F16, &v.dims, &Device::Cpu)?,
            Ct2DType::BF16 => Tensor::from_raw_buffer(raw, DType::BF16, &v.dims, &Device::Cpu)?,
            Ct2DType::I8 => {
                let q: Vec<f32> = raw.iter().map(|&b| b as i8 as f32).collect();
                let q = Tensor::from_vec(q, v.dims.as_slice(), &Device::Cpu)?;
                let scale =
                    self.tensor(bytes, &format!("{name}_scale"), DType::F32).with_context(|| format!("int8 variable `{name}` without a scale"))?;
                let scale = if v.dims.len() == 2 && scale.elem_count() == v.dims[0] { scale.reshape((v.dims[0], 1))? } else { scale };
                q.broadcast_div(&scale)?
            }
            other => bail!("variable `{name}` has dtype {other:?}, not a float tensor"),
        };
        Ok(t.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(vars: &[(&str, &[u32], u8, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend_from_slice(&((t.len() + 1) as u16).to_le_bytes());
            b.extend_from_slice(t.as_bytes());
            b.push(0);
        };
        b.extend_from_slice(&6u32.to_le_bytes());
        s(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(vars.len() as u32).to_le_bytes());
        for (name, dims, dt, data) in vars {
            s(&mut b, name);
            b.push(dims.len() as u8);
            for d in *dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.push(*dt);
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(data);
        }
        b.extend_from_slice(&1u32.to_le_bytes());
        s(&mut b, "alias/w");
        s(&mut b, "w");
        b
    }

    #[test]
    fn parses_and_dequantises() {
        let f: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let q: Vec<u8> = [10i8, -20, 30, 40].iter().map(|&x| x as u8).collect();
        let sc: Vec<u8> = [10.0f32, 20.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let bytes =
            build(&[("w", &[2, 2], 0, &f), ("q/weight", &[2, 2], 1, &q), ("q/weight_scale", &[2], 0, &sc), ("heads", &[], 2, &6i16.to_le_bytes())]);
        let idx = Ct2Index::parse(&bytes).unwrap();
        assert_eq!(idx.spec, "WhisperSpec");
        assert_eq!(idx.scalar_int(&bytes, "heads").unwrap(), 6);
        let w = idx.tensor(&bytes, "alias/w", DType::F32).unwrap();
        assert_eq!(w.to_vec2::<f32>().unwrap(), vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        let d = idx.tensor(&bytes, "q/weight", DType::F32).unwrap();
        assert_eq!(d.to_vec2::<f32>().unwrap(), vec![vec![1.0, -2.0], vec![1.5, 2.0]]);
    }

    #[test]
    fn corrupt_files_are_errors() {
        let f: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let bytes = build(&[("w", &[2], 0, &f)]);
        for cut in 0..bytes.len() - 1 {
            // Every prefix either parses (the alias table is optional) or fails cleanly.
            let _ = Ct2Index::parse(&bytes[..cut]);
        }
        let mut lie = bytes.clone();
        // Claim a huge dimension.
        let pos = 4 + 2 + 12 + 4 + 4 + 2 + 2 + 1;
        lie[pos..pos + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Ct2Index::parse(&lie).is_err());
        assert!(Ct2Index::parse(&[7, 0, 0, 0]).unwrap_err().to_string().contains("version"));
    }
}

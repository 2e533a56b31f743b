//! A bounds check of a GGUF header before candle reads it.
//!
//! candle 0.11's reader caps string and array lengths, but it divides by `general.alignment`
//! (0 panics) and multiplies tensor dimensions unchecked (overflow panics in checked builds and
//! wraps in release). This walk reads the same header — counts, keys, typed values, nested arrays,
//! tensor infos, with v1's 32-bit and v2+'s 64-bit lengths like candle — checks every length
//! against the bytes that remain, the alignment, and that every tensor's element count fits, so a
//! corrupt or hostile file is refused with a message before candle or our loaders see it.

use std::io::{Read, Seek, SeekFrom};

use anyhow::{bail, ensure, Context, Result};

/// Deepest array nesting accepted (real files use 1).
const MAX_ARRAY_DEPTH: usize = 4;
/// Most dimensions of a tensor (ggml has 4).
const MAX_DIMS: u32 = 8;
/// Longest metadata key accepted (real ones are under 100 bytes).
const MAX_KEY_LEN: u64 = 256;

struct Walk<'a, R> {
    r: &'a mut R,
    remaining: u64,
    /// GGUF v1 stores counts and lengths as u32, later versions as u64.
    wide: bool,
}

impl<R: Read> Walk<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        ensure!(self.remaining >= N as u64, "GGUF header truncated");
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).context("GGUF header truncated")?;
        self.remaining -= N as u64;
        Ok(b)
    }
    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        ensure!(n as u64 <= self.remaining, "GGUF header truncated");
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b).context("GGUF header truncated")?;
        self.remaining -= n as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes::<4>()?))
    }
    fn len(&mut self) -> Result<u64> {
        Ok(if self.wide { u64::from_le_bytes(self.bytes::<8>()?) } else { self.u32()? as u64 })
    }
    /// Skip `n` bytes the header says follow, refusing lengths past the end of the file.
    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        ensure!(n <= self.remaining, "GGUF {what} of {n} bytes runs past the end of the file ({} bytes left)", self.remaining);
        std::io::copy(&mut (&mut *self.r).take(n), &mut std::io::sink()).context("GGUF header truncated")?;
        self.remaining -= n;
        Ok(())
    }
    fn string(&mut self, what: &str) -> Result<()> {
        let n = self.len()?;
        self.skip(n, what)
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<()> {
        match ty {
            0 | 1 | 7 => self.skip(1, "value"),
            2 | 3 => self.skip(2, "value"),
            4..=6 => self.skip(4, "value"),
            10..=12 => self.skip(8, "value"),
            8 => self.string("string value"),
            9 => {
                ensure!(depth < MAX_ARRAY_DEPTH, "GGUF arrays nested deeper than {MAX_ARRAY_DEPTH}");
                let item = self.u32()?;
                let n = self.len()?;
                // Every item takes at least one byte: a count beyond the file is a lie.
                ensure!(n <= self.remaining, "GGUF array of {n} items runs past the end of the file");
                for _ in 0..n {
                    self.value(item, depth + 1)?;
                }
                Ok(())
            }
            other => bail!("GGUF value of unknown type {other}"),
        }
    }
}

/// Check the header of the GGUF file in `r` (left at the start again).
pub fn check_header<R: Read + Seek>(r: &mut R) -> Result<()> {
    let start = r.stream_position()?;
    let end = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(start))?;
    let mut w = Walk { r, remaining: end.saturating_sub(start), wide: true };
    ensure!(&w.bytes::<4>()? == b"GGUF", "not a GGUF file (bad magic)");
    let version = w.u32()?;
    ensure!((1..=3).contains(&version), "GGUF version {version} is not supported (1-3)");
    w.wide = version >= 2;
    let tensors = w.len()?;
    let kvs = w.len()?;
    // A key-value pair takes at least 12 bytes, a tensor info at least 16.
    ensure!(kvs <= w.remaining / 12 && tensors <= w.remaining / 16, "GGUF header counts ({kvs} keys, {tensors} tensors) exceed the file");
    for _ in 0..kvs {
        let key_len = w.len()?;
        // Real keys are short; a long one could hide `general.alignment` behind NUL padding.
        ensure!(key_len <= MAX_KEY_LEN, "GGUF metadata key of {key_len} bytes (at most {MAX_KEY_LEN})");
        let mut key = w.take(key_len as usize)?;
        // candle drops trailing NULs from strings: compare the key as it will see it.
        while key.last() == Some(&0) {
            key.pop();
        }
        let ty = w.u32()?;
        if key == b"general.alignment" && ty <= 5 {
            // candle divides by it (0 = division by zero); the spec wants a power of two.
            let v = match ty {
                0 => w.bytes::<1>()?[0] as i64,
                1 => w.bytes::<1>()?[0] as i8 as i64,
                2 => u16::from_le_bytes(w.bytes::<2>()?) as i64,
                3 => i16::from_le_bytes(w.bytes::<2>()?) as i64,
                4 => u32::from_le_bytes(w.bytes::<4>()?) as i64,
                _ => i32::from_le_bytes(w.bytes::<4>()?) as i64,
            };
            // Negative values make candle use its default alignment.
            ensure!(v < 0 || (v as u64).is_power_of_two(), "GGUF general.alignment {v} is not a power of two");
        } else {
            w.value(ty, 0)?;
        }
    }
    for _ in 0..tensors {
        w.string("tensor name")?;
        let dims = w.u32()?;
        ensure!(dims <= MAX_DIMS, "GGUF tensor with {dims} dimensions");
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let d = if w.wide { u64::from_le_bytes(w.bytes::<8>()?) } else { w.u32()? as u64 };
            elements = elements.checked_mul(d.max(1)).context("GGUF tensor shape overflows")?;
        }
        ensure!(elements <= usize::MAX as u64 / 4, "GGUF tensor of {elements} elements");
        w.skip(4 + 8, "tensor type and offset")?;
    }
    w.r.seek(SeekFrom::Start(start))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header(kvs: &[u8], kv_count: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(kv_count.to_le_bytes());
        b.extend(kvs);
        b
    }

    #[test]
    fn sane_header_passes_and_lying_lengths_fail() {
        let mut kv = vec![];
        kv.extend(4u64.to_le_bytes());
        kv.extend(b"name");
        kv.extend(8u32.to_le_bytes());
        kv.extend(5u64.to_le_bytes());
        kv.extend(b"llama");
        check_header(&mut Cursor::new(header(&kv, 1))).unwrap();

        let mut huge = vec![];
        huge.extend(4u64.to_le_bytes());
        huge.extend(b"name");
        huge.extend(8u32.to_le_bytes());
        huge.extend((1u64 << 60).to_le_bytes());
        let err = check_header(&mut Cursor::new(header(&huge, 1))).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
        assert!(check_header(&mut Cursor::new(header(&[], u64::MAX))).is_err());
        assert!(check_header(&mut Cursor::new(b"GGML".to_vec())).is_err());

        // general.alignment = 0 (candle would divide by zero): refused.
        let mut zero = vec![];
        zero.extend(17u64.to_le_bytes());
        zero.extend(b"general.alignment");
        zero.extend(4u32.to_le_bytes());
        zero.extend(0u32.to_le_bytes());
        let err = check_header(&mut Cursor::new(header(&zero, 1))).unwrap_err();
        assert!(err.to_string().contains("alignment"), "{err}");
        // The same key with NUL padding (what candle would read as `general.alignment`).
        let mut padded = vec![];
        padded.extend(19u64.to_le_bytes());
        padded.extend(b"general.alignment\0\0");
        padded.extend(4u32.to_le_bytes());
        padded.extend(0u32.to_le_bytes());
        assert!(check_header(&mut Cursor::new(header(&padded, 1))).is_err());
    }
}

//! Audio input for every service: decode (WAV, FLAC, MP3, Ogg/Vorbis through symphonia), down-mix to
//! mono, resample (rubato) to the model's rate, with limits on duration so a hostile upload cannot
//! exhaust memory. Every failure is an [`AudioError`] that maps to a 4xx, never a panic.
//!
//! WAV headers are checked by hand before decoding because decoders happily read a truncated file
//! or a header whose sizes and rates contradict each other; we refuse those with a clear message.

use std::io::Cursor;

use rubato::{FftFixedIn, Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction};
use symphonia::core::{
    audio::SampleBuffer,
    codecs::{DecoderOptions, CODEC_TYPE_NULL},
    errors::Error as SymError,
    formats::FormatOptions,
    io::{MediaSourceStream, MediaSourceStreamOptions},
    meta::MetadataOptions,
    probe::Hint,
};

/// Lowest and highest sample rates we accept from a file header.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
pub const MAX_SAMPLE_RATE: u32 = 768_000;
pub const MAX_CHANNELS: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AudioError {
    #[error("the audio file is empty")]
    Empty,
    #[error("unrecognised or unsupported audio format: {0} (supported: wav, flac, mp3, ogg/vorbis)")]
    Unsupported(String),
    #[error("the audio file is truncated: {0}")]
    Truncated(String),
    #[error("the audio header is inconsistent: {0}")]
    BadHeader(String),
    #[error("the audio data is corrupt: {0}")]
    Corrupt(String),
    #[error("the audio contains no samples")]
    NoSamples,
    #[error("the audio is longer than the limit of {max_secs:.0} s")]
    TooLong { max_secs: f64 },
    #[error("invalid sample rate {0} Hz (accepted: {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE})")]
    BadSampleRate(u32),
}

impl AudioError {
    /// 413 for over-long audio, 400 for everything else.
    pub fn http_status(&self) -> u16 {
        match self {
            AudioError::TooLong { .. } => 413,
            _ => 400,
        }
    }
}

/// Mono PCM in [-1, 1].
#[derive(Debug, Clone)]
pub struct Pcm {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Channels in the source before down-mixing.
    pub source_channels: usize,
}

impl Pcm {
    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Decode any supported container into mono f32 at its own sample rate.
pub fn decode(bytes: &[u8], max_duration_secs: f64) -> Result<Pcm, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let mut hint = Hint::new();
    let is_wav = |b: &[u8]| b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WAVE";
    if is_wav(bytes) {
        check_wav_header(bytes)?;
        hint.with_extension("wav");
    } else {
        // symphonia's probe scans past unknown leading bytes (an ID3 tag included) for a format
        // marker, and its WAV reader panics on some headers (a zero sample rate): every RIFF/WAVE
        // header it could find gets our checks first. FLAC and Ogg files, which the probe takes
        // at their first bytes, are left alone.
        if !(bytes.starts_with(b"fLaC") || bytes.starts_with(b"OggS")) {
            for at in bytes.windows(4).enumerate().filter(|(_, w)| *w == b"RIFF").map(|(i, _)| i) {
                if is_wav(&bytes[at..]) {
                    check_wav_header(&bytes[at..])?;
                }
            }
        }
    }
    // symphonia panics on some malformed streams (found by the audio_decode fuzz target: a RIFF
    // header with a zero sample rate found by the probe's scan after other bytes). A panic here
    // would abort the request mid-response; it becomes a clear error instead.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_probed(bytes, hint, max_duration_secs))).unwrap_or_else(|_| {
        DECODER_PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!("the audio decoder panicked on malformed input (caught; the request gets 400)");
        Err(AudioError::Corrupt("the decoder failed on malformed data".into()))
    })
}

static DECODER_PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many decoder panics [`decode`] has caught in this process. The catch keeps a service up,
/// but each one is a decoder bug our input checks missed: tests and the fuzz replay assert it
/// stays 0 (a caught panic is invisible to "never panics" otherwise).
pub fn decoder_panics_caught() -> u64 {
    DECODER_PANICS.load(std::sync::atomic::Ordering::Relaxed)
}

fn decode_probed(bytes: &[u8], hint: Hint, max_duration_secs: f64) -> Result<Pcm, AudioError> {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), MediaSourceStreamOptions::default());
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(|e| AudioError::Unsupported(short(&e)))?;
    let mut format = probed.format;
    let track =
        format.tracks().iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL).ok_or_else(|| AudioError::Unsupported("no audio track".into()))?;
    let track_id = track.id;
    if let Some(sr) = track.codec_params.sample_rate {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sr) {
            return Err(AudioError::BadSampleRate(sr));
        }
    }
    let mut decoder =
        symphonia::default::get_codecs().make(&track.codec_params, &DecoderOptions::default()).map_err(|e| AudioError::Unsupported(short(&e)))?;

    let mut mono: Vec<f32> = Vec::new();
    let mut sample_rate = track.codec_params.sample_rate.unwrap_or(0);
    let mut channels = track.codec_params.channels.map(|c| c.count()).unwrap_or(0);
    let mut good_packets = 0usize;
    let mut bad_packets = 0usize;
    let mut interleaved: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(SymError::DecodeError(_)) => {
                bad_packets += 1;
                if bad_packets > 64 && bad_packets > good_packets {
                    return Err(AudioError::Corrupt("too many undecodable packets".into()));
                }
                continue;
            }
            Err(e) => return Err(AudioError::Corrupt(short(&e))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => {
                bad_packets += 1;
                if bad_packets > 64 && bad_packets > good_packets {
                    return Err(AudioError::Corrupt("too many undecodable packets".into()));
                }
                continue;
            }
            Err(e) => return Err(AudioError::Corrupt(short(&e))),
        };
        good_packets += 1;
        let spec = *decoded.spec();
        if spec.rate == 0 || !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&spec.rate) {
            return Err(AudioError::BadSampleRate(spec.rate));
        }
        let ch = spec.channels.count();
        if ch == 0 || ch > MAX_CHANNELS {
            return Err(AudioError::BadHeader(format!("{ch} channels")));
        }
        if sample_rate == 0 {
            sample_rate = spec.rate;
        }
        if spec.rate != sample_rate || (channels != 0 && ch != channels) {
            return Err(AudioError::Corrupt("sample rate or channel count changes mid-stream".into()));
        }
        channels = ch;
        let frames = decoded.frames();
        if frames == 0 {
            continue;
        }
        let buf = match &mut interleaved {
            Some(b) if b.capacity() >= decoded.capacity() * ch => b,
            _ => interleaved.insert(SampleBuffer::<f32>::new(decoded.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        let samples = buf.samples();
        mono.reserve(frames);
        for frame in samples.chunks_exact(ch).take(frames) {
            let sum: f32 = frame.iter().sum();
            mono.push(sanitize(sum / ch as f32));
        }
        if mono.len() as f64 > max_duration_secs * sample_rate as f64 {
            return Err(AudioError::TooLong { max_secs: max_duration_secs });
        }
    }
    if good_packets == 0 && bad_packets > 0 {
        return Err(AudioError::Corrupt("no packet could be decoded".into()));
    }
    if bad_packets > good_packets {
        return Err(AudioError::Corrupt(format!("{bad_packets} of {} packets could not be decoded", bad_packets + good_packets)));
    }
    if mono.is_empty() {
        return Err(AudioError::NoSamples);
    }
    Ok(Pcm { samples: mono, sample_rate, source_channels: channels })
}

/// Decode and resample to `target_rate` (16 kHz for Whisper).
pub fn decode_to_rate(bytes: &[u8], target_rate: u32, max_duration_secs: f64) -> Result<Pcm, AudioError> {
    let pcm = decode(bytes, max_duration_secs)?;
    let samples = resample(&pcm.samples, pcm.sample_rate, target_rate)?;
    Ok(Pcm { samples, sample_rate: target_rate, source_channels: pcm.source_channels })
}

fn sanitize(x: f32) -> f32 {
    if x.is_finite() {
        x.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

fn short(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    if s.len() > 200 {
        format!("{}...", &s[..200])
    } else {
        s
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Walk the RIFF chunks of a WAV file and refuse truncation and self-contradicting headers.
///
/// Sizes of 0 or 0xFFFFFFFF in the RIFF or data chunk mean "unknown length" (written by tools that
/// stream WAV to a pipe) and are accepted: the data then runs to the end of the file.
pub fn check_wav_header(b: &[u8]) -> Result<(), AudioError> {
    let len = b.len();
    if len < 12 {
        return Err(AudioError::Truncated("shorter than a RIFF header".into()));
    }
    let riff_size = le32(b, 4) as usize;
    let streamed = |n: usize| n == 0 || n == u32::MAX as usize;
    let mut pos = 12usize;
    let mut fmt: Option<(u16, u16, u32, u32, u16, u16)> = None;
    let mut saw_data = false;
    while pos + 8 <= len {
        let id = &b[pos..pos + 4];
        let size = le32(b, pos + 4) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            if size < 16 || body + 16 > len {
                return Err(AudioError::Truncated("fmt chunk is cut short".into()));
            }
            fmt = Some((
                le16(b, body),      // format tag
                le16(b, body + 2),  // channels
                le32(b, body + 4),  // sample rate
                le32(b, body + 8),  // byte rate
                le16(b, body + 12), // block align
                le16(b, body + 14), // bits per sample
            ));
        } else if id == b"data" {
            saw_data = true;
            let Some((tag, channels, rate, byte_rate, block_align, bits)) = fmt else {
                return Err(AudioError::BadHeader("data chunk before the fmt chunk".into()));
            };
            validate_fmt(tag, channels, rate, byte_rate, block_align, bits)?;
            if !streamed(size) {
                let available = len - body;
                if size > available {
                    return Err(AudioError::Truncated(format!("the header announces {size} bytes of samples but only {available} follow")));
                }
                if block_align > 0 && !size.is_multiple_of(block_align as usize) && size + 1 < available {
                    return Err(AudioError::BadHeader(format!("data size {size} is not a whole number of {block_align}-byte frames")));
                }
            }
            break;
        }
        // Chunks are word aligned.
        let next = body.checked_add(size).and_then(|n| n.checked_add(size & 1));
        match next {
            Some(n) if n <= len => pos = n,
            _ => return Err(AudioError::Truncated(format!("chunk `{}` runs past the end of the file", String::from_utf8_lossy(id)))),
        }
    }
    if !saw_data {
        return Err(if fmt.is_none() { AudioError::Truncated("no fmt chunk".into()) } else { AudioError::Truncated("no data chunk".into()) });
    }
    if !streamed(riff_size) && riff_size + 8 > len + 1 && riff_size + 8 - len > 8 {
        // A RIFF size that promises more than the file holds, beyond padding slack.
        return Err(AudioError::Truncated(format!("the RIFF header announces {} bytes but the file has {len}", riff_size + 8)));
    }
    Ok(())
}

fn validate_fmt(tag: u16, channels: u16, rate: u32, byte_rate: u32, block_align: u16, bits: u16) -> Result<(), AudioError> {
    const PCM: u16 = 1;
    const FLOAT: u16 = 3;
    const ALAW: u16 = 6;
    const MULAW: u16 = 7;
    const EXTENSIBLE: u16 = 0xFFFE;
    if channels == 0 || channels as usize > MAX_CHANNELS {
        return Err(AudioError::BadHeader(format!("{channels} channels")));
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        return Err(AudioError::BadSampleRate(rate));
    }
    let linear = matches!(tag, PCM | FLOAT | EXTENSIBLE | ALAW | MULAW);
    if !linear {
        // ADPCM and friends have their own block layout; leave those to the decoder.
        return Ok(());
    }
    if bits == 0 || bits > 64 || !bits.is_multiple_of(8) {
        return Err(AudioError::BadHeader(format!("{bits} bits per sample")));
    }
    let expected_align = channels as u32 * bits as u32 / 8;
    if block_align as u32 != expected_align {
        return Err(AudioError::BadHeader(format!("block align {block_align} does not match {channels} channels x {bits} bits")));
    }
    if byte_rate != rate * expected_align {
        return Err(AudioError::BadHeader(format!("byte rate {byte_rate} does not match {rate} Hz x {expected_align}-byte frames")));
    }
    Ok(())
}

/// Resample mono audio. Integer-friendly ratios use the FFT resampler (fast, exact band limit);
/// awkward ratios (e.g. 44101 Hz) use the sinc resampler so the FFT size stays small.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let mut r = StreamResampler::new(from, to, 1024)?;
    let mut out = r.push(samples)?;
    out.extend(r.finish()?);
    Ok(out)
}

enum ResamplerKind {
    Same,
    Fft(FftFixedIn<f32>),
    Sinc(SincFixedIn<f32>),
}

/// A resampler for audio that arrives in pieces (a reply streamed chunk by chunk): the filter's
/// state carries across [`StreamResampler::push`] calls, so the output is the same as
/// resampling the concatenation at once ([`resample`] is this with one push), with no
/// discontinuity at the joins. Output lags input by at most `block` samples until
/// [`StreamResampler::finish`].
pub struct StreamResampler {
    kind: ResamplerKind,
    pending: Vec<f32>,
    /// Output samples still to drop: the filter's delay.
    skip: usize,
    taken: u64,
    given: u64,
    from: u32,
    to: u32,
}

macro_rules! with_resampler {
    ($kind:expr, $r:ident => $body:expr, $same:expr) => {
        match $kind {
            ResamplerKind::Fft($r) => $body,
            ResamplerKind::Sinc($r) => $body,
            ResamplerKind::Same => $same,
        }
    };
}

impl StreamResampler {
    /// `block`: input samples per filter step (smaller: less lag, more overhead).
    pub fn new(from: u32, to: u32, block: usize) -> Result<Self, AudioError> {
        let err = |e: rubato::ResamplerConstructionError| AudioError::Corrupt(format!("resampler: {e}"));
        let kind = if from == to {
            ResamplerKind::Same
        } else {
            if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&from) {
                return Err(AudioError::BadSampleRate(from));
            }
            if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&to) {
                return Err(AudioError::BadSampleRate(to));
            }
            if from as u64 / gcd(from as u64, to as u64) <= 1000 {
                ResamplerKind::Fft(FftFixedIn::<f32>::new(from as usize, to as usize, block, 2, 1).map_err(err)?)
            } else {
                let params = SincInterpolationParameters {
                    sinc_len: 128,
                    f_cutoff: 0.95,
                    interpolation: SincInterpolationType::Linear,
                    oversampling_factor: 128,
                    window: WindowFunction::BlackmanHarris2,
                };
                ResamplerKind::Sinc(SincFixedIn::<f32>::new(to as f64 / from as f64, 1.0, params, block, 1).map_err(err)?)
            }
        };
        let skip = with_resampler!(&kind, r => r.output_delay(), 0);
        Ok(Self { kind, pending: Vec::new(), skip, taken: 0, given: 0, from, to })
    }

    /// Take more input; returns the output it completes.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, AudioError> {
        self.taken += samples.len() as u64;
        if matches!(self.kind, ResamplerKind::Same) {
            self.given += samples.len() as u64;
            return Ok(samples.to_vec());
        }
        self.pending.extend_from_slice(samples);
        let mut out = Vec::new();
        loop {
            let need = with_resampler!(&self.kind, r => r.input_frames_next(), 0);
            if self.pending.len() < need || need == 0 {
                break;
            }
            let res = with_resampler!(&mut self.kind, r => r.process(&[&self.pending[..need]], None), unreachable!()).map_err(step_err)?;
            out.extend_from_slice(&res[0]);
            self.pending.drain(..need);
        }
        Ok(self.emit(out, u64::MAX))
    }

    /// The input has ended: the rest of the output, so that the total is exactly the input's
    /// length at the new rate (rounded up).
    pub fn finish(&mut self) -> Result<Vec<f32>, AudioError> {
        let expected = (self.taken * self.to as u64).div_ceil(self.from as u64);
        if matches!(self.kind, ResamplerKind::Same) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut self.pending);
            let res = with_resampler!(&mut self.kind, r => r.process_partial(Some(&[&block[..]]), None), unreachable!()).map_err(step_err)?;
            out.extend_from_slice(&res[0]);
        }
        // Flush what the filter still holds.
        loop {
            let have = self.given + (out.len().saturating_sub(self.skip)) as u64;
            if have >= expected {
                break;
            }
            let res = with_resampler!(&mut self.kind, r => r.process_partial::<&[f32]>(None, None), unreachable!()).map_err(step_err)?;
            if res[0].is_empty() {
                break;
            }
            out.extend_from_slice(&res[0]);
        }
        Ok(self.emit(out, expected))
    }

    /// Drop what is left of the filter delay, cut at `limit` samples in total, sanitize.
    fn emit(&mut self, mut out: Vec<f32>, limit: u64) -> Vec<f32> {
        let drop = self.skip.min(out.len());
        out.drain(..drop);
        self.skip -= drop;
        let room = limit.saturating_sub(self.given);
        out.truncate(room.min(out.len() as u64) as usize);
        self.given += out.len() as u64;
        for x in out.iter_mut() {
            *x = sanitize(*x);
        }
        out
    }
}

fn step_err(e: rubato::ResampleError) -> AudioError {
    AudioError::Corrupt(format!("resampler: {e}"))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One signed 16-bit sample to f32 in [-1, 1).
pub fn s16_to_f32(s: i16) -> f32 {
    s as f32 / 32768.0
}

/// One f32 sample to signed 16-bit: clamped to [-1, 1], rounded.
pub fn f32_to_s16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

/// Little-endian signed 16-bit PCM bytes to f32 samples (an odd trailing byte is ignored).
pub fn s16le_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|c| s16_to_f32(i16::from_le_bytes([c[0], c[1]]))).collect()
}

/// f32 samples to little-endian signed 16-bit PCM bytes.
pub fn f32_to_s16le(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|&s| f32_to_s16(s).to_le_bytes()).collect()
}

/// Where sound starts in `samples`: the first sample of the first `window`-sample block whose RMS
/// reaches `threshold` (None: all quieter). Used to skip the silence a TTS voice starts with,
/// which the listener would only wait through.
pub fn sound_onset(samples: &[f32], window: usize, threshold: f32) -> Option<usize> {
    let window = window.max(1);
    samples.chunks(window).position(|w| (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt() >= threshold).map(|i| i * window)
}

/// Little-endian f32 PCM bytes to samples; non-finite values become 0.
pub fn f32le_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| sanitize(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
}

/// A minimal WAV writer (PCM 16-bit or float 32-bit), used by tests and tools.
pub fn encode_wav(samples: &[f32], sample_rate: u32, channels: u16, float: bool) -> Vec<u8> {
    let bits: u16 = if float { 32 } else { 16 };
    let block_align = channels * bits / 8;
    let data_len = samples.len() * (bits as usize / 8);
    let mut out = Vec::with_capacity(44 + data_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((36 + data_len) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&(if float { 3u16 } else { 1u16 }).to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * block_align as u32).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    for &s in samples {
        if float {
            out.extend_from_slice(&s.to_le_bytes());
        } else {
            out.extend_from_slice(&f32_to_s16(s).to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, secs: f32, freq: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize).map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin()).collect()
    }

    #[test]
    fn s16_conversions_clamp_and_round() {
        assert_eq!(f32_to_s16le(&[0.0, 1.0, -1.0, 2.0]), vec![0, 0, 0xff, 0x7f, 0x01, 0x80, 0xff, 0x7f]);
        assert_eq!(f32_to_s16(f32::NAN), 0);
        assert_eq!(s16le_to_f32(&[0x00, 0x80, 0xff, 0x7f, 0x01]), vec![-1.0, 32767.0 / 32768.0]);
        for v in [-32768i16, -1, 0, 1, 12345, 32767] {
            assert!((f32_to_s16(s16_to_f32(v)) - v).abs() <= 1, "{v}");
        }
    }

    /// A reply arrives in chunks of any size: resampled chunk by chunk through one
    /// StreamResampler it must equal the whole resampled at once (same filter state, no
    /// discontinuity at the joins); fresh resampling per chunk (what the agent did) does not.
    #[test]
    fn a_tone_resampled_in_chunks_equals_it_resampled_whole() {
        for (from, to) in [(24_000, 48_000), (22_050, 48_000), (44_101, 16_000)] {
            let x = tone(from, 0.75, 330.0);
            let mut whole = StreamResampler::new(from, to, 256).unwrap();
            let mut want = whole.push(&x).unwrap();
            want.extend(whole.finish().unwrap());
            assert_eq!(want.len(), (x.len() as u64 * to as u64).div_ceil(from as u64) as usize);
            let mut r = StreamResampler::new(from, to, 256).unwrap();
            let (mut got, mut at, mut size) = (Vec::new(), 0, 7);
            while at < x.len() {
                let end = (at + size).min(x.len());
                got.extend(r.push(&x[at..end]).unwrap());
                at = end;
                size = size * 3 % 1500 + 1;
            }
            got.extend(r.finish().unwrap());
            assert_eq!(got.len(), want.len(), "{from} -> {to}");
            let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst < 1e-5, "{from} -> {to}: chunked differs by {worst}");
            // The largest sample-to-sample step is the tone's own (no click at a join).
            let max_step = |v: &[f32]| v.windows(2).skip(100).take(v.len() - 300).fold(0f32, |m, w| m.max((w[1] - w[0]).abs()));
            let tone_step = 0.5 * 2.0 * std::f32::consts::PI * 330.0 / to as f32;
            assert!(max_step(&got) < tone_step * 1.05, "{from} -> {to}: step {} vs the tone's {tone_step}", max_step(&got));
        }
        // Per-chunk resampling, for contrast: each chunk's edges are filtered against silence.
        let x = tone(24_000, 0.5, 330.0);
        let per_chunk: Vec<f32> = x.chunks(600).flat_map(|c| resample(c, 24_000, 48_000).unwrap()).collect();
        let step = per_chunk.windows(2).skip(100).fold(0f32, |m, w| m.max((w[1] - w[0]).abs()));
        assert!(step > 0.5 * 2.0 * std::f32::consts::PI * 330.0 / 48_000.0 * 1.5, "per-chunk resampling shows no step ({step})");
    }

    #[test]
    fn sound_onset_finds_the_first_loud_window() {
        let mut s = vec![0.0005f32; 1000];
        s.extend(tone(16_000, 0.1, 440.0));
        assert_eq!(sound_onset(&s, 100, 0.003), Some(1000));
        assert_eq!(sound_onset(&s[..1000], 100, 0.003), None);
        assert_eq!(sound_onset(&[], 100, 0.003), None);
    }

    #[test]
    fn wav_round_trip_and_resample() {
        let s = tone(48_000, 1.0, 440.0);
        let wav = encode_wav(&s, 48_000, 1, false);
        let pcm = decode_to_rate(&wav, 16_000, 60.0).unwrap();
        assert_eq!(pcm.samples.len(), 16_000);
        // The tone survives resampling: compare with a tone generated at 16 kHz (away from the edges).
        let want = tone(16_000, 1.0, 440.0);
        let err: f32 = pcm.samples[1000..15000].iter().zip(&want[1000..15000]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        // A fraction of a sample of filter delay remains; 0.05 on a 0.5 amplitude tone still
        // fails for a wrong rate, a wrong length or a shift of a whole sample (0.07).
        assert!(err < 0.05, "max error {err}");
    }

    #[test]
    fn odd_rate_uses_sinc_path() {
        let s = tone(44_101, 0.5, 300.0);
        let out = resample(&s, 44_101, 16_000).unwrap();
        assert_eq!(out.len(), (s.len() as u64 * 16_000).div_ceil(44_101) as usize);
    }

    #[test]
    fn refuses_bad_wavs() {
        assert_eq!(decode(&[], 10.0).unwrap_err(), AudioError::Empty);
        let wav = encode_wav(&tone(16_000, 0.5, 200.0), 16_000, 1, false);
        // Truncated: cut in the middle of the samples.
        assert!(matches!(decode(&wav[..wav.len() / 2], 10.0), Err(AudioError::Truncated(_))));
        // Lying header: claims 48 kHz but the byte rate says 16 kHz.
        let mut lie = wav.clone();
        lie[24..28].copy_from_slice(&48_000u32.to_le_bytes());
        assert!(matches!(decode(&lie, 10.0), Err(AudioError::BadHeader(_))));
        // Zero samples.
        let empty = encode_wav(&[], 16_000, 1, false);
        assert_eq!(decode(&empty, 10.0).unwrap_err(), AudioError::NoSamples);
        // Too long.
        assert!(matches!(decode(&wav, 0.1), Err(AudioError::TooLong { .. })));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Any byte string, and any mutation of a valid WAV, decodes or fails cleanly: never a panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let _ = decode(&bytes, 5.0);
            proptest::prop_assert_eq!(decoder_panics_caught(), 0, "the decoder panicked (caught inside decode)");
        }

        #[test]
        fn mutated_wav_never_panics(flips in proptest::collection::vec((0usize..2000, proptest::prelude::any::<u8>()), 1..8), cut in 0usize..2000) {
            let mut wav = encode_wav(&tone(8_000, 0.1, 300.0), 8_000, 2, false);
            for (at, v) in flips { let n = wav.len(); wav[at % n] = v; }
            wav.truncate(cut.max(1).min(wav.len()));
            let _ = decode(&wav, 5.0);
            proptest::prop_assert_eq!(decoder_panics_caught(), 0, "the decoder panicked (caught inside decode)");
        }
    }
}

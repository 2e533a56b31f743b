//! Whisper's log-mel front end, computed as `whisper.audio.log_mel_spectrogram` does: a periodic
//! Hann window of 400 samples, hop 160, centred frames with reflect padding, the last frame
//! dropped, power spectrum, Slaney mel filters (librosa's defaults), log10 clamped at 1e-10,
//! dynamic range limited to 8 (log10 units) below the maximum, then (x + 4) / 4.

use std::sync::Arc;

use realfft::RealFftPlanner;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP_LENGTH: usize = 160;
pub const CHUNK_SECONDS: usize = 30;
pub const N_SAMPLES: usize = CHUNK_SECONDS * SAMPLE_RATE;
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;
const N_FREQS: usize = N_FFT / 2 + 1;

/// Mel filter bank as sparse rows: for each mel bin, the first FFT bin and the weights from there.
#[derive(Debug, Clone)]
pub struct MelFilters {
    pub n_mels: usize,
    pub rows: Vec<(usize, Vec<f32>)>,
}

fn hz_to_mel(hz: f64) -> f64 {
    // Slaney: linear below 1 kHz, logarithmic above.
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

impl MelFilters {
    /// librosa.filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney").
    pub fn new(n_mels: usize) -> Self {
        let sr = SAMPLE_RATE as f64;
        let fftfreqs: Vec<f64> = (0..N_FREQS).map(|i| i as f64 * sr / N_FFT as f64).collect();
        let (mmin, mmax) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
        let mel_f: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(mmin + (mmax - mmin) * i as f64 / (n_mels + 1) as f64)).collect();
        let mut rows = Vec::with_capacity(n_mels);
        for m in 0..n_mels {
            let (lo, mid, hi) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
            let enorm = 2.0 / (hi - lo);
            let w: Vec<f32> = fftfreqs
                .iter()
                .map(|&f| {
                    let lower = (f - lo) / (mid - lo);
                    let upper = (hi - f) / (hi - mid);
                    (lower.min(upper).max(0.0) * enorm) as f32
                })
                .collect();
            let first = w.iter().position(|&x| x > 0.0).unwrap_or(0);
            let last = w.iter().rposition(|&x| x > 0.0).map(|i| i + 1).unwrap_or(first);
            rows.push((first, w[first..last].to_vec()));
        }
        Self { n_mels, rows }
    }
}

/// Computes log-mel spectrograms; holds the FFT plan and window so repeated calls are cheap.
#[derive(Clone)]
pub struct MelFrontEnd {
    filters: MelFilters,
    window: Vec<f32>,
    fft: Arc<dyn realfft::RealToComplex<f32>>,
}

impl std::fmt::Debug for MelFrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MelFrontEnd(n_mels={})", self.filters.n_mels)
    }
}

impl MelFrontEnd {
    pub fn new(n_mels: usize) -> Self {
        let window = (0..N_FFT).map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()) as f32).collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Self { filters: MelFilters::new(n_mels), window, fft }
    }

    pub fn n_mels(&self) -> usize {
        self.filters.n_mels
    }

    /// Log-mel of `samples` (16 kHz mono) followed by `pad_samples` zeros, as a row-major
    /// `n_mels x n_frames` matrix. Returns (data, n_frames).
    pub fn log_mel(&self, samples: &[f32], pad_samples: usize) -> (Vec<f32>, usize) {
        let n = samples.len() + pad_samples;
        let at = |i: usize| if i < samples.len() { samples[i] } else { 0.0 };
        // Frames are centred: sample index of frame t's first tap is t*hop - n_fft/2, reflected.
        let half = (N_FFT / 2) as isize;
        let reflect = |i: isize| -> f32 {
            let n = n as isize;
            if n == 1 {
                return at(0);
            }
            let mut j = i;
            if j < 0 {
                j = -j;
            }
            if j >= n {
                j = 2 * (n - 1) - j;
            }
            at(j.clamp(0, n - 1) as usize)
        };
        let n_frames = n / HOP_LENGTH; // 1 + n/hop frames, minus the dropped last one
        let n_mels = self.filters.n_mels;
        let mut mel = vec![0f32; n_mels * n_frames];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; N_FREQS];
        for t in 0..n_frames {
            let start = (t * HOP_LENGTH) as isize - half;
            let inside = start >= 0 && (start as usize + N_FFT) <= samples.len();
            if inside {
                let s = start as usize;
                for (k, x) in input.iter_mut().enumerate() {
                    *x = samples[s + k] * self.window[k];
                }
            } else {
                for (k, x) in input.iter_mut().enumerate() {
                    *x = reflect(start + k as isize) * self.window[k];
                }
            }
            self.fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch).expect("FFT buffers have the planned sizes");
            for (p, c) in power.iter_mut().zip(spectrum.iter()) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (m, (first, w)) in self.filters.rows.iter().enumerate() {
                let s: f32 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
                mel[m * n_frames + t] = s;
            }
        }
        let mut max = f32::NEG_INFINITY;
        for v in mel.iter_mut() {
            *v = v.max(1e-10).log10();
            max = max.max(*v);
        }
        let floor = max - 8.0;
        for v in mel.iter_mut() {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        (mel, n_frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_openai_whisper_assets() {
        // Reference: openai-whisper's mel_filters.npz (mel_80), stored as non-zero spans.
        let text = include_str!("../tests/data/mel_filters_80.json");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let ours = MelFilters::new(80);
        let mut max_err = 0f32;
        for (m, row) in v["rows"].as_array().unwrap().iter().enumerate() {
            let start = row["start"].as_u64().unwrap() as usize;
            let values: Vec<f32> = row["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            let (ofirst, ow) = &ours.rows[m];
            for (k, &want) in values.iter().enumerate() {
                let idx = start + k;
                let got = if idx >= *ofirst && idx < ofirst + ow.len() { ow[idx - ofirst] } else { 0.0 };
                max_err = max_err.max((got - want).abs());
            }
        }
        assert!(max_err < 1e-6, "max abs error {max_err}");
    }

    #[test]
    fn silence_and_tone_shapes() {
        let fe = MelFrontEnd::new(80);
        let tone: Vec<f32> = (0..16000).map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin()).collect();
        let (mel, frames) = fe.log_mel(&tone, N_SAMPLES);
        assert_eq!(frames, (16000 + N_SAMPLES) / HOP_LENGTH);
        // The 1 kHz tone lights up a mel bin near 1 kHz more than the lowest bin.
        let col = 50;
        let energy: Vec<f32> = (0..80).map(|m| mel[m * frames + col]).collect();
        let peak = energy.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert!((20..40).contains(&peak), "peak mel bin {peak}");
        assert!(mel.iter().all(|v| v.is_finite()));
    }
}

//! Kokoro v1.0: ALBERT phoneme encoder -> prosody predictor (durations, F0, energy) -> text
//! encoder aligned by the predicted durations -> iSTFTNet decoder with a harmonic source.
//! Module and parameter names follow the PyTorch reference (`kokoro` 0.9.4) so both weight
//! sources load into the same structs.

use anyhow::{bail, Result};
use candle_core::{Device, IndexOp, Tensor, D};

use crate::fused::Act;
use crate::ops::{layer_norm, layer_norm_plain, leaky_relu, AdaIn, BiLstm, Conv1d, ConvTranspose1d, DepthwiseUp2, Linear};
use crate::weights::Weights;

pub const SAMPLE_RATE: u32 = 24_000;
/// Most phoneme tokens per forward pass, padding tokens included (ALBERT's positions).
pub const CONTEXT_LENGTH: usize = 512;
const STYLE: usize = 128;
const HIDDEN: usize = 512;
/// Audio samples per predicted duration frame: decoder x2, generator x10 x6, iSTFT hop 5.
pub const SAMPLES_PER_FRAME: usize = 600;
const N_FFT: usize = 20;
const HOP: usize = 5;

// ---------------------------------------------------------------- ALBERT

#[derive(Debug, Clone)]
struct Albert {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_ln: (Tensor, Tensor),
    mapping_in: Linear,
    q: Linear,
    k: Linear,
    v: Linear,
    dense: Linear,
    attn_ln: (Tensor, Tensor),
    ffn: Linear,
    ffn_out: Linear,
    full_ln: (Tensor, Tensor),
}

const ALBERT_LAYERS: usize = 12;
const ALBERT_HEADS: usize = 12;
const ALBERT_HIDDEN: usize = 768;

impl Albert {
    fn load(ws: &Weights) -> Result<Self> {
        let l = "bert.encoder.albert_layer_groups.0.albert_layers.0";
        let ln = |name: &str, n: usize| -> Result<(Tensor, Tensor)> {
            Ok((ws.get(&format!("{name}.weight"), &[n])?, ws.get(&format!("{name}.bias"), &[n])?))
        };
        Ok(Self {
            word: ws.get("bert.embeddings.word_embeddings.weight", &[178, 128])?,
            position: ws.get("bert.embeddings.position_embeddings.weight", &[CONTEXT_LENGTH, 128])?,
            token_type: ws.get("bert.embeddings.token_type_embeddings.weight", &[2, 128])?,
            emb_ln: ln("bert.embeddings.LayerNorm", 128)?,
            mapping_in: Linear::load(ws, "bert.encoder.embedding_hidden_mapping_in", ALBERT_HIDDEN, 128)?,
            q: Linear::load(ws, &format!("{l}.attention.query"), ALBERT_HIDDEN, ALBERT_HIDDEN)?,
            k: Linear::load(ws, &format!("{l}.attention.key"), ALBERT_HIDDEN, ALBERT_HIDDEN)?,
            v: Linear::load(ws, &format!("{l}.attention.value"), ALBERT_HIDDEN, ALBERT_HIDDEN)?,
            dense: Linear::load(ws, &format!("{l}.attention.dense"), ALBERT_HIDDEN, ALBERT_HIDDEN)?,
            attn_ln: ln(&format!("{l}.attention.LayerNorm"), ALBERT_HIDDEN)?,
            ffn: Linear::load(ws, &format!("{l}.ffn"), 2048, ALBERT_HIDDEN)?,
            ffn_out: Linear::load(ws, &format!("{l}.ffn_output"), ALBERT_HIDDEN, 2048)?,
            full_ln: ln(&format!("{l}.full_layer_layer_norm"), ALBERT_HIDDEN)?,
        })
    }

    /// ids (t) -> (t, 768). One sequence, no padding, so no attention mask.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let t = ids.dim(0)?;
        let emb = (self.word.index_select(ids, 0)? + self.position.narrow(0, 0, t)?)?.broadcast_add(&self.token_type.i(0)?)?;
        let mut x = self.mapping_in.forward(&layer_norm(&emb, &self.emb_ln.0, &self.emb_ln.1, 1e-12)?)?;
        let dh = ALBERT_HIDDEN / ALBERT_HEADS;
        let scale = 1.0 / (dh as f64).sqrt();
        let heads = |y: Tensor| -> Result<Tensor> { Ok(y.reshape((t, ALBERT_HEADS, dh))?.transpose(0, 1)?.contiguous()?) };
        for _ in 0..ALBERT_LAYERS {
            let q = heads(self.q.forward(&x)?)?;
            let k = heads(self.k.forward(&x)?)?;
            let v = heads(self.v.forward(&x)?)?;
            let att = candle_nn::ops::softmax_last_dim(&(q.matmul(&k.t()?)? * scale)?)?;
            let ctx = att.matmul(&v)?.transpose(0, 1)?.reshape((t, ALBERT_HIDDEN))?;
            x = layer_norm(&(self.dense.forward(&ctx)? + &x)?, &self.attn_ln.0, &self.attn_ln.1, 1e-12)?;
            // ALBERT's "gelu_new": the tanh approximation.
            let h = self.ffn_out.forward(&self.ffn.forward(&x)?.gelu()?)?;
            x = layer_norm(&(h + &x)?, &self.full_ln.0, &self.full_ln.1, 1e-12)?;
        }
        Ok(x)
    }
}

// ---------------------------------------------------------------- text encoder

#[derive(Debug, Clone)]
struct TextEncoder {
    embedding: Tensor,
    cnn: Vec<(Conv1d, Tensor, Tensor)>,
    lstm: BiLstm,
}

impl TextEncoder {
    fn load(ws: &Weights) -> Result<Self> {
        let mut cnn = Vec::new();
        for i in 0..3 {
            let p = format!("text_encoder.cnn.{i}");
            cnn.push((
                Conv1d::load(ws, &format!("{p}.0"), HIDDEN, HIDDEN, 5, 1, 2, 1, true)?,
                ws.get(&format!("{p}.1.gamma"), &[HIDDEN])?,
                ws.get(&format!("{p}.1.beta"), &[HIDDEN])?,
            ));
        }
        Ok(Self {
            embedding: ws.get("text_encoder.embedding.weight", &[178, HIDDEN])?,
            cnn,
            lstm: BiLstm::load(ws, "text_encoder.lstm", HIDDEN, HIDDEN / 2)?,
        })
    }

    /// ids (t) -> (1, 512, t)
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut x = self.embedding.index_select(ids, 0)?.t()?.unsqueeze(0)?; // (1, 512, t)
        for (conv, g, b) in &self.cnn {
            let y = conv.forward(&x)?;
            let y = layer_norm(&y.transpose(1, 2)?, g, b, 1e-5)?.transpose(1, 2)?;
            x = leaky_relu(&y, 0.2)?;
        }
        let y = self.lstm.forward(&x.squeeze(0)?.t()?.contiguous()?)?; // (t, 512)
        Ok(y.t()?.unsqueeze(0)?)
    }
}

// ---------------------------------------------------------------- residual blocks

/// `AdainResBlk1d` (prosody predictor and decoder).
#[derive(Debug, Clone)]
struct AdainResBlk {
    norm1: AdaIn,
    norm2: AdaIn,
    conv1: Conv1d,
    conv2: Conv1d,
    conv1x1: Option<Conv1d>,
    pool: Option<DepthwiseUp2>,
}

impl AdainResBlk {
    fn quantize(&mut self) -> Result<()> {
        self.conv1.quantize()?;
        self.conv2.quantize()?;
        if let Some(c) = &mut self.conv1x1 {
            c.quantize()?;
        }
        Ok(())
    }

    fn load(ws: &Weights, name: &str, dim_in: usize, dim_out: usize, upsample: bool) -> Result<Self> {
        Ok(Self {
            norm1: AdaIn::load(ws, &format!("{name}.norm1"), STYLE, dim_in)?,
            norm2: AdaIn::load(ws, &format!("{name}.norm2"), STYLE, dim_out)?,
            conv1: Conv1d::load(ws, &format!("{name}.conv1"), dim_in, dim_out, 3, 1, 1, 1, true)?,
            conv2: Conv1d::load(ws, &format!("{name}.conv2"), dim_out, dim_out, 3, 1, 1, 1, true)?,
            conv1x1: if dim_in != dim_out { Some(Conv1d::load(ws, &format!("{name}.conv1x1"), dim_in, dim_out, 1, 1, 0, 1, false)?) } else { None },
            pool: if upsample { Some(DepthwiseUp2::load(ws, &format!("{name}.pool"), dim_in)?) } else { None },
        })
    }

    fn forward(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        let mut r = self.norm1.forward_act(x, s, Act::LeakyRelu(0.2))?;
        if let Some(pool) = &self.pool {
            r = pool.forward(&r)?;
        }
        let r = self.conv1.forward(&r)?;
        let r = self.conv2.forward(&self.norm2.forward_act(&r, s, Act::LeakyRelu(0.2))?)?;
        let mut sc = x.clone();
        if self.pool.is_some() {
            let t = sc.dim(2)?;
            sc = sc.upsample_nearest1d(2 * t)?;
        }
        if let Some(c) = &self.conv1x1 {
            sc = c.forward(&sc)?;
        }
        Ok(((r + sc)? * std::f64::consts::FRAC_1_SQRT_2)?)
    }
}

/// `AdaINResBlock1` (generator): three dilated conv pairs with Snake activations.
#[derive(Debug, Clone)]
struct AdaInResBlock1 {
    layers: Vec<SnakeLayer>,
}

/// One dilated pair of `AdaINResBlock1`: (AdaIN, Snake alpha, conv) twice. Alphas stay on the
/// host for the fused CPU kernel.
#[derive(Debug, Clone)]
struct SnakeLayer {
    norm1: AdaIn,
    alpha1: Vec<f32>,
    conv1: Conv1d,
    norm2: AdaIn,
    alpha2: Vec<f32>,
    conv2: Conv1d,
}

impl AdaInResBlock1 {
    fn quantize(&mut self) -> Result<()> {
        for l in &mut self.layers {
            l.conv1.quantize()?;
            l.conv2.quantize()?;
        }
        Ok(())
    }

    fn load(ws: &Weights, name: &str, c: usize, k: usize) -> Result<Self> {
        let mut layers = Vec::new();
        for (j, d) in [1usize, 3, 5].into_iter().enumerate() {
            layers.push(SnakeLayer {
                norm1: AdaIn::load(ws, &format!("{name}.adain1.{j}"), STYLE, c)?,
                alpha1: ws.get(&format!("{name}.alpha1.{j}"), &[1, c, 1])?.flatten_all()?.to_vec1::<f32>()?,
                conv1: Conv1d::load(ws, &format!("{name}.convs1.{j}"), c, c, k, 1, d * (k - 1) / 2, d, true)?,
                norm2: AdaIn::load(ws, &format!("{name}.adain2.{j}"), STYLE, c)?,
                alpha2: ws.get(&format!("{name}.alpha2.{j}"), &[1, c, 1])?.flatten_all()?.to_vec1::<f32>()?,
                conv2: Conv1d::load(ws, &format!("{name}.convs2.{j}"), c, c, k, 1, (k - 1) / 2, 1, true)?,
            });
        }
        Ok(Self { layers })
    }

    fn forward(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for l in &self.layers {
            let xt = l.conv1.forward(&l.norm1.forward_act(&x, s, Act::Snake(&l.alpha1))?)?;
            let xt = l.conv2.forward(&l.norm2.forward_act(&xt, s, Act::Snake(&l.alpha2))?)?;
            x = (xt + x)?;
        }
        Ok(x)
    }
}

// ---------------------------------------------------------------- prosody predictor

/// One `DurationEncoder` stage: BiLSTM then AdaLayerNorm.
#[derive(Debug, Clone)]
struct DurationStage {
    lstm: BiLstm,
    norm: Linear,
}

#[derive(Debug, Clone)]
struct Predictor {
    stages: Vec<DurationStage>,
    lstm: BiLstm,
    duration_proj: Linear,
    shared: BiLstm,
    f0: Vec<AdainResBlk>,
    n: Vec<AdainResBlk>,
    f0_proj: Conv1d,
    n_proj: Conv1d,
}

impl Predictor {
    fn load(ws: &Weights) -> Result<Self> {
        let cat = HIDDEN + STYLE;
        let mut stages = Vec::new();
        for i in 0..3 {
            stages.push(DurationStage {
                lstm: BiLstm::load(ws, &format!("predictor.text_encoder.lstms.{}", 2 * i), cat, HIDDEN / 2)?,
                norm: Linear::load(ws, &format!("predictor.text_encoder.lstms.{}.fc", 2 * i + 1), 2 * HIDDEN, STYLE)?,
            });
        }
        let blocks = |branch: &str| -> Result<Vec<AdainResBlk>> {
            Ok(vec![
                AdainResBlk::load(ws, &format!("predictor.{branch}.0"), HIDDEN, HIDDEN, false)?,
                AdainResBlk::load(ws, &format!("predictor.{branch}.1"), HIDDEN, HIDDEN / 2, true)?,
                AdainResBlk::load(ws, &format!("predictor.{branch}.2"), HIDDEN / 2, HIDDEN / 2, false)?,
            ])
        };
        Ok(Self {
            stages,
            lstm: BiLstm::load(ws, "predictor.lstm", cat, HIDDEN / 2)?,
            duration_proj: Linear::load(ws, "predictor.duration_proj.linear_layer", 50, HIDDEN)?,
            shared: BiLstm::load(ws, "predictor.shared", cat, HIDDEN / 2)?,
            f0: blocks("F0")?,
            n: blocks("N")?,
            f0_proj: Conv1d::load(ws, "predictor.F0_proj", HIDDEN / 2, 1, 1, 1, 0, 1, true)?,
            n_proj: Conv1d::load(ws, "predictor.N_proj", HIDDEN / 2, 1, 1, 1, 0, 1, true)?,
        })
    }

    /// d_en (t, 512), s (1, 128) -> d (t, 640): the duration encoder's features, style appended.
    fn encode(&self, d_en: &Tensor, s: &Tensor) -> Result<Tensor> {
        let t = d_en.dim(0)?;
        let s_rows = s.broadcast_as((t, STYLE))?;
        let mut x = Tensor::cat(&[d_en, &s_rows], 1)?;
        for stage in &self.stages {
            let y = stage.lstm.forward(&x)?; // (t, 512)
                                             // AdaLayerNorm: layer norm over channels, (1 + gamma) x + beta from the style.
            let h = stage.norm.forward(s)?; // (1, 1024)
            let gamma = (h.narrow(1, 0, HIDDEN)? + 1.0)?;
            let beta = h.narrow(1, HIDDEN, HIDDEN)?;
            let y = layer_norm_plain(&y, 1e-5)?.broadcast_mul(&gamma)?.broadcast_add(&beta)?;
            x = Tensor::cat(&[&y, &s_rows], 1)?;
        }
        Ok(x)
    }

    /// Durations in frames per token (sum of sigmoids over 50 bins, divided by speed).
    fn durations(&self, d: &Tensor, speed: f32) -> Result<Vec<f32>> {
        let x = self.lstm.forward(d)?;
        let logits = self.duration_proj.forward(&x)?; // (t, 50)
        let dur = (candle_nn::ops::sigmoid(&logits)?.sum(D::Minus1)? / speed as f64)?;
        Ok(dur.to_vec1::<f32>()?)
    }

    /// en (640, frames), s -> F0 and energy curves at twice the frame rate, (2 * frames) each.
    fn f0_n(&self, en: &Tensor, s: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.shared.forward(&en.t()?.contiguous()?)?; // (frames, 512)
        let x = x.t()?.unsqueeze(0)?.contiguous()?; // (1, 512, frames)
        let mut f0 = x.clone();
        for b in &self.f0 {
            f0 = b.forward(&f0, s)?;
        }
        let mut n = x;
        for b in &self.n {
            n = b.forward(&n, s)?;
        }
        Ok((self.f0_proj.forward(&f0)?.flatten_all()?, self.n_proj.forward(&n)?.flatten_all()?))
    }
}

// ---------------------------------------------------------------- decoder

#[derive(Debug, Clone)]
struct Generator {
    l_linear_w: Vec<f32>,
    l_linear_b: f32,
    noise_convs: Vec<Conv1d>,
    noise_res: Vec<AdaInResBlock1>,
    ups: Vec<ConvTranspose1d>,
    resblocks: Vec<AdaInResBlock1>,
    conv_post: Conv1d,
}

impl Generator {
    /// int8 weights for the residual blocks' convolutions, which run at 20 and 120 steps per
    /// frame (most of the work). The transposed upsampling convolutions, the source's and
    /// conv_post stay f32, as in the int8 export: conv_post's output goes through exp (the
    /// magnitudes) and sin (the phases), and quantizing it doubles the distance to f32.
    fn quantize(&mut self) -> Result<()> {
        for b in self.noise_res.iter_mut().chain(self.resblocks.iter_mut()) {
            b.quantize()?;
        }
        Ok(())
    }

    fn load(ws: &Weights) -> Result<Self> {
        let g = "decoder.generator";
        let lw = ws.get(&format!("{g}.m_source.l_linear.weight"), &[1, 9])?.flatten_all()?.to_vec1::<f32>()?;
        let lb = ws.get(&format!("{g}.m_source.l_linear.bias"), &[1])?.to_vec1::<f32>()?[0];
        let mut resblocks = Vec::new();
        for (i, c) in [256usize, 128].into_iter().enumerate() {
            for (j, k) in [3usize, 7, 11].into_iter().enumerate() {
                resblocks.push(AdaInResBlock1::load(ws, &format!("{g}.resblocks.{}", i * 3 + j), c, k)?);
            }
        }
        Ok(Self {
            l_linear_w: lw,
            l_linear_b: lb,
            noise_convs: vec![
                Conv1d::load(ws, &format!("{g}.noise_convs.0"), N_FFT + 2, 256, 12, 6, 3, 1, true)?,
                Conv1d::load(ws, &format!("{g}.noise_convs.1"), N_FFT + 2, 128, 1, 1, 0, 1, true)?,
            ],
            noise_res: vec![
                AdaInResBlock1::load(ws, &format!("{g}.noise_res.0"), 256, 7)?,
                AdaInResBlock1::load(ws, &format!("{g}.noise_res.1"), 128, 11)?,
            ],
            ups: vec![
                ConvTranspose1d::load(ws, &format!("{g}.ups.0"), 512, 256, 20, 10, 5)?,
                ConvTranspose1d::load(ws, &format!("{g}.ups.1"), 256, 128, 12, 6, 3)?,
            ],
            resblocks,
            conv_post: Conv1d::load(ws, &format!("{g}.conv_post"), 128, N_FFT + 2, 7, 1, 3, 1, true)?,
        })
    }

    /// The harmonic source for a whole piece, through the two noise convolutions: f0 at 2f
    /// points (host) -> (1, 256, 20f) and (1, 128, 120f + 1). The source's phase is accumulated
    /// over the whole piece, so it is made once and sliced for each chunk.
    fn sources(&self, f0: &[f32], dev: &Device) -> Result<(Tensor, Tensor)> {
        let har = harmonic_source_spectrum(f0, &self.l_linear_w, self.l_linear_b);
        let frames = har.len() / (N_FFT + 2);
        let har = Tensor::from_vec(har, (1, N_FFT + 2, frames), dev)?;
        Ok((self.noise_convs[0].forward(&har)?, self.noise_convs[1].forward(&har)?))
    }

    /// The half-frames `span` (units of 300 samples; x holds 2f of them) -> their audio,
    /// 300 samples per half-frame. The whole piece (`0..2f`) is the reference computation;
    /// a shorter span sees nothing outside itself, so its edges are only right once trimmed
    /// by the caller ([`Kokoro::synthesize_chunks`]), and its instance norms take their
    /// statistics over the span alone.
    fn forward_span(&self, x: &Tensor, src: &(Tensor, Tensor), s: &Tensor, span: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let (a, len) = (span.start, span.len());
        let srcs = [src.0.narrow(2, 10 * a, 10 * len)?, src.1.narrow(2, 60 * a, 60 * len + 1)?];
        let mut x = x.narrow(2, a, len)?;
        for (i, src) in srcs.iter().enumerate() {
            x = leaky_relu(&x, 0.1)?;
            let src = self.noise_res[i].forward(src, s)?;
            x = self.ups[i].forward(&x)?;
            if i == 1 {
                // ReflectionPad1d((1, 0)) prepends x[1] at the piece's start; inside a piece the
                // sample before the span is outside it (and inside the trimmed margin).
                let lead = if a == 0 { 1 } else { 0 };
                x = Tensor::cat(&[x.narrow(2, lead, 1)?, x], 2)?;
            }
            x = (x + src)?;
            let mut acc: Option<Tensor> = None;
            for j in 0..3 {
                let y = self.resblocks[i * 3 + j].forward(&x, s)?;
                acc = Some(match acc {
                    None => y,
                    Some(a) => (a + y)?,
                });
            }
            x = (acc.expect("three resblocks") / 3.0)?;
        }
        let x = self.conv_post.forward(&leaky_relu(&x, 0.01)?)?; // (1, 22, frames)
                                                                 // Magnitude exp(x[..11]), phase sin(x[11..]).
        let bins = N_FFT / 2 + 1;
        let frames = x.dim(2)?;
        let mag = x.narrow(1, 0, bins)?.exp()?.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        let phase = x.narrow(1, bins, bins)?.sin()?.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        Ok(istft(&mag, &phase, frames))
    }
}

/// The neural source filter's excitation, deterministic (as in the ONNX export: no additive
/// noise, no random initial phase), then its STFT: (22 * frames) values, magnitudes then phases,
/// row-major (channel, frame).
///
/// f0 (2f points) is upsampled to samples (x300, nearest); per harmonic h = 1..9 the phase
/// increment frac(h f0 / sr) is accumulated at the coarse rate and linearly interpolated back to
/// samples (the reference's downsample - cumsum - upsample); sine amplitude 0.1 where voiced
/// (f0 > 10 Hz); the 9 harmonics are merged by a learned linear layer and tanh.
fn harmonic_source_spectrum(f0: &[f32], lw: &[f32], lb: f32) -> Vec<f32> {
    const UP: usize = 300; // 10 * 6 * 5
    let coarse = f0.len();
    let n = coarse * UP;
    let sr = SAMPLE_RATE as f32;
    // Phase at coarse points, per harmonic, times the upsampling factor (as the reference does).
    let mut phase_c = vec![[0f32; 9]; coarse];
    let mut acc = [0f32; 9];
    for (i, &f) in f0.iter().enumerate() {
        for h in 0..9 {
            let r = f * (h as f32 + 1.0) / sr;
            acc[h] += r - r.floor();
            phase_c[i][h] = acc[h] * 2.0 * std::f32::consts::PI * UP as f32;
        }
    }
    let mut source = vec![0f32; n];
    for (t, out) in source.iter_mut().enumerate() {
        // Linear interpolation, half-pixel centres, clamped at the ends.
        let pos = ((t as f32 + 0.5) / UP as f32 - 0.5).max(0.0);
        let i0 = (pos.floor() as usize).min(coarse - 1);
        let i1 = (i0 + 1).min(coarse - 1);
        let w = pos - i0 as f32;
        let voiced = f0[t / UP] > 10.0;
        let mut v = lb;
        if voiced {
            for h in 0..9 {
                let ph = phase_c[i0][h] * (1.0 - w) + phase_c[i1][h] * w;
                v += lw[h] * ph.sin() * 0.1;
            }
        }
        *out = v.tanh();
    }
    stft_mag_phase(&source)
}

fn hann() -> [f32; N_FFT] {
    let mut w = [0f32; N_FFT];
    for (i, v) in w.iter_mut().enumerate() {
        *v = (std::f32::consts::PI * i as f32 / N_FFT as f32).sin().powi(2); // periodic Hann
    }
    w
}

/// Centred STFT (reflect padding), n_fft 20, hop 5, Hann: 11 magnitudes then 11 phases per frame.
fn stft_mag_phase(x: &[f32]) -> Vec<f32> {
    let pad = N_FFT / 2;
    let n = x.len();
    let reflect = |i: isize| -> f32 {
        let j = if i < 0 {
            -i
        } else if i >= n as isize {
            2 * (n as isize - 1) - i
        } else {
            i
        };
        x[j.clamp(0, n as isize - 1) as usize]
    };
    let frames = n / HOP + 1;
    let bins = N_FFT / 2 + 1;
    let w = hann();
    let mut out = vec![0f32; 2 * bins * frames];
    for fr in 0..frames {
        let start = (fr * HOP) as isize - pad as isize;
        for k in 0..bins {
            let (mut re, mut im) = (0f32, 0f32);
            for (m, &wm) in w.iter().enumerate() {
                let v = reflect(start + m as isize) * wm;
                let a = 2.0 * std::f32::consts::PI * (k * m) as f32 / N_FFT as f32;
                re += v * a.cos();
                im -= v * a.sin();
            }
            out[k * frames + fr] = (re * re + im * im).sqrt();
            out[(bins + k) * frames + fr] = im.atan2(re);
        }
    }
    out
}

/// Centred inverse STFT (n_fft 20, hop 5) with Hann synthesis and window-envelope
/// normalisation, as torch.istft: mag and phase are (bins, frames) row-major.
fn istft(mag: &[f32], phase: &[f32], frames: usize) -> Vec<f32> {
    let bins = N_FFT / 2 + 1;
    let w = hann();
    let full = (frames - 1) * HOP + N_FFT;
    let mut y = vec![0f32; full];
    let mut env = vec![0f32; full];
    let mut frame = [0f32; N_FFT];
    // cos/sin table for k*m mod N.
    let tab: Vec<(f32, f32)> = (0..N_FFT)
        .map(|i| {
            let a = 2.0 * std::f32::consts::PI * i as f32 / N_FFT as f32;
            (a.cos(), a.sin())
        })
        .collect();
    for fr in 0..frames {
        frame.fill(0.0);
        for k in 0..bins {
            let (m_, p_) = (mag[k * frames + fr], phase[k * frames + fr]);
            let (re, im) = (m_ * p_.cos(), m_ * p_.sin());
            // Real inverse DFT: DC and Nyquist once, the rest twice (Hermitian symmetry).
            let c = if k == 0 || k == N_FFT / 2 { 1.0 } else { 2.0 };
            for (m, v) in frame.iter_mut().enumerate() {
                let (cs, sn) = tab[(k * m) % N_FFT];
                *v += c * (re * cs - im * sn);
            }
        }
        for m in 0..N_FFT {
            y[fr * HOP + m] += frame[m] / N_FFT as f32 * w[m];
            env[fr * HOP + m] += w[m] * w[m];
        }
    }
    let pad = N_FFT / 2;
    (pad..full - pad).map(|i| if env[i] > 1e-11 { y[i] / env[i] } else { y[i] }).collect()
}

#[derive(Debug, Clone)]
struct Decoder {
    encode: AdainResBlk,
    decode: Vec<AdainResBlk>,
    f0_conv: Conv1d,
    n_conv: Conv1d,
    asr_res: Conv1d,
    generator: Generator,
}

impl Decoder {
    fn load(ws: &Weights) -> Result<Self> {
        let mut decode = Vec::new();
        for i in 0..4 {
            decode.push(AdainResBlk::load(ws, &format!("decoder.decode.{i}"), 1024 + 2 + 64, if i == 3 { 512 } else { 1024 }, i == 3)?);
        }
        Ok(Self {
            encode: AdainResBlk::load(ws, "decoder.encode", HIDDEN + 2, 1024, false)?,
            decode,
            f0_conv: Conv1d::load(ws, "decoder.F0_conv", 1, 1, 3, 2, 1, 1, true)?,
            n_conv: Conv1d::load(ws, "decoder.N_conv", 1, 1, 3, 2, 1, 1, true)?,
            asr_res: Conv1d::load(ws, "decoder.asr_res.0", HIDDEN, 64, 1, 1, 0, 1, true)?,
            generator: Generator::load(ws)?,
        })
    }

    /// asr (1, 512, f), f0/n (2f), s (1, 128) -> the generator's input, (1, 512, 2f).
    fn forward(&self, asr: &Tensor, f0: &Tensor, n: &Tensor, s: &Tensor) -> Result<Tensor> {
        let f0c = self.f0_conv.forward(&f0.reshape((1, 1, ()))?)?;
        let nc = self.n_conv.forward(&n.reshape((1, 1, ()))?)?;
        let mut x = self.encode.forward(&Tensor::cat(&[asr, &f0c, &nc], 1)?, s)?;
        let asr_res = self.asr_res.forward(asr)?;
        for block in &self.decode {
            x = block.forward(&Tensor::cat(&[&x, &asr_res, &f0c, &nc], 1)?, s)?;
        }
        Ok(x)
    }
}

// ---------------------------------------------------------------- the model

/// Intermediate results of one forward pass, for tests and metrics.
#[derive(Debug, Clone)]
pub struct Synthesis {
    /// 24 kHz mono samples.
    pub audio: Vec<f32>,
    /// Frames (of 600 samples) per input token, padding tokens included.
    pub durations: Vec<u32>,
    /// F0 curve (Hz) at two points per frame.
    pub f0: Vec<f32>,
    /// Wall time per stage (encoders + prosody, decoder, generator), for profiling.
    pub stage_ms: [f64; 3],
}

#[derive(Debug, Clone)]
pub struct Kokoro {
    bert: Albert,
    bert_encoder: Linear,
    predictor: Predictor,
    text_encoder: TextEncoder,
    decoder: Decoder,
    pub device: Device,
    precision: Precision,
}

/// Arithmetic of the generator's convolutions on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 through BLAS: the reference, and every device but a CPU with AVX-512 VNNI.
    F32,
    /// int8 weights and activations, int32 accumulation (`voice_kernels::int8`).
    Int8,
}

impl Kokoro {
    /// int8 where the CPU has AVX-512 VNNI, f32 elsewhere.
    pub fn new(ws: &Weights, device: &Device) -> Result<Self> {
        Self::with_precision(ws, device, Precision::Int8)
    }

    /// `Int8` falls back to f32 where the int8 kernels cannot run ([`Kokoro::precision`] says
    /// what was chosen).
    pub fn with_precision(ws: &Weights, device: &Device, precision: Precision) -> Result<Self> {
        let mut decoder = Decoder::load(ws)?;
        let int8 = precision == Precision::Int8 && device.is_cpu() && voice_kernels::int8::available();
        if int8 {
            // The generator and the decoder (the decoder's input is a concatenation of unlike
            // features, one activation scale for all, but it measured fine: 0.45-0.67 dB from
            // f32 for both together). The prosody predictor and ALBERT stay f32: quantizing the
            // F0 and energy blocks added 0.2-0.3 dB for a tenth of the time, ALBERT 0.25 dB and
            // changed predicted durations, for no clear gain on 40-token pieces.
            decoder.generator.quantize()?;
            for b in std::iter::once(&mut decoder.encode).chain(&mut decoder.decode) {
                b.quantize()?;
            }
        }
        Ok(Self {
            bert: Albert::load(ws)?,
            bert_encoder: Linear::load(ws, "bert_encoder", HIDDEN, ALBERT_HIDDEN)?,
            predictor: Predictor::load(ws)?,
            text_encoder: TextEncoder::load(ws)?,
            decoder,
            device: device.clone(),
            precision: if int8 { Precision::Int8 } else { Precision::F32 },
        })
    }

    /// The generator's arithmetic in use.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Token ids including the leading and trailing pad (0), a style vector (256: decoder half
    /// then prosody half), and a speed factor (> 0) -> audio.
    pub fn forward(&self, ids: &[i64], style: &[f32], speed: f32) -> Result<Synthesis> {
        self.forward_aligned(ids, style, speed, None)
    }

    /// [`Kokoro::forward`] with the alignment given (frames per token, padding included)
    /// instead of predicted: for comparing the acoustic stages of two implementations whose
    /// duration rounding differs on a token.
    pub fn forward_aligned(&self, ids: &[i64], style: &[f32], speed: f32, durations: Option<&[u32]>) -> Result<Synthesis> {
        let p = self.prepare(ids, style, speed, durations)?;
        let t = std::time::Instant::now();
        let audio = self.generate(&p)?;
        let t_gen = t.elapsed().as_secs_f64() * 1e3;
        Ok(Synthesis { audio, stage_ms: [p.stage_ms[0], p.stage_ms[1], t_gen], durations: p.durations, f0: p.f0 })
    }

    /// Every stage before the generator, for the whole piece: text encoders, prosody
    /// (durations, F0, energy), alignment and the decoder. Cheap next to the generator (about a
    /// tenth of its work per frame), and the instance norms in it see the whole piece, so
    /// streaming a piece only cuts the generator's work into chunks.
    pub fn prepare(&self, ids: &[i64], style: &[f32], speed: f32, durations: Option<&[u32]>) -> Result<Prepared> {
        if ids.len() < 3 || ids.len() > CONTEXT_LENGTH {
            bail!("{} tokens: Kokoro takes 1 to {} phonemes per pass", ids.len().saturating_sub(2), CONTEXT_LENGTH - 2);
        }
        if style.len() != 2 * STYLE {
            bail!("style vector of {} values, expected {}", style.len(), 2 * STYLE);
        }
        if !(speed.is_finite() && speed > 0.0) {
            bail!("speed must be a positive number");
        }
        let dev = &self.device;
        let start = std::time::Instant::now();
        let ids_t = Tensor::new(ids.iter().map(|&i| i as u32).collect::<Vec<_>>(), dev)?;
        let ref_s = Tensor::from_slice(style, (1, 2 * STYLE), dev)?;
        let s_dec = ref_s.narrow(1, 0, STYLE)?;
        let s_pro = ref_s.narrow(1, STYLE, STYLE)?;

        let bert = self.bert.forward(&ids_t)?;
        let d_en = self.bert_encoder.forward(&bert)?; // (t, 512)
        let d = self.predictor.encode(&d_en, &s_pro)?; // (t, 640)
        let dur = self.predictor.durations(&d, speed)?;
        let durations: Vec<u32> = match durations {
            Some(d) if d.len() == ids.len() => d.to_vec(),
            Some(d) => bail!("{} durations for {} tokens", d.len(), ids.len()),
            None => dur.iter().map(|&v| v.round().max(1.0) as u32).collect(),
        };
        // Alignment: each token's features repeated for its frames (the one-hot matmul of the
        // reference, as a gather).
        let index: Vec<u32> = durations.iter().enumerate().flat_map(|(i, &n)| std::iter::repeat_n(i as u32, n as usize)).collect();
        let index = Tensor::new(index, dev)?;
        let en = d.index_select(&index, 0)?.t()?.contiguous()?; // (640, frames)
        let (f0, n) = self.predictor.f0_n(&en, &s_pro)?;
        let t_en = self.text_encoder.forward(&ids_t)?; // (1, 512, t)
        let asr = t_en.contiguous()?.index_select(&index, 2)?; // (1, 512, frames)
        let f0_host = f0.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        let t_prosody = start.elapsed();
        let x = self.decoder.forward(&asr, &f0, &n, &s_dec)?;
        let sources = self.decoder.generator.sources(&f0_host, dev)?;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        Ok(Prepared { x, sources, s_dec, durations, f0: f0_host, stage_ms: [ms(t_prosody), ms(start.elapsed() - t_prosody)] })
    }

    /// The generator over the half-frames (300 samples) `span` alone, edges included: for
    /// studying how the rendering depends on what the generator sees (examples/chunk_study.rs).
    /// Streaming goes through [`Kokoro::synthesize_chunks`], which trims the edges.
    pub fn generate_span(&self, p: &Prepared, span: std::ops::Range<usize>) -> Result<Vec<f32>> {
        self.decoder.generator.forward_span(&p.x, &p.sources, &p.s_dec, span)
    }

    /// The whole piece's audio in one generator pass (600 samples per frame).
    pub fn generate(&self, p: &Prepared) -> Result<Vec<f32>> {
        self.decoder.generator.forward_span(&p.x, &p.sources, &p.s_dec, 0..2 * p.frames())
    }

    /// The piece's audio in chunks of frames, each handed to `sink` as soon as it exists (the
    /// first after `chunking.first_frames` frames' work instead of the whole piece's). `sink`
    /// returns false to stop (the listener went away). The chunks, joined, have exactly the
    /// whole pass's length.
    ///
    /// Each chunk is computed over its frames plus `chunking.margin` half-frames on each side
    /// (more than the generator's receptive field), so its convolutions are those of the whole
    /// pass; what differs is the generator's instance norms, whose statistics come from the
    /// span instead of the piece. So that a join does not step where two chunks' statistics
    /// differ, the first [`CROSSFADE`] samples after a join are computed by both chunks and
    /// faded from the earlier one's into the later one's.
    pub fn synthesize_chunks(&self, p: &Prepared, chunking: &Chunking, mut sink: impl FnMut(Vec<f32>) -> bool) -> Result<()> {
        let spans = chunking.spans(p.frames(), p.durations.first().map_or(0, |&d| d as usize));
        if spans.len() == 1 {
            sink(self.generate(p)?);
            return Ok(());
        }
        let half = SAMPLES_PER_FRAME / 2;
        let total_half = 2 * p.frames();
        let mut tail: Vec<f32> = Vec::new();
        // The leading pad token's frames are silence in the one-pass rendering (below -60 dB of
        // the piece's peak; tested): the first chunk renders only the last LEAD_RENDERED of
        // them (the onset starts a few frames early) and gives exact zeros before, faded in.
        let lead = p.durations.first().map_or(0, |&d| d as usize);
        let silent = lead.saturating_sub(LEAD_RENDERED) * SAMPLES_PER_FRAME;
        for (k, frames) in spans.iter().enumerate() {
            let last = k + 1 == spans.len();
            // Samples this chunk owns, plus the crossfade region after its end.
            let (own_start, own_end) = (frames.start * SAMPLES_PER_FRAME, frames.end * SAMPLES_PER_FRAME);
            let render_start = if k == 0 { silent } else { own_start };
            let want_end = if last { own_end } else { own_end + CROSSFADE };
            // No margin before the first chunk: it starts inside the silence, as the piece
            // itself does.
            let lo = if k == 0 { render_start / half } else { (render_start / half).saturating_sub(chunking.margin) };
            let hi = (want_end.div_ceil(half) + chunking.margin).min(total_half);
            let audio = self.decoder.generator.forward_span(&p.x, &p.sources, &p.s_dec, lo..hi)?;
            let base = lo * half;
            let mut out = vec![0f32; render_start - own_start];
            out.extend_from_slice(&audio[render_start - base..own_end - base]);
            if render_start > own_start {
                for (i, o) in out[render_start - own_start..].iter_mut().take(CROSSFADE).enumerate() {
                    *o *= (i as f32 + 0.5) / CROSSFADE as f32;
                }
            }
            // Fade from the previous chunk's view of these samples into this one's.
            for (i, (o, t)) in out.iter_mut().zip(&tail).enumerate() {
                let w = (i as f32 + 0.5) / tail.len() as f32;
                *o = t * (1.0 - w) + *o * w;
            }
            tail = if last { Vec::new() } else { audio[own_end - base..want_end - base].to_vec() };
            if !sink(out) {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Samples after each join computed by both neighbouring chunks and crossfaded (10 ms).
pub const CROSSFADE: usize = 240;
/// Frames of a streamed piece's leading silence that are rendered (the rest are zeros).
pub const LEAD_RENDERED: usize = 6;

/// A piece after every stage but the generator ([`Kokoro::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The decoder's output, the generator's input: (1, 512, 2 * frames).
    x: Tensor,
    /// The harmonic source through the noise convolutions, for the whole piece.
    sources: (Tensor, Tensor),
    s_dec: Tensor,
    /// Frames (of 600 samples) per input token, padding tokens included.
    pub durations: Vec<u32>,
    /// F0 curve (Hz) at two points per frame.
    pub f0: Vec<f32>,
    /// Wall time of the text + prosody stages and of the decoder (ms).
    pub stage_ms: [f64; 2],
}

impl Prepared {
    /// Frames of 600 samples (25 ms) the piece lasts.
    pub fn frames(&self) -> usize {
        self.f0.len() / 2
    }
}

/// How a piece is cut into chunks for streaming ([`Kokoro::synthesize_chunks`]): a small
/// first chunk so the first audio leaves early, then chunks doubling up to `max_frames` (fewer
/// chunks, less margin recomputed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Frames (25 ms) in the first chunk; 0 = the piece in one pass.
    pub first_frames: usize,
    pub max_frames: usize,
    /// Half-frames (12.5 ms) of context computed on each side of a chunk and thrown away.
    pub margin: usize,
}

impl Chunking {
    /// The whole piece in one pass.
    pub const WHOLE: Chunking = Chunking { first_frames: 0, max_frames: 0, margin: 0 };
    /// voice-tts's default, chosen with `examples/chunk_study.rs` (benches/README.md): 400 ms
    /// of speech in the first chunk (8 frames left gaps of 30-110 ms in playback after the
    /// first chunk on these 2 cores; 16 left none in 8 of 9 cases), chunks doubling to 3.2 s,
    /// 125 ms of margin (more than the generator's receptive field, about 9 half-frames).
    pub const STREAM: Chunking = Chunking { first_frames: 16, max_frames: 128, margin: 10 };

    /// The chunks' frame ranges for a piece of `frames` whose first `lead` frames are the
    /// leading pad token's (silence): the first chunk holds the lead and `first_frames` of
    /// speech, the next ones double up to `max_frames`, and no last chunk is shorter than
    /// `first_frames` (it joins the one before).
    pub fn spans(&self, frames: usize, lead: usize) -> Vec<std::ops::Range<usize>> {
        let first = lead + self.first_frames;
        if self.first_frames == 0 || frames < first + self.first_frames {
            return std::iter::once(0..frames).collect();
        }
        let mut spans = Vec::new();
        let (mut at, mut end, mut size) = (0, first, self.first_frames);
        while at < frames {
            if frames - end < self.first_frames {
                end = frames;
            }
            spans.push(at..end);
            at = end;
            size = (size * 2).min(self.max_frames.max(self.first_frames));
            end = (at + size).min(frames);
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stft_istft_round_trip() {
        let x: Vec<f32> = (0..600).map(|i| (i as f32 * 0.05).sin() * 0.5 + (i as f32 * 0.31).cos() * 0.2).collect();
        let spec = stft_mag_phase(&x);
        let frames = x.len() / HOP + 1;
        let bins = N_FFT / 2 + 1;
        let y = istft(&spec[..bins * frames], &spec[bins * frames..], frames);
        assert_eq!(y.len(), x.len() - HOP + HOP); // (frames - 1) * hop
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}

//! Choosing the next token: repetition penalties, temperature, top-k, top-p, a seeded RNG.

use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    pub seed: Option<u64>,
    /// OpenAI's penalties: subtract `frequency * count + presence * (count > 0)` from a
    /// generated token's logit.
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// llama.cpp's multiplicative penalty over the last `repeat_last_n` tokens; 1 = off.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub max_tokens: usize,
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            max_tokens: 256,
            stop: vec![],
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    counts: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self { params, rng, counts: Default::default() }
    }

    /// Pick a token from `logits` given the context (prompt + generated) and what was generated.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        let p = &self.params;
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (&tok, &n) in &self.counts {
                if let Some(l) = logits.get_mut(tok as usize) {
                    *l -= p.frequency_penalty * n as f32 + p.presence_penalty;
                }
            }
        }
        if p.repeat_penalty != 1.0 && p.repeat_penalty > 0.0 {
            let start = context.len().saturating_sub(p.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &tok in &context[start..] {
                if seen.insert(tok) {
                    if let Some(l) = logits.get_mut(tok as usize) {
                        *l = if *l > 0.0 { *l / p.repeat_penalty } else { *l * p.repeat_penalty };
                    }
                }
            }
        }
        let tok = if p.temperature <= 0.0 { argmax(logits) } else { self.sample_random(logits) };
        *self.counts.entry(tok).or_default() += 1;
        tok
    }

    fn sample_random(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let t = p.temperature;
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, &l)| (i as u32, l / t)).collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|(_, l)| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        for x in probs.iter_mut() {
            *x /= sum;
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, x) in probs.iter().enumerate() {
                acc += x;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cand.truncate(keep);
            let s: f32 = probs.iter().sum();
            for x in probs.iter_mut() {
                *x /= s;
            }
        }
        let r: f32 = self.rng.random();
        let mut acc = 0.0;
        for (i, x) in probs.iter().enumerate() {
            acc += x;
            if r < acc {
                return cand[i].0;
            }
        }
        cand[probs.len() - 1].0
    }
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    let mut bv = f32::NEG_INFINITY;
    for (i, &x) in xs.iter().enumerate() {
        if x > bv {
            bv = x;
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_seeded_and_penalties() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, 0.2], &[]), 1);
        let p = SamplingParams { temperature: 0.8, top_k: 2, seed: Some(7), ..Default::default() };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..50).map(|_| s.sample(&mut [1.0, 1.1, -5.0, 0.9], &[])).collect::<Vec<_>>()
        };
        let a = draw(&p);
        assert_eq!(a, draw(&p), "same seed, same draws");
        assert!(a.iter().all(|&t| t == 0 || t == 1), "top_k=2 keeps the two best: {a:?}");
        // A strong frequency penalty moves greedy decoding off a repeated token.
        let mut s = Sampler::new(SamplingParams { frequency_penalty: 2.0, ..Default::default() });
        assert_eq!(s.sample(&mut [1.0, 2.0], &[]), 1);
        assert_eq!(s.sample(&mut [1.0, 2.0], &[1]), 0);
        // Repeat penalty divides positive logits of recent tokens.
        let mut s = Sampler::new(SamplingParams { repeat_penalty: 3.0, ..Default::default() });
        assert_eq!(s.sample(&mut [1.0, 2.0], &[1]), 0);
    }
}

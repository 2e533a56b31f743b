//! Prefix reuse (llama.cpp's `cache_prompt`, vLLM's prefix caching): the K/V of recently
//! finished and cancelled sequences is kept with the tokens it was computed from. A new request
//! starts from the entry sharing the longest token prefix with its prompt and prefills only the
//! rest: a conversation's next turn re-reads a few dozen tokens instead of its whole history.
//!
//! Exact by construction: a position's keys and values depend only on the tokens up to it, and
//! the CPU kernels give a row the same bits whether it was computed alone, in a prompt chunk or
//! in a batch (`voice_kernels::quant`), so output with the cache on is the output with it off.
//! Memory is bounded by a token budget (K/V bytes per token x tokens); the least recently used
//! entries go first.

use crate::model::Sequence;

struct Entry {
    tokens: Vec<u32>,
    seq: Sequence,
    last_used: u64,
}

pub struct PrefixCache {
    entries: Vec<Entry>,
    budget_tokens: usize,
    tick: u64,
}

/// What [`PrefixCache::take`] found.
pub struct Reuse {
    pub seq: Sequence,
    /// Prompt tokens already in `seq` (its position).
    pub tokens: usize,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    pub fn new(budget_tokens: usize) -> Self {
        Self { entries: Vec::new(), budget_tokens, tick: 0 }
    }

    /// Tokens held (the memory bound is on this).
    pub fn tokens(&self) -> usize {
        self.entries.iter().map(|e| e.tokens.len()).sum()
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// A sequence holding the longest cached prefix of `prompt`, or None. At least the prompt's
    /// last token is left to feed (its logits start the generation). An entry used whole is
    /// moved out (its sequence goes on, and comes back longer); one used in part is copied up
    /// to the shared prefix and stays for other requests that share more of it.
    pub fn take(&mut self, prompt: &[u32]) -> Option<Reuse> {
        let limit = prompt.len().saturating_sub(1);
        let (best, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt).min(limit)))
            // Longest match; of equal ones, the most recently used.
            .max_by_key(|&(i, n)| (n, self.entries[i].last_used))?;
        if shared == 0 {
            return None;
        }
        self.tick += 1;
        if shared == self.entries[best].tokens.len() {
            let e = self.entries.swap_remove(best);
            return Some(Reuse { seq: e.seq, tokens: shared });
        }
        let e = &mut self.entries[best];
        e.last_used = self.tick;
        let seq = e.seq.prefix(shared)?;
        Some(Reuse { seq, tokens: shared })
    }

    /// Keep a finished sequence; `tokens` are the ones its cache holds, in order. Entries that
    /// are a prefix of it are dropped (it holds all they do); then the least recently used go
    /// until the budget holds.
    pub fn put(&mut self, tokens: Vec<u32>, seq: Sequence) {
        if tokens.is_empty() || tokens.len() > self.budget_tokens || seq.pos != tokens.len() {
            return;
        }
        self.entries.retain(|e| common_prefix(&e.tokens, &tokens) < e.tokens.len());
        self.tick += 1;
        self.entries.push(Entry { tokens, seq, last_used: self.tick });
        while self.tokens() > self.budget_tokens {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_used).map(|(i, _)| i).expect("over budget means not empty");
            self.entries.swap_remove(oldest);
        }
    }
}

//! Conversation memory: the system prompt and past exchanges within a token budget, kept so
//! that every turn's prompt starts with the previous turn's prompt and answer.
//!
//! voice-llm keeps the K/V of recent sequences and prefills only what a new prompt does not
//! share with one of them (its prefix cache). That pays only if the prompt's start stays put:
//! - the assistant's messages are what the model generated, not the cleaned sentences spoken;
//! - over budget, the oldest exchanges go down to 60 % of it at once (the start of the history
//!   changes once every few turns, not on every turn as with dropping one exchange at a time);
//! - retrieved passages go in a message just before the question and are not kept, instead of
//!   into the system message at the very start.

use std::collections::VecDeque;

use voice_proto::llm::v1::ChatMessage;

/// Rough tokens of a text (about four characters per token for English BPE vocabularies, plus
/// the chat template's few tokens per message). Only used to stay under a budget.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4) + 4
}

/// What the history is cut down to (percent of the budget) when it goes over.
const TRIM_TO_PERCENT: usize = 60;

#[derive(Debug, Clone)]
pub struct Memory {
    system: String,
    turns: VecDeque<(String, String)>,
    budget_tokens: usize,
}

fn msg(role: &str, content: impl Into<String>) -> ChatMessage {
    ChatMessage { role: role.into(), content: content.into() }
}

impl Memory {
    pub fn new(system: impl Into<String>, budget_tokens: usize) -> Self {
        Self { system: system.into(), turns: VecDeque::new(), budget_tokens }
    }

    pub fn turns(&self) -> usize {
        self.turns.len()
    }

    fn tokens(&self) -> usize {
        estimate_tokens(&self.system) + self.turns.iter().map(|(u, a)| estimate_tokens(u) + estimate_tokens(a)).sum::<usize>()
    }

    /// Record a finished exchange: the question and the assistant's message as the model wrote
    /// it (cut at what was spoken when the user interrupted). Over the budget, the oldest
    /// exchanges go until the history is at most 60 % of it.
    pub fn push(&mut self, user: &str, assistant: &str) {
        self.turns.push_back((user.to_string(), assistant.to_string()));
        if self.tokens() > self.budget_tokens {
            let target = self.budget_tokens * TRIM_TO_PERCENT / 100;
            while self.tokens() > target && self.turns.pop_front().is_some() {}
        }
    }

    /// The system prompt and every kept exchange: the start of the next turn's prompt (what a
    /// prefix-cache warm-up reads).
    pub fn history(&self) -> Vec<ChatMessage> {
        let mut out = vec![msg("system", self.system.clone())];
        for (u, a) in &self.turns {
            out.push(msg("user", u.as_str()));
            out.push(msg("assistant", a.as_str()));
        }
        out
    }
}

/// The next reply's messages: the history, the retrieved passages (if any) in a system message
/// of their own just before the question, the question.
pub fn reply_messages(mut history: Vec<ChatMessage>, context: Option<&str>, user: &str) -> Vec<ChatMessage> {
    if let Some(ctx) = context.map(str::trim).filter(|c| !c.is_empty()) {
        history.push(msg("system", format!("Use these passages to answer when they are relevant:\n{ctx}")));
    }
    history.push(msg("user", user));
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_its_start_and_trims_with_hysteresis() {
        let mut m = Memory::new("Be brief.", 100);
        let mut starts = Vec::new();
        for i in 0..12 {
            m.push(&format!("question number {i} is here"), &format!("answer number {i} is here"));
            let h = m.history();
            assert_eq!(h[0].role, "system");
            assert!(m.tokens() <= 100, "{}", m.tokens());
            starts.push(h.get(1).map(|x| x.content.clone()).unwrap_or_default());
        }
        // 21 tokens an exchange, 7 for the system prompt: over 100 at the fifth exchange, cut to
        // at most 60 (the newest two); so the oldest kept question changes every three turns,
        // never on two turns in a row.
        let changes = starts.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 3, "{starts:?}");
        assert!(starts.windows(3).all(|w| w[0] == w[1] || w[1] == w[2]), "{starts:?}");
        // The newest exchange is the last one kept, the model's own words.
        let h = m.history();
        assert_eq!(h.last().unwrap().content, "answer number 11 is here");
        // The passages come after the history, before the question; the history is a prefix.
        let msgs = reply_messages(h.clone(), Some("Paris is in France."), "last question");
        assert_eq!(&msgs[..h.len()], &h[..]);
        assert_eq!(msgs[h.len()].role, "system");
        assert!(msgs[h.len()].content.contains("Paris is in France."));
        assert_eq!(msgs.last().unwrap().content, "last question");
        assert_eq!(reply_messages(h.clone(), Some("  "), "q").len(), h.len() + 1);
        // An exchange bigger than the whole budget does not stay.
        let mut tiny = Memory::new("Be brief.", 10);
        tiny.push("a question far longer than the budget allows", "and an answer as long");
        assert_eq!(tiny.turns(), 0);
        assert_eq!(tiny.history().len(), 1);
    }
}

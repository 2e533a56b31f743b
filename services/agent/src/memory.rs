//! Conversation memory: the system prompt, past turns within a token budget, and this turn's
//! retrieved context, as chat messages for voice-llm.

use std::collections::VecDeque;

use voice_proto::llm::v1::ChatMessage;

/// Rough tokens of a text (about four characters per token for English BPE vocabularies, plus
/// the chat template's few tokens per message). Only used to stay under a budget.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4) + 4
}

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

    /// Record a finished exchange; what the agent actually said (cut at an interruption).
    pub fn push(&mut self, user: &str, assistant: &str) {
        self.turns.push_back((user.to_string(), assistant.to_string()));
    }

    /// Messages for the next reply. The oldest exchanges are left out while the whole would
    /// exceed the budget; the system prompt, the context and the new question always go in.
    pub fn messages(&self, user: &str) -> Vec<ChatMessage> {
        let system = self.system.clone();
        let fixed = estimate_tokens(&system) + estimate_tokens(user);
        let mut left = self.budget_tokens.saturating_sub(fixed);
        let mut kept = Vec::new();
        for (u, a) in self.turns.iter().rev() {
            let cost = estimate_tokens(u) + estimate_tokens(a);
            if cost > left {
                break;
            }
            left -= cost;
            kept.push((u, a));
        }
        let mut out = vec![msg("system", system)];
        for (u, a) in kept.into_iter().rev() {
            out.push(msg("user", u.as_str()));
            out.push(msg("assistant", a.as_str()));
        }
        out.push(msg("user", user));
        out
    }
}

/// Put retrieved passages into the system message (the first one).
pub fn with_context(mut messages: Vec<ChatMessage>, context: &str) -> Vec<ChatMessage> {
    if let Some(system) = messages.first_mut().filter(|m| m.role == "system") {
        system.content = format!("{}\n\nUse these passages to answer when they are relevant:\n{}", system.content, context.trim());
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_turns_fall_out_of_the_budget_first() {
        let mut m = Memory::new("Be brief.", 60);
        for i in 0..10 {
            m.push(&format!("question number {i} is here"), &format!("answer number {i} is here"));
        }
        let msgs = m.messages("last question");
        assert_eq!(msgs[0].role, "system");
        assert!(with_context(msgs.clone(), "Paris is in France.")[0].content.contains("Paris is in France."));
        assert_eq!(msgs.last().unwrap().content, "last question");
        let total: usize = msgs.iter().map(|m| estimate_tokens(&m.content)).sum();
        assert!(total <= 60, "{total}");
        // What is kept is the most recent, in order.
        let users: Vec<&str> = msgs.iter().filter(|m| m.role == "user").map(|m| m.content.as_str()).collect();
        assert!(users.len() >= 2, "{users:?}");
        assert_eq!(users[users.len() - 2], "question number 9 is here");
        // A budget smaller than the fixed part still sends the question.
        let tiny = Memory::new("Be brief.", 1).messages("hi");
        assert_eq!(tiny.len(), 2);
    }
}

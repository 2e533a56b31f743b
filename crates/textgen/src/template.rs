//! Chat prompts: the model's own Jinja template (`tokenizer.chat_template`, rendered with
//! minijinja and Python-compatible string methods), or ChatML when the model has none.

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

pub const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    /// True when the model had no template and ChatML is used.
    pub is_fallback: bool,
}

impl ChatTemplate {
    pub fn new(source: Option<&str>) -> Result<Self> {
        let (source, is_fallback) = match source {
            Some(s) if !s.trim().is_empty() => (s.to_string(), false),
            _ => (CHATML.to_string(), true),
        };
        let t = Self { source, is_fallback };
        // Fail at load, not at the first request.
        t.render(&[ChatMessage::new("user", "hi")], "", "")?;
        Ok(t)
    }

    /// The prompt for the next assistant message.
    pub fn render(&self, messages: &[ChatMessage], bos: &str, eos: &str) -> Result<String> {
        self.render_with(messages, bos, eos, true)
    }

    /// `add_generation_prompt` false: the messages alone, as the start of a longer prompt (what
    /// a prefix-cache warm-up reads).
    pub fn render_with(&self, messages: &[ChatMessage], bos: &str, eos: &str, add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.source).map_err(|e| anyhow!("the chat template does not parse: {e}"))?;
        let tmpl = env.get_template("chat").map_err(|e| anyhow!("{e}"))?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos,
            eos_token => eos,
        })
        .map_err(|e| anyhow!("rendering the chat template: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_and_python_methods() {
        let t = ChatTemplate::new(None).unwrap();
        assert!(t.is_fallback);
        let s = t.render(&[ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")], "", "").unwrap();
        assert_eq!(s, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        // Templates use Python string methods and raise_exception.
        let t = ChatTemplate::new(Some(
            "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}[{{ m['content'].strip().upper() }}]{% endfor %}",
        ))
        .unwrap();
        assert_eq!(t.render(&[ChatMessage::new("user", "  hey ")], "", "").unwrap(), "[HEY]");
        assert!(t.render(&[ChatMessage::new("tool", "x")], "", "").unwrap_err().to_string().contains("no tools"));
    }
}

//! Conversations of `lckv pipe` and the prompt tokens of a request. A chat conversation keeps
//! its messages (each request adds its own and the answer) and is rendered whole through the
//! chat template every turn; a text conversation keeps the tokens the model saw and appends the
//! new prompt's. Either way the new prompt begins with what the cache already holds, so
//! `prefix::reuse_prefix` finds it and only the new turn is run.

use std::collections::HashMap;

use crate::chat::{ChatTemplate, Message};
use crate::tokenizer::Tokenizer;

use super::protocol::Input;

#[derive(Clone, Debug)]
pub enum History {
    Chat(Vec<Message>),
    Text(Vec<u32>),
}

/// The conversations by name.
pub type Conversations = HashMap<String, History>;

/// What turns a request into tokens: the tokenizer, the chat template and `--system`.
pub struct Prompter<'a> {
    pub tok: &'a Tokenizer,
    pub template: &'a ChatTemplate,
    /// Put before a chat that does not open with a system message of its own.
    pub system: Option<String>,
}

/// A request's prompt, and the conversation's history as it will be before the answer.
pub struct Prompt {
    pub tokens: Vec<u32>,
    pub history: History,
}

impl Prompter<'_> {
    /// The prompt of `input` after `history` (None: a new conversation, or none at all).
    pub fn prompt(&self, history: Option<&History>, input: &Input) -> Result<Prompt, String> {
        match (history, input) {
            (None, Input::Messages(new)) => self.chat(self.with_system(new)),
            (Some(History::Chat(old)), Input::Messages(new)) => {
                self.chat(old.iter().chain(new).cloned().collect())
            }
            (None, Input::Prompt(text)) => self.text(Vec::new(), text),
            (Some(History::Text(old)), Input::Prompt(text)) => self.text(old.clone(), text),
            (Some(History::Chat(_)), Input::Prompt(_)) => Err(
                "this conversation is a chat: continue it with 'messages', or give this prompt another conversation".into(),
            ),
            (Some(History::Text(_)), Input::Messages(_)) => Err(
                "this conversation is a text prompt: continue it with 'prompt', or give these messages another conversation".into(),
            ),
        }
    }

    fn with_system(&self, messages: &[Message]) -> Vec<Message> {
        match &self.system {
            Some(s) if messages.first().is_none_or(|m| m.role != "system") => {
                std::iter::once(Message::new("system", s.as_str()))
                    .chain(messages.iter().cloned())
                    .collect()
            }
            _ => messages.to_vec(),
        }
    }

    fn chat(&self, messages: Vec<Message>) -> Result<Prompt, String> {
        Ok(Prompt {
            tokens: self.render(&messages)?,
            history: History::Chat(messages),
        })
    }

    /// Text continues the tokens before it; only the first prompt of a conversation gets the
    /// beginning-of-text token. Special tokens are not parsed from raw text (as `lckv run`).
    fn text(&self, mut tokens: Vec<u32>, text: &str) -> Result<Prompt, String> {
        let first = tokens.is_empty();
        let new = self
            .tok
            .encode(text, first, false)
            .map_err(|e| e.to_string())?;
        tokens.extend_from_slice(&new);
        Ok(Prompt {
            history: History::Text(tokens.clone()),
            tokens,
        })
    }

    fn render(&self, messages: &[Message]) -> Result<Vec<u32>, String> {
        let text = self
            .template
            .render(messages, true)
            .map_err(|e| e.to_string())?;
        self.tok
            .encode(&text, true, true)
            .map_err(|e| e.to_string())
    }

    /// The tokens every chat starts with (the system prompt and what the template puts before
    /// the first user message): the shared start of two chats that differ only in their words.
    /// Prefilled before the first request, and what `--prompt-cache` saves.
    pub fn chat_prefix(&self) -> Result<Vec<u32>, String> {
        let a = self.render(&self.with_system(&[Message::new("user", "A")]))?;
        let b = self.render(&self.with_system(&[Message::new("user", "Z")]))?;
        let n = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        Ok(a[..n].to_vec())
    }
}

/// After a turn: the history with the answer, as the next turn continues it. A chat keeps the
/// answer's text (what was said, up to a stop string or a cancel); a text conversation the
/// tokens that went through the model.
pub fn with_answer(history: History, answer: &str, in_cache: &[u32]) -> History {
    match history {
        History::Chat(mut m) => {
            m.push(Message::new("assistant", answer));
            History::Chat(m)
        }
        History::Text(_) => History::Text(in_cache.to_vec()),
    }
}

//! What `lckv pipe` reads: one JSON object per line, turned into a `Line` with every check that
//! needs no model (types, required and unknown fields, sampling ranges). A bad line becomes
//! `Line::Bad` with a message that says what is wrong and what to send instead; checks that need
//! the model or the conversations (tokens, context, names) happen when the request runs.
//!
//! - `{"id": 1, "prompt": "text"}` or `{"id": 1, "messages": [{"role": "user", "content": ..}]}`,
//!   with `conversation`, `max_tokens`, `stop` and the sampling fields optional;
//! - `{"cancel": 1}` ends request 1 (running: within one token; waiting: before it starts);
//! - `{"forget": "kitchen"}` drops a conversation's history.

use serde_json::{Map, Value};

use crate::chat::Message;
use crate::sampler::SamplerConfig;
use crate::server::http::fields::{BadRequest, Fields};

/// What a request gets for the fields it leaves out: the command line's choices.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub sampling: SamplerConfig,
    pub max_tokens: usize,
}

/// What to answer: raw text to continue, or chat messages rendered through the chat template.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Prompt(String),
    Messages(Vec<Message>),
}

#[derive(Clone, Debug)]
pub struct Request {
    /// The client's id (a number or a string), echoed in every event of this request.
    pub id: Value,
    pub input: Input,
    /// Turns with the same conversation key continue one another and share the cached K/V.
    pub conversation: Option<String>,
    pub max_tokens: usize,
    pub sampling: SamplerConfig,
    pub stop: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum Line {
    Request(Box<Request>),
    Cancel(Value),
    Forget(String),
    /// A line that cannot be acted on; `id` when it had a usable one.
    Bad {
        id: Option<Value>,
        message: String,
    },
}

const REQUEST_FIELDS: &[&str] = &[
    "id",
    "prompt",
    "messages",
    "conversation",
    "max_tokens",
    "stop",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "seed",
];

const EXAMPLE: &str =
    r#"{"id":1,"prompt":"Hello"} or {"id":1,"messages":[{"role":"user","content":"Hello"}]}"#;

/// Reads one input line (`number` counts from 1, for messages).
pub fn parse_line(text: &str, number: usize, defaults: &Defaults) -> Line {
    let bad = |id: Option<Value>, why: String| Line::Bad {
        id,
        message: format!("line {number}: {why}"),
    };
    let map = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return bad(None, format!("expected a JSON object such as {EXAMPLE}")),
        Err(e) => {
            return bad(
                None,
                format!("not JSON ({e}); send one JSON object per line, such as {EXAMPLE}"),
            )
        }
    };
    if let Some(id) = map.get("cancel") {
        return match valid_id(id) {
            Some(id) if map.len() == 1 => Line::Cancel(id),
            Some(_) => bad(None, "a cancel line has only the 'cancel' field".into()),
            None => bad(
                None,
                "'cancel' must be the id (a number or a string) of the request to stop".into(),
            ),
        };
    }
    if let Some(name) = map.get("forget") {
        return match name {
            Value::String(s) if map.len() == 1 => Line::Forget(s.clone()),
            Value::String(_) => bad(None, "a forget line has only the 'forget' field".into()),
            _ => bad(
                None,
                "'forget' must be a conversation's name (a string)".into(),
            ),
        };
    }
    let id = match map.get("id") {
        None | Some(Value::Null) => {
            return bad(
                None,
                format!("no 'id': give each request an id (a number or a string) that its events will carry, such as {EXAMPLE}"),
            )
        }
        Some(v) => match valid_id(v) {
            Some(id) => id,
            None => return bad(None, format!("'id' must be a number or a string, got {v}")),
        },
    };
    match request(&map, id.clone(), defaults) {
        Ok(r) => Line::Request(Box::new(r)),
        Err(BadRequest(why)) => bad(Some(id), why),
    }
}

/// An id is a string or a number, compared as JSON.
fn valid_id(v: &Value) -> Option<Value> {
    matches!(v, Value::String(_) | Value::Number(_)).then(|| v.clone())
}

fn request(
    map: &Map<String, Value>,
    id: Value,
    d: &Defaults,
) -> std::result::Result<Request, BadRequest> {
    if let Some(k) = map.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
        return Err(BadRequest(format!(
            "unknown field '{k}'; a request takes {}",
            REQUEST_FIELDS.join(", ")
        )));
    }
    let f = Fields::new(map);
    let input = match (f.string("prompt")?, f.array("messages")?) {
        (Some(_), Some(_)) => {
            return Err(BadRequest(
                "give either 'prompt' or 'messages', not both".into(),
            ))
        }
        (None, None) => {
            return Err(BadRequest(format!(
            "a request needs 'prompt' (text to continue) or 'messages' (a chat), such as {EXAMPLE}"
        )))
        }
        (Some(""), None) => return Err(BadRequest("'prompt' is empty: give some text".into())),
        (Some(p), None) => Input::Prompt(p.to_string()),
        (None, Some(msgs)) => Input::Messages(messages(msgs)?),
    };
    let conversation = match f.string("conversation")? {
        Some("") => {
            return Err(BadRequest(
                "'conversation' is empty: name it, e.g. \"kitchen\"".into(),
            ))
        }
        c => c.map(str::to_string),
    };
    Ok(Request {
        id,
        input,
        conversation,
        max_tokens: f.count("max_tokens")?.unwrap_or(d.max_tokens),
        sampling: f.sampling_over(&d.sampling)?,
        stop: f.stop("stop")?,
    })
}

fn messages(list: &[Value]) -> std::result::Result<Vec<Message>, BadRequest> {
    if list.is_empty() {
        return Err(BadRequest(
            "'messages' is empty: give at least one {\"role\":\"user\",\"content\":...}".into(),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = |name: &str| match m.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(BadRequest(format!(
                    "'messages[{i}].{name}' must be a string; each message is {{\"role\":\"user\",\"content\":\"...\"}}"
                ))),
            };
            Ok(Message::new(field("role")?, field("content")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Line {
        let d = Defaults {
            sampling: SamplerConfig::default(),
            max_tokens: 64,
        };
        parse_line(text, 7, &d)
    }

    fn message(text: &str) -> (Option<Value>, String) {
        match parse(text) {
            Line::Bad { id, message } => (id, message),
            other => panic!("{text} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn requests_with_defaults_and_overrides() {
        let Line::Request(r) = parse(
            r#"{"id":"a","messages":[{"role":"user","content":"Hi"}],"conversation":"k","temperature":0,"stop":"."}"#,
        ) else {
            panic!("a valid request")
        };
        assert_eq!(r.id, Value::from("a"));
        assert_eq!(r.input, Input::Messages(vec![Message::new("user", "Hi")]));
        assert_eq!(r.conversation.as_deref(), Some("k"));
        assert_eq!((r.max_tokens, r.sampling.temperature), (64, 0.0));
        assert_eq!(r.sampling.seed, SamplerConfig::default().seed);
        assert_eq!(r.stop, ["."]);
        let Line::Request(r) = parse(r#"{"id":3,"prompt":"x","max_tokens":5,"seed":9}"#) else {
            panic!("a valid request")
        };
        assert_eq!((r.max_tokens, r.sampling.seed), (5, 9));
    }

    #[test]
    fn cancel_and_forget() {
        assert!(matches!(parse(r#"{"cancel":4}"#), Line::Cancel(v) if v == 4));
        assert!(matches!(parse(r#"{"forget":"k"}"#), Line::Forget(k) if k == "k"));
        assert!(message(r#"{"cancel":[1]}"#)
            .1
            .contains("'cancel' must be the id"));
        assert!(message(r#"{"forget":1}"#).1.contains("conversation's name"));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases = [
            ("hello", "line 7: not JSON"),
            ("[1]", "expected a JSON object"),
            ("{}", "no 'id'"),
            (
                r#"{"id":[1],"prompt":"x"}"#,
                "'id' must be a number or a string",
            ),
            (r#"{"id":1}"#, "needs 'prompt'"),
            (r#"{"id":1,"prompt":"a","messages":[]}"#, "not both"),
            (r#"{"id":1,"prompt":5}"#, "'prompt' must be a string"),
            (r#"{"id":1,"prompt":""}"#, "'prompt' is empty"),
            (r#"{"id":1,"messages":[]}"#, "'messages' is empty"),
            (
                r#"{"id":1,"messages":[{"role":"user"}]}"#,
                "'messages[0].content'",
            ),
            (
                r#"{"id":1,"prompt":"x","max_tokens":-1}"#,
                "'max_tokens' must be 0 or more",
            ),
            (
                r#"{"id":1,"prompt":"x","temperature":"hot"}"#,
                "'temperature' must be a number",
            ),
            (
                r#"{"id":1,"prompt":"x","conversation":""}"#,
                "'conversation' is empty",
            ),
            (
                r#"{"id":1,"prompt":"x","max_token":5}"#,
                "unknown field 'max_token'",
            ),
        ];
        for (line, want) in cases {
            let (_, m) = message(line);
            assert!(m.contains(want), "{line}: {m:?} should say {want:?}");
        }
        // Once the id is known, the error carries it.
        assert_eq!(message(r#"{"id":1,"prompt":5}"#).0, Some(Value::from(1)));
    }
}

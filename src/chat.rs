//! Chat templates: turns a conversation into the prompt text a model was trained on, by running
//! the model's own Jinja template (GGUF `tokenizer.chat_template`) through minijinja.
//!
//! The environment mimics the one Hugging Face `transformers` renders templates in, since that is
//! what template authors test against: trim_blocks + lstrip_blocks, loop controls, Python string
//! and dict methods, `raise_exception`, `strftime_now` and a `tojson` that writes JSON the way
//! Python's `json.dumps` does. `strftime_now` uses UTC (no time-zone data on small boards).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, ValueKind};
use minijinja::{Environment, ErrorKind, Value};

use crate::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A message as the template sees it: a mapping with `role` then `content`, in that order (as in
/// a Python dict), so `message|tojson` matches Hugging Face's output.
#[derive(Debug)]
struct MessageValue(Message);

impl Object for MessageValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "role" => Some(Value::from(self.0.role.as_str())),
            "content" => Some(Value::from(self.0.content.as_str())),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["role", "content"])
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// Prefix of the error a template's `raise_exception` produces, so `render` can tell a refusal
/// the template chose (a usage problem) from a template that is broken (a model problem).
const RAISED: &str = "raised by the chat template: ";

/// ChatML, the format llama.cpp falls back to when a model ships no template.
const CHATML: &str = "{%- for message in messages -%}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` once. A syntax error is reported with its line and what was expected.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| {
                Error::Model(format!(
                    "the chat template does not compile: {}; fix the template or pass one \
                     that compiles",
                    describe(&e)
                ))
            })?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The model's own template (GGUF `tokenizer.chat_template`) with its BOS and EOS text, or
    /// ChatML when the file has none, as llama.cpp does.
    pub fn for_model(
        model: &crate::model::Model,
        tok: &crate::tokenizer::Tokenizer,
    ) -> Result<ChatTemplate, Error> {
        let piece = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(tok.piece(i)).into_owned())
                .unwrap_or_default()
        };
        match model.file.get_str("tokenizer.chat_template")? {
            Some(src) => ChatTemplate::new(src, &piece(tok.bos()), &piece(tok.eos())),
            None => Ok(ChatTemplate::chatml()),
        }
    }

    /// The ChatML template, for models without their own.
    pub fn chatml() -> ChatTemplate {
        ChatTemplate::new(CHATML, "", "").expect("the built-in ChatML template compiles")
    }

    /// Renders the conversation; `add_generation_prompt` appends the opening of the assistant's
    /// turn. A template that refuses the conversation (`raise_exception`) gives a usage error
    /// with the template's message.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.render_at(messages, add_generation_prompt, now)
    }

    /// `render` with the clock fixed at `now` (seconds since the Unix epoch, UTC).
    pub(crate) fn render_at(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        now: i64,
    ) -> Result<String, Error> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Model(format!("chat template: {}", describe(&e))))?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| Value::from_object(MessageValue(m.clone())))
            .collect();
        let strftime_now = Value::from_function(move |format: &str| strftime(format, now));
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            strftime_now => strftime_now,
        };
        template.render(ctx).map_err(|e| match raised_message(&e) {
            Some(msg) => Error::Usage(format!(
                "the model's chat template rejected this conversation: {msg}"
            )),
            None => Error::Model(format!(
                "the chat template failed to render: {}; pass a template that works with \
                 this conversation",
                describe(&e)
            )),
        })
    }
}

/// The error as "kind: detail at line N", followed by the errors it wraps.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        let _ = write!(s, ": {detail}");
    }
    if let Some(line) = e.line() {
        let _ = write!(s, " at line {line} of the template");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let _ = write!(s, ": {inner}");
        source = inner.source();
    }
    s
}

/// The message a template passed to `raise_exception`, if that is what stopped it.
fn raised_message(e: &minijinja::Error) -> Option<&str> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(m) = err.downcast_ref::<minijinja::Error>() {
            if let Some(msg) = m.detail().and_then(|d| d.strip_prefix(RAISED)) {
                return Some(msg);
            }
        }
        cur = err.source();
    }
    None
}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

// ---------------------------------------------------------------------------------------------
// tojson, as Hugging Face defines it: json.dumps(x, ensure_ascii=False, indent=None,
// separators=None, sort_keys=False). Python's defaults differ from serde_json's compact output
// (", " and ": " separators), and minijinja's own tojson escapes HTML characters, so write it here.

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.max(0) as usize)),
            (None, Some(s)) => Some(s.to_owned()),
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ))
            }
        },
    };
    // Python's defaults: compact item separator when indenting (newlines follow anyway).
    let (mut item_sep, mut key_sep) = if indent.is_some() {
        (",".to_owned(), ": ".to_owned())
    } else {
        (", ".to_owned(), ": ".to_owned())
    };
    if let Some(seps) = separators.filter(|v| !v.is_none()) {
        let a = seps.get_item_by_index(0)?;
        let b = seps.get_item_by_index(1)?;
        match (a.as_str(), b.as_str()) {
            (Some(a), Some(b)) => {
                item_sep = a.to_owned();
                key_sep = b.to_owned();
            }
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: separators must be a pair of strings",
                ))
            }
        }
    }
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    out: &mut String,
    value: &Value,
    style: &JsonStyle,
    depth: usize,
) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = value.as_i64() {
                let _ = write!(out, "{i}");
            } else if value.is_integer() {
                // Integers beyond i64 (u64/i128) print as they are.
                let _ = write!(out, "{value}");
            } else {
                let f = f64::try_from(value.clone())?;
                if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else {
                    let _ = write!(out, "{f:?}");
                }
            }
        }
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or(""), style),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, '[', ']', items.len(), style, depth, |out, i| {
                write_json(out, &items[i], style, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            write_container(out, '{', '}', keys.len(), style, depth, |out, i| {
                let key = &keys[i];
                match key.as_str() {
                    Some(s) => write_json_string(out, s, style),
                    None => write_json_string(out, &key.to_string(), style),
                }
                out.push_str(&style.key_sep);
                write_json(out, &value.get_item(key)?, style, depth + 1)
            })?;
        }
        other => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {other} has no JSON form"),
            ))
        }
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    open: char,
    close: char,
    len: usize,
    style: &JsonStyle,
    depth: usize,
    mut item: impl FnMut(&mut String, usize) -> Result<(), minijinja::Error>,
) -> Result<(), minijinja::Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        if let Some(ind) = &style.indent {
            out.push('\n');
            out.push_str(&ind.repeat(depth + 1));
        }
        item(out, i)?;
    }
    if let Some(ind) = &style.indent {
        out.push('\n');
        out.push_str(&ind.repeat(depth));
    }
    out.push(close);
    Ok(())
}

fn write_json_string(out: &mut String, s: &str, style: &JsonStyle) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (style.ensure_ascii && (c as u32) > 0x7e) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// strftime_now: the subset of C strftime that chat templates use ("%d %b %Y", "%Y-%m-%d", ...),
// in the C locale, UTC.

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Proleptic Gregorian (year, month 1..=12, day 1..=31) of a day count since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to an era starting on 0000-03-01 so that leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn strftime(format: &str, unix: i64) -> Result<String, minijinja::Error> {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as usize;
    const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUMULATIVE[month as usize - 1] + day + u32::from(month > 2 && is_leap(year));
    let month_name = MONTHS[month as usize - 1];
    let day_name = WEEKDAYS[weekday];

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "strftime_now: the format ends with a lone '%'",
            ));
        };
        let _ = match spec {
            'Y' => write!(out, "{year}"),
            'y' => write!(out, "{:02}", year.rem_euclid(100)),
            'm' => write!(out, "{month:02}"),
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:2}"),
            'H' => write!(out, "{hour:02}"),
            'I' => write!(out, "{:02}", (hour + 11) % 12 + 1),
            'p' => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            'M' => write!(out, "{minute:02}"),
            'S' => write!(out, "{second:02}"),
            'j' => write!(out, "{yday:03}"),
            'B' => write!(out, "{month_name}"),
            'b' | 'h' => write!(out, "{}", &month_name[..3]),
            'A' => write!(out, "{day_name}"),
            'a' => write!(out, "{}", &day_name[..3]),
            'F' => write!(out, "{year}-{month:02}-{day:02}"),
            'T' => write!(out, "{hour:02}:{minute:02}:{second:02}"),
            '%' => write!(out, "%"),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: the format directive %{other} is not supported"),
                ))
            }
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
    }

    fn read(name: &str) -> String {
        let path = fixture_dir().join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("fixture field {key} missing in {v}"))
    }

    /// Every case rendered by tests/reference/render_chat_fixtures.py with Python's jinja2 in
    /// Hugging Face's environment must come out byte for byte the same here, errors included.
    #[test]
    fn renders_like_python_jinja2() {
        let expected: serde_json::Value =
            serde_json::from_str(&read("expected.json")).expect("expected.json parses");
        let now = expected["now_unix"].as_i64().expect("now_unix");
        let cases = expected["cases"].as_array().expect("cases");
        assert!(
            cases.len() >= 20,
            "only {} cases in expected.json",
            cases.len()
        );
        for case in cases {
            let name = str_field(case, "name");
            let template = ChatTemplate::new(
                &read(str_field(case, "template")),
                str_field(case, "bos_token"),
                str_field(case, "eos_token"),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| Message::new(str_field(m, "role"), str_field(m, "content")))
                .collect();
            let add = case["add_generation_prompt"].as_bool().expect("flag");
            let got = template.render_at(&messages, add, now);
            match (case.get("output"), case.get("error")) {
                (Some(out), _) => {
                    let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(got, out.as_str().unwrap(), "case {name}");
                }
                (None, Some(err)) => {
                    let e = got.expect_err(name);
                    assert!(matches!(e, Error::Usage(_)), "{name}: {e:?}");
                    let want = err.as_str().unwrap();
                    assert!(e.to_string().ends_with(want), "{name}: {e} lacks {want:?}");
                }
                _ => panic!("{name}: neither output nor error"),
            }
        }
    }

    #[test]
    fn chatml_source_is_the_fixture_python_rendered() {
        assert_eq!(CHATML, read("chatml.jinja"));
    }

    #[test]
    fn strftime_matches_python() {
        let expected: serde_json::Value =
            serde_json::from_str(&read("expected.json")).expect("expected.json parses");
        let cases = expected["strftime"].as_array().expect("strftime");
        assert!(!cases.is_empty());
        for c in cases {
            let unix = c["unix"].as_i64().unwrap();
            let format = str_field(c, "format");
            assert_eq!(
                strftime(format, unix).unwrap(),
                str_field(c, "output"),
                "{format} at {unix}"
            );
        }
        assert!(strftime("%Q", 0).is_err());
        assert!(strftime("50%", 0).is_err());
    }

    #[test]
    fn render_uses_the_clock() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
        let year: i64 = t.render(&[], false).unwrap().parse().unwrap();
        assert!((2024..3000).contains(&year), "year {year}");
    }

    #[test]
    fn syntax_error_names_the_problem_and_line() {
        let e = ChatTemplate::new("{% for m in messages %}\n{{ m.content }", "", "").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Model(_)), "{e:?}");
        assert!(
            msg.contains("does not compile") && msg.contains("at line 2"),
            "{msg}"
        );
    }

    #[test]
    fn runtime_failure_is_a_model_error() {
        let t = ChatTemplate::new("{{ messages[0].content | no_such_filter }}", "", "").unwrap();
        let e = t.render(&[Message::new("user", "hi")], false).unwrap_err();
        assert!(matches!(e, Error::Model(_)), "{e:?}");
        assert!(e.to_string().contains("no_such_filter"), "{e}");
    }

    #[test]
    fn raise_exception_carries_the_message() {
        let t = ChatTemplate::new(
            "{% if messages|length == 0 %}{{ raise_exception('no messages given') }}{% endif %}",
            "",
            "",
        )
        .unwrap();
        let e = t.render(&[], true).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the model's chat template rejected this conversation: no messages given"
        );
    }

    #[test]
    fn civil_dates_round_trip_known_days() {
        // Hand-checked: the epoch, the 2000 leap day, the day before the epoch.
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}

//! Reading the JSON of a request: the body as an object, and typed fields out of it with errors
//! that name the field, what it must be and what came instead. Shared by the OpenAI and Ollama
//! handlers, including the sampling fields both take (under the same names). A `null` field
//! counts as absent, as the clients send it for "not set".

use serde_json::{Map, Value};

use crate::sampler::SamplerConfig;

/// A request the server cannot act on; the message says what is wrong (HTTP 400).
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest(pub String);

type Result<T> = std::result::Result<T, BadRequest>;

/// The body as a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BadRequest(
            "the request body is empty: send a JSON object".into(),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(BadRequest(format!(
            "the request body must be a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(BadRequest(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a wrong value for an error message.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// The fields of one JSON object; `scope` prefixes field names in messages (e.g. "options.").
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    scope: &'static str,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Fields<'a> {
        Fields { map, scope: "" }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn wrong(&self, name: &str, want: &str, got: &Value) -> BadRequest {
        BadRequest(format!(
            "'{}{name}' must be {want}, got {} ({})",
            self.scope,
            kind(got),
            shown(got)
        ))
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn string(&self, name: &str) -> Result<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(name, "a string", v)),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(name, "true or false", v)),
        }
    }

    pub fn f32(&self, name: &str) -> Result<Option<f32>> {
        match self.get(name) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => match n.as_f64().map(|x| x as f32) {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.wrong(name, "a finite number", v)),
            },
            Some(v) => Err(self.wrong(name, "a number", v)),
        }
    }

    /// An integer (JSON numbers such as 5.0 count as integers, 5.5 does not).
    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                        .map(|x| x as i64)
                })
                .map(Some)
                .ok_or_else(|| self.wrong(name, "an integer", v)),
            Some(v) => Err(self.wrong(name, "an integer", v)),
        }
    }

    /// A count: an integer >= 0.
    pub fn count(&self, name: &str) -> Result<Option<usize>> {
        match self.int(name)? {
            None => Ok(None),
            Some(n) if n >= 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            Some(n) => Err(BadRequest(format!(
                "'{}{name}' must be 0 or more, got {n}",
                self.scope
            ))),
        }
    }

    pub fn array(&self, name: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong(name, "an array", v)),
        }
    }

    /// A nested object; its own fields' messages carry `scope`.
    pub fn object(&self, name: &str, scope: &'static str) -> Result<Option<Fields<'a>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Fields { map: m, scope })),
            Some(v) => Err(self.wrong(name, "an object", v)),
        }
    }

    /// Stop strings: one string or an array of strings.
    pub fn stop(&self, name: &str) -> Result<Vec<String>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong(name, "a string or an array of strings", other)),
                })
                .collect(),
            Some(v) => Err(self.wrong(name, "a string or an array of strings", v)),
        }
    }

    /// The sampling fields (`temperature`, `top_p`, `top_k`, `min_p`, `repeat_penalty`,
    /// `repeat_last_n`, `seed`) over the CLI's defaults. Without a seed (or with a negative one,
    /// Ollama's "random") each request draws its own.
    pub fn sampling(&self) -> Result<SamplerConfig> {
        self.sampling_over(&SamplerConfig {
            seed: super::random_u64(),
            ..SamplerConfig::default()
        })
    }

    /// The sampling fields over the given defaults (`lckv pipe`: its command line's). A negative
    /// seed draws one at random.
    pub fn sampling_over(&self, d: &SamplerConfig) -> Result<SamplerConfig> {
        let seed = match self.int("seed")? {
            Some(s) if s >= 0 => s as u64,
            Some(_) => super::random_u64(),
            None => d.seed,
        };
        let c = SamplerConfig {
            temperature: self.f32("temperature")?.unwrap_or(d.temperature),
            top_k: self.count("top_k")?.unwrap_or(d.top_k),
            top_p: self.f32("top_p")?.unwrap_or(d.top_p),
            min_p: self.f32("min_p")?.unwrap_or(d.min_p),
            repeat_penalty: self.f32("repeat_penalty")?.unwrap_or(d.repeat_penalty),
            repeat_last_n: self.count("repeat_last_n")?.unwrap_or(d.repeat_last_n),
            seed,
        };
        c.validate().map_err(BadRequest)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with<T>(v: Value, f: impl FnOnce(Fields) -> T) -> T {
        let Value::Object(m) = v else { unreachable!() };
        f(Fields::new(&m))
    }

    #[test]
    fn bodies() {
        assert!(parse_object(b" ").is_err());
        assert!(parse_object(b"{").unwrap_err().0.contains("not valid JSON"));
        assert!(parse_object(b"[1]").unwrap_err().0.contains("an array"));
        assert!(parse_object(br#"{"a":1}"#).is_ok());
    }

    #[test]
    fn typed_fields() {
        with(
            json!({"t": "x", "n": 5.0, "f": 5.5, "neg": -2, "s": ["a", "b"], "z": null}),
            |f| {
                assert!(f.f32("t").unwrap_err().0.contains("'t' must be a number"));
                assert_eq!(f.int("n").unwrap(), Some(5));
                assert!(f.int("f").is_err());
                assert!(f.count("neg").is_err());
                assert_eq!(f.stop("s").unwrap(), vec!["a", "b"]);
                assert_eq!(f.stop("t").unwrap(), vec!["x"]);
                assert!(f.stop("n").is_err());
                assert_eq!(f.string("z").unwrap(), None);
                assert!(!f.has("z"));
            },
        );
    }

    #[test]
    fn sampling_defaults_and_checks() {
        with(json!({"seed": 7}), |f| {
            let c = f.sampling().unwrap();
            assert_eq!(
                (c.temperature, c.top_k, c.top_p, c.seed),
                (0.8, 40, 0.95, 7)
            );
        });
        with(json!({"top_p": 0}), |f| assert!(f.sampling().is_err()));
        with(json!({"temperature": -1}), |f| {
            assert!(f.sampling().is_err())
        });
    }
}

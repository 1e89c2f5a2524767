//! `lckv pipe` driven as a voice pipeline drives it: the real binary on the real SmolLM2,
//! requests written to its stdin, events read from its stdout. Checks that:
//! - greedy answers (a raw prompt, a chat) equal `lckv run --temp 0` for the same prompt, and the
//!   sentences carry the same text;
//! - a conversation's second turn prefills only its new tokens and answers as a fresh run of the
//!   whole conversation does;
//! - a cancel stops a generation within one token and the next request is answered;
//! - each bad line gets one error event and the process goes on; EOF ends it with status 0;
//! - `--prompt-cache` saves the chat start once and restores it on the next start.
//!
//! One process at a time: on a two-core machine the cancel timing should not compete with
//! another test's generation.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const N: usize = 24;
const TIMEOUT: Duration = Duration::from_secs(60);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn model() -> String {
    common::model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
        .to_string_lossy()
        .into_owned()
}

/// `lckv run --temp 0 -n N`, as serve_clients does.
fn lckv_run(prompt: &str, chat: bool) -> String {
    let (m, n) = (model(), N.to_string());
    let mut args = vec!["run", "-m", &m, "--temp", "0", "-n", &n, "-p", prompt];
    if chat {
        args.push("--chat");
    }
    let out = common::lckv(&args);
    assert!(
        out.status.success(),
        "lckv run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("lckv run prints UTF-8");
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

/// A running `lckv pipe`, killed when dropped (a test that failed midway).
struct Pipe {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    /// stderr, read as it comes so the child never blocks on it.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Pipe {
    fn start(extra: &[&str]) -> Pipe {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lckv"))
            .args(["pipe", "-m", &model(), "--temp", "0"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting lckv pipe");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("reading events");
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("an event that is not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let stdin = child.stdin.take();
        let mut p = Pipe {
            child,
            stdin,
            events,
            stderr: Some(stderr),
        };
        assert_eq!(p.next()["event"], "ready");
        p
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .expect("writing a request");
    }

    fn next(&mut self) -> Value {
        match self.events.recv_timeout(TIMEOUT) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => panic!("no event within {TIMEOUT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("lckv pipe closed its stdout"),
        }
    }

    /// Events up to and including request `id`'s `done`.
    fn until_done(&mut self, id: &Value) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let e = self.next();
            let end = e["event"] == "done" && &e["id"] == id;
            got.push(e);
            if end {
                return got;
            }
        }
    }

    /// Closes stdin and waits for the exit status (and stderr).
    fn finish(mut self) -> (i32, String, Vec<Value>) {
        drop(self.stdin.take());
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waiting for lckv pipe") {
                break s;
            }
            assert!(t.elapsed() < TIMEOUT, "lckv pipe did not exit after EOF");
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        // The rest of the events, up to the end of stdout.
        let mut rest = Vec::new();
        while let Ok(e) = self.events.recv_timeout(TIMEOUT) {
            rest.push(e);
        }
        (status.code().unwrap_or(-1), err, rest)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of a request's token events, and its done event.
fn answer(events: &[Value]) -> (String, Value) {
    let text = events
        .iter()
        .filter(|e| e["event"] == "token")
        .map(|e| e["text"].as_str().expect("token text"))
        .collect();
    (text, events.last().cloned().expect("a done event"))
}

fn sentences(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "sentence")
        .map(|e| e["text"].as_str().expect("sentence text").to_string())
        .collect()
}

fn no_space(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn chat(id: u64, conversation: Option<&str>, content: &str, n: usize) -> String {
    let mut r =
        json!({"id": id, "messages": [{"role": "user", "content": content}], "max_tokens": n});
    if let Some(c) = conversation {
        r["conversation"] = json!(c);
    }
    r.to_string()
}

#[test]
fn greedy_answers_equal_lckv_run() {
    let _g = serial();
    let cases = [
        (false, "The sky is"),
        (true, "What is the capital of France?"),
        (true, "Write a haiku about the sea."),
    ];
    let mut p = Pipe::start(&[]);
    for (i, (is_chat, prompt)) in cases.into_iter().enumerate() {
        let id = json!(i);
        if is_chat {
            p.send(&chat(i as u64, None, prompt, N));
        } else {
            p.send(&json!({"id": i, "prompt": prompt, "max_tokens": N}).to_string());
        }
        let events = p.until_done(&id);
        let (text, done) = answer(&events);
        assert_eq!(text, lckv_run(prompt, is_chat), "{prompt:?}");
        assert_eq!(done["generated_tokens"], N, "{done}");
        assert_eq!(done["finish_reason"], "length");
        // The sentences are the same text, split (white space between them dropped).
        let spoken = sentences(&events);
        assert!(!spoken.is_empty(), "no sentence for {prompt:?}");
        assert_eq!(no_space(&spoken.concat()), no_space(&text));
    }
    let (code, err, _) = p.finish();
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_second_turn_prefills_only_its_new_tokens() {
    let _g = serial();
    let (q1, q2) = ("What is the capital of France?", "And of Italy?");
    let mut p = Pipe::start(&[]);
    p.send(&chat(1, Some("k"), q1, N));
    let (a1, d1) = answer(&p.until_done(&json!(1)));
    p.send(&chat(2, Some("k"), q2, N));
    let (a2, d2) = answer(&p.until_done(&json!(2)));
    let count = |d: &Value, k: &str| d[k].as_u64().unwrap_or_else(|| panic!("{k} in {d}"));
    // Turn one's prompt and answer are in the cache; turn two runs only what follows them.
    let before = count(&d1, "prompt_tokens") + count(&d1, "generated_tokens");
    assert!(count(&d2, "prompt_tokens") > before, "{d2}");
    assert_eq!(
        count(&d2, "prefilled_tokens"),
        count(&d2, "prompt_tokens") - before,
        "turn two re-ran part of turn one: {d2}"
    );
    p.finish();

    // A fresh process given the whole conversation at once answers the same.
    let mut fresh = Pipe::start(&[]);
    let whole = json!({"id": 3, "max_tokens": N, "messages": [
        {"role": "user", "content": q1},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": q2},
    ]});
    fresh.send(&whole.to_string());
    let (a3, d3) = answer(&fresh.until_done(&json!(3)));
    assert_eq!(a3, a2);
    assert_eq!(d3["prompt_tokens"], d2["prompt_tokens"]);
    assert!(count(&d3, "prefilled_tokens") > count(&d2, "prefilled_tokens"));
}

#[test]
fn cancel_stops_within_one_token_and_the_next_request_is_answered() {
    let _g = serial();
    let mut p = Pipe::start(&[]);
    let long = "Tell me a long story about a dragon who learns to bake bread. ".repeat(12);
    // Request and cancel together: the cancel is read while the prompt is prefilled, and the
    // loop sees it before running the first generated token.
    p.send(&format!(
        "{}\n{}",
        chat(1, None, &long, 400),
        json!({"cancel": 1})
    ));
    let (_, done) = answer(&p.until_done(&json!(1)));
    assert_eq!(done["finish_reason"], "cancelled", "{done}");
    assert_eq!(done["generated_tokens"], 1, "{done}");

    // A cancel sent on the first token event (barge-in).
    p.send(&chat(2, None, &long, 400));
    let mut events = Vec::new();
    loop {
        let e = p.next();
        let first = e["event"] == "token";
        events.push(e);
        if first {
            p.send(&json!({"cancel": 2}).to_string());
            break;
        }
    }
    let after = p.until_done(&json!(2));
    assert!(
        after.iter().all(|e| e["event"] != "sentence"),
        "no sentence after a cancel: {after:?}"
    );
    events.extend(after);
    let (_, done) = answer(&events);
    assert_eq!(done["finish_reason"], "cancelled", "{done}");
    let n = done["generated_tokens"].as_u64().unwrap();
    assert!(n < 20, "{n} tokens after a cancel on the first: {done}");

    // A waiting request can be cancelled before it starts.
    p.send(&format!(
        "{}\n{}\n{}",
        chat(3, None, &long, 30),
        chat(4, None, "Hi", 5),
        json!({"cancel": 4})
    ));
    let events = p.until_done(&json!(4));
    let done4 = events.last().unwrap();
    assert_eq!(
        (&done4["finish_reason"], &done4["generated_tokens"]),
        (&json!("cancelled"), &json!(0))
    );
    p.until_done(&json!(3));

    p.send(&json!({"id": 5, "prompt": "The sky is", "max_tokens": N}).to_string());
    let (text, done) = answer(&p.until_done(&json!(5)));
    assert_eq!(done["finish_reason"], "length");
    assert_eq!(text, lckv_run("The sky is", false));
    let (code, err, _) = p.finish();
    assert_eq!(code, 0, "{err}");
}

#[test]
fn each_bad_line_gets_one_error_and_the_process_goes_on() {
    let _g = serial();
    let mut p = Pipe::start(&["-c", "64"]);
    let oversized = "one two three four five six seven eight nine ten ".repeat(10);
    let bad = [
        ("garbage".to_string(), "not JSON"),
        ("{}".to_string(), "no 'id'"),
        (
            r#"{"id":1,"prompt":5}"#.to_string(),
            "'prompt' must be a string",
        ),
        (
            r#"{"id":2,"prompt":"x","max_tokens":"many"}"#.to_string(),
            "'max_tokens' must be an integer",
        ),
        (r#"{"cancel":77}"#.to_string(), "nothing to cancel"),
        (
            r#"{"forget":"nope"}"#.to_string(),
            "unknown conversation 'nope'",
        ),
        (
            json!({"id": 3, "prompt": oversized}).to_string(),
            "larger -c",
        ),
        (chat(4, Some("k"), "Hi", 4), ""),
        (
            json!({"id": 5, "conversation": "k", "prompt": "text"}).to_string(),
            "this conversation is a chat",
        ),
    ];
    for (line, _) in &bad {
        p.send(line);
    }
    p.send(&json!({"id": 9, "prompt": "The sky is", "max_tokens": 4}).to_string());
    let events = p.until_done(&json!(9));
    let errors: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "error")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    let wanted: Vec<&str> = bad.iter().map(|b| b.1).filter(|w| !w.is_empty()).collect();
    assert_eq!(errors.len(), wanted.len(), "{errors:#?}");
    for want in wanted {
        assert!(
            errors.iter().filter(|m| m.contains(want)).count() == 1,
            "one error saying {want:?} in {errors:#?}"
        );
    }
    let done = events.last().unwrap();
    assert_eq!(done["generated_tokens"], 4);
    let (code, err, _) = p.finish();
    assert_eq!(code, 0, "{err}");
}

#[test]
fn eof_finishes_the_running_generation_then_exits_zero() {
    let _g = serial();
    let mut p = Pipe::start(&[]);
    p.send(&json!({"id": 1, "prompt": "Once upon a time there was", "max_tokens": 48}).to_string());
    p.send(&json!({"id": 2, "prompt": "The sky is", "max_tokens": 8}).to_string());
    assert_eq!(p.next()["event"], "token");
    let (code, err, rest) = p.finish();
    assert_eq!(code, 0, "{err}");
    let dones: Vec<&Value> = rest.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!(dones.len(), 2, "every request read is answered: {rest:?}");
    assert_eq!(dones[0]["generated_tokens"], 48);
}

#[test]
fn the_prompt_cache_holds_the_chat_start_across_starts() {
    let _g = serial();
    let file = std::env::temp_dir().join(format!("lckv-pipe-{}.cache", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let path = file.to_string_lossy().into_owned();
    let sys = ["--system", "You are a kitchen assistant. Answer briefly."];
    let mut texts = Vec::new();
    for start in 0..2 {
        let mut p = Pipe::start(&[&["--prompt-cache", &path][..], &sys[..]].concat());
        p.send(&chat(1, None, "How long do I boil an egg?", N));
        let (text, done) = answer(&p.until_done(&json!(1)));
        texts.push(text);
        let (code, err, _) = p.finish();
        assert_eq!(code, 0, "{err}");
        if start == 0 {
            assert!(err.contains("(0 from the prompt cache)"), "{err}");
            assert!(
                err.contains("saved"),
                "the first start saves the cache: {err}"
            );
        } else {
            assert!(!err.contains("(0 from the prompt cache)"), "{err}");
            assert!(
                !err.contains("saved"),
                "the second start restores it: {err}"
            );
        }
        assert!(done["prefilled_tokens"].as_u64() < done["prompt_tokens"].as_u64());
    }
    assert_eq!(texts[0], texts[1]);
    let _ = std::fs::remove_file(&file);
}

//! `lckv serve` driven by real clients: the official `openai` and `ollama` Python packages (run
//! from the project venv, scripts/setup_venv.sh) and plain HTTP. Each test starts the server on
//! a free loopback port with the real SmolLM2 and four sessions, and checks that:
//! - greedy answers through both APIs, streamed and not, equal `lckv run --temp 0 -n N` (with
//!   `--chat` for chat) for the same prompt, also when four clients ask at once;
//! - errors have the right status (400 malformed JSON or a wrong field type, 413 a huge body,
//!   401 without the API key, 404, 405) and /metrics has the counters;
//! - a client that leaves mid-generation frees its session;
//! - 503 with Retry-After when every session and the queue are taken;
//! - SIGTERM while a stream is in flight ends the stream with an error and exits 0.
//!
//! The servers are started one test at a time: on a two-core machine, timing checks (a session
//! freed within seconds) should not compete with another server's generation.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Tokens per greedy answer.
const N: usize = 24;
const CHAT_PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colors.",
    "Explain what a CPU does in one sentence.",
];
const TEXT_PROMPTS: [&str; 2] = ["The sky is", "Once upon a time there was"];
/// A raw prompt and a stop string its greedy answer contains.
const STOP_CASE: (&str, &str) = ("The sky is", ",");
const KEY: &str = "serve-test-key";

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn model() -> String {
    common::model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
        .to_string_lossy()
        .into_owned()
}

/// `lckv run --temp 0 -n N` for a prompt: the reference every API answer must equal.
fn lckv_run(prompt: &str, chat: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lckv"));
    cmd.args(["run", "-m", &model(), "--temp", "0", "-n", &N.to_string()])
        .args(["-p", prompt]);
    if chat {
        cmd.arg("--chat");
    }
    let out = cmd.output().expect("running lckv run");
    assert!(
        out.status.success(),
        "lckv run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("lckv run prints UTF-8");
    // `run` ends its output with one newline of its own.
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

/// Greedy references, computed once: (chat?, prompt) -> text.
fn expected() -> &'static HashMap<(bool, String), String> {
    static EXPECTED: OnceLock<HashMap<(bool, String), String>> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let mut m = HashMap::new();
        for p in CHAT_PROMPTS {
            m.insert((true, p.to_string()), lckv_run(p, true));
        }
        for p in TEXT_PROMPTS {
            m.insert((false, p.to_string()), lckv_run(p, false));
        }
        m
    })
}

fn reference(chat: bool, prompt: &str) -> &'static str {
    &expected()[&(chat, prompt.to_string())]
}

/// A running `lckv serve`, killed when dropped (a test that failed midway).
struct Server {
    child: Child,
    /// host:port
    addr: String,
    log: PathBuf,
}

impl Server {
    fn start(name: &str, extra: &[&str]) -> Server {
        let log =
            std::env::temp_dir().join(format!("lckv-serve-{name}-{}.log", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_lckv"))
            .args(["serve", "-m", &model(), "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("creating the server log"))
            .spawn()
            .expect("starting lckv serve");
        // The one line on stdout names the address once the server is ready.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let mut server = Server {
            child,
            addr: String::new(),
            log,
        };
        let Some(addr) = line
            .trim()
            .rsplit("http://")
            .next()
            .filter(|_| line.contains("http://"))
        else {
            panic!(
                "lckv serve did not say where it listens: {line:?}\n{}",
                server.log_text()
            );
        };
        server.addr = addr.to_string();
        let t = Instant::now();
        loop {
            match server.request("GET", "/health", None, &[]) {
                Ok((200, _, _)) => break,
                _ if t.elapsed() > Duration::from_secs(30) => {
                    panic!("/health never answered 200\n{}", server.log_text())
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        server
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on its own connection: (status, head, body).
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, String, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or("");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        s.write_all(format!("{head}\r\n{body}").as_bytes())?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, head.to_string(), body.to_string()))
    }

    /// Runs a script of tests/clients with the venv's Python; its stdout as JSON.
    fn python(&self, script: &str, args: &[String]) -> Value {
        let path = common::repo_root().join("tests/clients").join(script);
        let out = Command::new(common::venv_python())
            .arg(&path)
            .arg(self.url())
            .args(args)
            .output()
            .expect("running the venv's python");
        assert!(
            out.status.success(),
            "{script} failed (a missing package means: run scripts/setup_venv.sh):\n{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{script} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Waits for the process to exit, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for lckv serve") {
                return status;
            }
            assert!(
                t.elapsed() < limit,
                "lckv serve did not exit within {limit:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn cases() -> String {
    serde_json::json!({
        "chat": CHAT_PROMPTS,
        "text": TEXT_PROMPTS,
        "stop": [STOP_CASE.0, STOP_CASE.1],
    })
    .to_string()
}

/// One answer as a script reports it: its text matches the reference, and its finish and token
/// count agree (a full N tokens is "length", fewer is "stop").
fn check_answer(what: &str, got: &Value, want: &str) {
    let text = got["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no text in {got}"));
    assert_eq!(
        text, want,
        "{what}: the server's greedy answer differs from lckv run"
    );
    let finish = got["finish"].as_str().unwrap_or_default();
    match got["tokens"].as_u64() {
        Some(n) if n as usize == N => assert_eq!(finish, "length", "{what}: {got}"),
        Some(_) => assert_eq!(finish, "stop", "{what}: {got}"),
        None => assert!(finish == "length" || finish == "stop", "{what}: {got}"),
    }
}

fn check_all(out: &Value, groups: &[(&str, bool)]) {
    for &(group, chat) in groups {
        let prompts: &[&str] = if chat { &CHAT_PROMPTS } else { &TEXT_PROMPTS };
        for p in prompts {
            let got = &out[group][*p];
            check_answer(&format!("{group} {p:?}"), got, reference(chat, p));
        }
    }
}

fn check_stop(out: &Value) {
    let (prompt, stop) = STOP_CASE;
    let full = reference(false, prompt);
    let at = full
        .find(stop)
        .unwrap_or_else(|| panic!("the greedy answer {full:?} has no {stop:?} to stop at"));
    assert_eq!(
        out["stop"]["text"],
        full[..at],
        "stop string: {}",
        out["stop"]
    );
    assert_eq!(
        out["stop"]["finish"], "stop",
        "stop string: {}",
        out["stop"]
    );
}

fn client_args() -> Vec<String> {
    vec![KEY.into(), N.to_string(), cases()]
}

#[test]
fn openai_client_answers_as_the_cli() {
    let _one = serial();
    expected();
    let server = Server::start("openai", &["--parallel", "4", "--api-key", KEY]);
    let out = server.python("openai_client.py", &client_args());
    assert_eq!(
        out["model"], "SmolLM2-135M-Instruct.Q4_1",
        "GET /v1/models names the model after its file"
    );
    check_all(
        &out,
        &[
            ("chat", true),
            ("chat_stream", true),
            ("text", false),
            ("text_stream", false),
        ],
    );
    check_stop(&out);
}

#[test]
fn ollama_client_answers_as_the_cli() {
    let _one = serial();
    expected();
    let server = Server::start("ollama", &["--parallel", "4", "--api-key", KEY]);
    let out = server.python("ollama_client.py", &client_args());
    check_all(
        &out,
        &[
            ("chat", true),
            ("chat_stream", true),
            // /api/generate renders the prompt through the chat template unless raw.
            ("templated", true),
            ("raw", false),
            ("raw_stream", false),
        ],
    );
    check_stop(&out);
}

/// Four clients of each API at once, on the four chat prompts: each gets the answer it gets
/// alone, whatever else the engine decodes in the same batch.
#[test]
fn four_concurrent_clients_get_their_single_client_answers() {
    let _one = serial();
    expected();
    let server = Server::start("concurrent", &["--parallel", "4", "--api-key", KEY]);
    let mut args = client_args();
    args.push("--concurrent".into());
    for script in ["openai_client.py", "ollama_client.py"] {
        let out = server.python(script, &args);
        for p in CHAT_PROMPTS {
            check_answer(
                &format!("{script}, four at once, {p:?}"),
                &out["concurrent"][p],
                reference(true, p),
            );
        }
    }
}

#[test]
fn http_errors_limits_metrics_and_disconnects() {
    let _one = serial();
    let server = Server::start("http", &["--parallel", "4", "--api-key", KEY]);
    let out = server.python("http_checks.py", &[KEY.into()]);
    for key in [
        "freed_after_stream_disconnect_s",
        "freed_after_whole_disconnect_s",
    ] {
        let s = out[key].as_f64().unwrap_or(f64::MAX);
        assert!(s < 5.0, "{key}: {s}");
    }
    // Garbage that is not HTTP at all gets a 400 and a closed connection, not a hang.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x16\x03\x01 not http\r\n\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw:?}");
    // The server still answers afterwards.
    let (status, _, _) = server.request("GET", "/health", None, &[]).unwrap();
    assert_eq!(status, 200);
}

/// Reads one HTTP response head off `s`, then returns what else is readable.
fn read_head(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut b = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => raw.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

fn start_stream(server: &Server, num_predict: usize) -> TcpStream {
    let body = serde_json::json!({
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
        "raw": true,
        "options": { "temperature": 0, "num_predict": num_predict },
    })
    .to_string();
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

#[test]
fn busy_then_sigterm_during_a_stream_exits_zero() {
    let _one = serial();
    let mut server = Server::start("sigterm", &["--parallel", "1", "--queue", "1"]);
    // One request generating, one waiting: the third is refused with 503 and Retry-After.
    let mut generating = start_stream(&server, 1500);
    let head = read_head(&mut generating);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let mut waiting = start_stream(&server, 1500);
    let t = Instant::now();
    while !server
        .request("GET", "/metrics", None, &[])
        .unwrap()
        .2
        .contains("\nlckv_sessions_queued 1\n")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the second request never queued"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, head, body) = server
        .request("POST", "/v1/completions", Some(r#"{"prompt":"hi"}"#), &[])
        .unwrap();
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(head.contains("Retry-After: 1"), "{head}");

    let kill = Command::new("kill")
        .args(["-TERM", &server.pid()])
        .status()
        .unwrap();
    assert!(kill.success());
    // The stream in flight ends with an error object and a proper end of the chunked body.
    let mut rest = String::new();
    let _ = generating.read_to_string(&mut rest);
    assert!(
        rest.contains(r#""error":"the server is shutting down""#),
        "{rest}"
    );
    assert!(rest.ends_with("0\r\n\r\n"), "{rest:?}");
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    // The queued request was answered too (an error: the server stopped before its turn).
    let mut queued = String::new();
    let _ = waiting.read_to_string(&mut queued);
    assert!(queued.contains("HTTP/1.1 503 "), "{queued}");
}

/// One non-streaming greedy chat completion: (answer, usage).
fn chat(server: &Server, messages: &Value) -> (String, Value) {
    let body = serde_json::json!({
        "model": "m", "messages": messages, "temperature": 0, "max_tokens": N,
    })
    .to_string();
    let (status, _, out) = server
        .request("POST", "/v1/chat/completions", Some(&body), &[])
        .expect("a chat request");
    assert_eq!(status, 200, "{out}\n{}", server.log_text());
    let v: Value = serde_json::from_str(&out).expect("a JSON answer");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    (text.to_string(), v["usage"].clone())
}

fn cached(usage: &Value) -> u64 {
    usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached_tokens")
}

#[test]
fn prompt_cache_and_prefix_reuse_keep_the_answers() {
    let _one = serial();
    expected();
    let file = std::env::temp_dir().join(format!("lckv-serve-pc-{}.bin", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let pc = file.to_str().unwrap();
    let user = |p: &str| serde_json::json!([{"role": "user", "content": p}]);
    let (p0, p1) = (CHAT_PROMPTS[0], CHAT_PROMPTS[1]);

    // First start: no file yet; the first prompt is computed and saved, and the second shares
    // the chat template's system prefix with it.
    let server = Server::start("pcache1", &["--parallel", "2", "--prompt-cache", pc]);
    let (a0, u0) = chat(&server, &user(p0));
    assert_eq!(
        a0,
        reference(true, p0),
        "first request: differs from lckv run"
    );
    assert_eq!(cached(&u0), 0, "{u0}");
    assert!(
        file.exists(),
        "the prompt cache was not saved\n{}",
        server.log_text()
    );
    let (a1, u1) = chat(&server, &user(p1));
    assert_eq!(
        a1,
        reference(true, p1),
        "second request: differs from lckv run"
    );
    assert!(
        cached(&u1) > 0,
        "the shared system prefix was computed again: {u1}"
    );

    // The next turn of the first conversation reuses its prompt and answer.
    let turn2 = serde_json::json!([
        {"role": "user", "content": p0},
        {"role": "assistant", "content": a0},
        {"role": "user", "content": "And of Italy?"},
    ]);
    let (t2, ut2) = chat(&server, &turn2);
    assert!(
        cached(&ut2) > u0["prompt_tokens"].as_u64().unwrap(),
        "turn two did not reuse turn one's prompt and answer: {ut2} after {u0}"
    );
    drop(server);

    // Second start: the file is restored; every prompt token but the last comes from it.
    let server = Server::start("pcache2", &["--parallel", "2", "--prompt-cache", pc]);
    assert!(
        server.log_text().contains("tokens restored"),
        "{}",
        server.log_text()
    );
    let (a0b, u0b) = chat(&server, &user(p0));
    assert_eq!(
        a0b,
        reference(true, p0),
        "restored request: differs from lckv run"
    );
    assert_eq!(
        cached(&u0b) + 1,
        u0b["prompt_tokens"].as_u64().unwrap(),
        "{u0b}"
    );
    let (_, _, metrics) = server.request("GET", "/metrics", None, &[]).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lckv_prompt_tokens_reused_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    drop(server);

    // Turn two computed from nothing gives the same answer as with reuse.
    let fresh = Server::start("pcache3", &["--parallel", "1"]);
    let (t2_fresh, uf) = chat(&fresh, &turn2);
    assert_eq!(cached(&uf), 0);
    assert_eq!(t2, t2_fresh, "turn two differs with and without reuse");
    let _ = std::fs::remove_file(&file);
}

//! `lckv serve` under a pretend systemd: the test binds its own notify socket (a unix datagram
//! socket, as systemd's), starts the real binary on the real SmolLM2 with NOTIFY_SOCKET,
//! WATCHDOG_USEC and WATCHDOG_PID set, and checks what arrives:
//! - READY=1 once the model is loaded and the arena is resident (the process's anonymous
//!   memory already holds every session's KV cache), before any request;
//! - WATCHDOG=1 repeating within the interval while idle, STATUS= lines, one with tokens/s
//!   after a request, and STOPPING=1 after SIGTERM, which exits 0;
//! - with the engine loop stalled on purpose (serve's hidden test-only flag), the pings stop
//!   while the process lives and its HTTP thread still answers /health;
//! - socket activation: a listener passed as fd 3 with LISTEN_FDS=1 and LISTEN_PID is where
//!   serve answers (its --host would not even resolve), and an fd 3 that is not a socket is a
//!   clear error.
//!
//! The children are started through `sh -c '... exec lckv ...'` so that `$$`, the shell's pid,
//! is the server's pid after exec: that is how WATCHDOG_PID and LISTEN_PID name the server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// WATCHDOG_USEC the tests set: pings are due every 200 ms.
const WATCHDOG: Duration = Duration::from_millis(400);

/// One server at a time: timing checks should not compete with another server's startup.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn model() -> String {
    common::model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
        .to_string_lossy()
        .into_owned()
}

/// The notify socket: messages with their arrival time, received on a thread.
struct NotifySocket {
    path: PathBuf,
    rx: Receiver<(Instant, String)>,
    start: Instant,
    seen: Vec<(Duration, String)>,
}

impl NotifySocket {
    fn bind(name: &str) -> NotifySocket {
        let path =
            std::env::temp_dir().join(format!("lckv-notify-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("binding the notify socket");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx.send((Instant::now(), msg)).is_err() {
                    return;
                }
            }
        });
        NotifySocket {
            path,
            rx,
            start: Instant::now(),
            seen: Vec::new(),
        }
    }

    /// Collects messages for `d`.
    fn collect_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok((t, m)) => self.seen.push((t - self.start, m)),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => panic!("the notify socket closed"),
            }
        }
    }

    /// Collects until a message equal to `want` arrives; panics after `limit`.
    fn wait_for(&mut self, want: &str, limit: Duration) -> Duration {
        let end = Instant::now() + limit;
        loop {
            let left = end
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no {want} within {limit:?}; got {:?}", self.seen));
            match self.rx.recv_timeout(left) {
                Ok((t, m)) => {
                    self.seen.push((t - self.start, m.clone()));
                    if m == want {
                        return t - self.start;
                    }
                }
                Err(_) => panic!("no {want} within {limit:?}; got {:?}", self.seen),
            }
        }
    }

    /// Arrival times of the messages equal to `msg`.
    fn times_of(&self, msg: &str) -> Vec<Duration> {
        self.seen
            .iter()
            .filter(|(_, m)| m == msg)
            .map(|&(t, _)| t)
            .collect()
    }

    fn print(&self, what: &str) {
        eprintln!("notify messages ({what}):");
        for (t, m) in &self.seen {
            eprintln!("  {:>8.3} s  {m}", t.as_secs_f64());
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A running server (killed when dropped) and the address its one stdout line names.
struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Server {
    /// Runs `prelude` in sh, then execs `lckv serve -m MODEL ARGS` in the same process.
    fn start(name: &str, prelude: &str, mut cmd: Command, args: &[&str]) -> Server {
        let log = std::env::temp_dir().join(format!("lckv-sd-{name}-{}.log", std::process::id()));
        let script = format!("{prelude} exec \"$0\" \"$@\"");
        let mut child = cmd
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_lckv"))
            .args(["serve", "-m", &model()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("creating the server log"))
            .spawn()
            .expect("starting lckv serve");
        drop(cmd);
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
        match line.trim().rsplit_once("http://") {
            Some((_, addr)) => server.addr = addr.to_string(),
            None => panic!(
                "lckv serve did not say where it listens: {line:?}\n{}",
                server.log_text()
            ),
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on its own connection: (status, body).
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connecting to lckv serve");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("reading the answer");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body.to_string())
    }

    fn complete(&self) -> String {
        let (status, body) = self.request(
            "POST",
            "/v1/completions",
            r#"{"prompt":"The sky is","max_tokens":16,"temperature":0}"#,
        );
        assert_eq!(status, 200, "{body}\n{}", self.log_text());
        body
    }

    fn sigterm_and_wait(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(ok.success());
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for lckv serve") {
                return status;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "lckv serve did not exit after SIGTERM\n{}",
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

/// `sh` with the notify variables of a service whose watchdog is WATCHDOG.
fn notified_sh(sock: &NotifySocket) -> Command {
    let mut cmd = Command::new("sh");
    cmd.env("NOTIFY_SOCKET", &sock.path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string());
    cmd
}

/// A field of /proc/PID/status in bytes (the kernel gives kB).
fn proc_status_bytes(pid: u32, field: &str) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        * 1024
}

/// A gauge of /metrics.
fn metric(server: &Server, name: &str) -> f64 {
    let (status, body) = server.request("GET", "/metrics", "");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

/// Tokens/s a STATUS= line reports.
fn status_rate(msg: &str) -> Option<f64> {
    let rest = msg.strip_prefix("STATUS=")?.strip_suffix(" tok/s")?;
    rest.rsplit(' ').next()?.parse().ok()
}

#[test]
fn ready_watchdog_status_and_stopping_in_order() {
    let _serial = serial();
    let mut sock = NotifySocket::bind("order");
    let mut server = Server::start(
        "order",
        "WATCHDOG_PID=$$ && export WATCHDOG_PID &&",
        notified_sh(&sock),
        &["--port", "0", "--parallel", "2", "-c", "1024"],
    );
    let ready = sock.wait_for("READY=1", Duration::from_secs(10));
    // Resident before the first request: the arena (both sessions' KV caches and more) was
    // touched before READY, so the process's anonymous memory already holds it.
    let anon = proc_status_bytes(server.pid(), "RssAnon");
    let kv = metric(&server, "lckv_kv_capacity_bytes") as usize;
    assert!(
        anon >= kv,
        "RssAnon {anon} B at READY is below the KV capacity {kv} B: the arena was not touched"
    );
    let (status, body) = server.request("GET", "/health", "");
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");

    // Idle: the loop still wakes and pings within the interval.
    sock.collect_for(Duration::from_millis(1500));
    let pings: Vec<Duration> = sock
        .times_of("WATCHDOG=1")
        .into_iter()
        .filter(|&t| t > ready)
        .collect();
    assert!(
        pings.len() >= 4,
        "too few pings while idle: {:?}",
        sock.seen
    );
    let worst = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        worst < WATCHDOG,
        "pings {worst:?} apart exceed the watchdog's {WATCHDOG:?}"
    );

    server.complete();
    sock.collect_for(Duration::from_millis(2500));
    let rates: Vec<f64> = sock
        .seen
        .iter()
        .filter_map(|(_, m)| status_rate(m))
        .collect();
    assert!(
        rates.iter().any(|&r| r > 0.0),
        "no STATUS= with tokens/s after a request: {:?}",
        sock.seen
    );

    let exit = server.sigterm_and_wait();
    sock.collect_for(Duration::from_millis(300));
    sock.print("start, idle, one request, SIGTERM");
    assert!(exit.success(), "exit {exit:?}\n{}", server.log_text());
    let first = |m: &str| sock.seen.iter().position(|(_, x)| x == m);
    let (Some(r), Some(s)) = (first("READY=1"), first("STOPPING=1")) else {
        panic!("READY=1 and STOPPING=1 expected: {:?}", sock.seen)
    };
    assert!(r < s, "STOPPING=1 before READY=1: {:?}", sock.seen);
    assert_eq!(sock.times_of("READY=1").len(), 1, "READY=1 more than once");
    assert_eq!(
        sock.seen.first().map(|(_, m)| m.as_str()),
        Some("STATUS=loading the model")
    );
}

#[test]
fn a_stalled_engine_loop_stops_the_pings() {
    let _serial = serial();
    let mut sock = NotifySocket::bind("stall");
    let stall = Duration::from_millis(2500);
    let mut server = Server::start(
        "stall",
        "WATCHDOG_PID=$$ && export WATCHDOG_PID &&",
        notified_sh(&sock),
        &[
            "--port",
            "0",
            "--parallel",
            "1",
            "-c",
            "512",
            "--test-stall-engine-after-ms",
            &stall.as_millis().to_string(),
        ],
    );
    sock.wait_for("READY=1", Duration::from_secs(10));
    sock.collect_for(stall + Duration::from_secs(3));
    sock.print("loop stalled after 2.5 s");
    let pings = sock.times_of("WATCHDOG=1");
    let last = *pings.last().expect("pings before the stall");
    assert!(
        pings.len() >= 4,
        "too few pings before the stall: {:?}",
        sock.seen
    );
    let silent = sock.start.elapsed() - last;
    assert!(
        silent >= Duration::from_secs(2),
        "pings went on for a stalled loop (last {silent:?} ago): {:?}",
        sock.seen
    );
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "the process should live on"
    );
    // The HTTP side still answers, which is why the pings come from the loop itself.
    assert_eq!(server.request("GET", "/health", "").0, 200);
    assert!(server.log_text().contains("stalls now"));
}

#[test]
fn socket_activation_serves_on_the_passed_listener() {
    let _serial = serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The listener goes in as stdin, and the shell moves it to fd 3 as systemd would pass it.
    let mut cmd = Command::new("sh");
    cmd.stdin(Stdio::from(OwnedFd::from(listener)));
    let mut server = Server::start(
        "activation",
        "exec 3<&0 0</dev/null && LISTEN_PID=$$ LISTEN_FDS=1 && export LISTEN_PID LISTEN_FDS &&",
        cmd,
        &[
            "--host",
            "no-such-host.invalid",
            "--parallel",
            "1",
            "-c",
            "512",
        ],
    );
    assert_eq!(server.addr, format!("127.0.0.1:{port}"));
    let (status, _) = server.request("GET", "/health", "");
    assert_eq!(status, 200, "{}", server.log_text());
    assert!(server.complete().contains("\"text\""));
    assert!(server.log_text().contains("socket systemd passed"));
    assert!(server.sigterm_and_wait().success(), "{}", server.log_text());
}

#[test]
fn a_passed_fd_that_is_no_socket_is_a_clear_error() {
    let out = Command::new("sh")
        .arg("-c")
        .arg("exec 3</dev/null && LISTEN_PID=$$ LISTEN_FDS=1 && export LISTEN_PID LISTEN_FDS && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_lckv"))
        .args(["serve", "-m", &model()])
        .output()
        .expect("running lckv serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not a listening TCP socket"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

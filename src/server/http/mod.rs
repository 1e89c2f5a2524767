//! The HTTP server: thin translations of the OpenAI and Ollama APIs onto an `EngineHandle`.
//! One thread accepts connections and gives each its own thread (at most `MAX_CONNECTIONS`),
//! which reads its requests in turn, routes them (`routes`), and answers whole or streamed. The
//! engine runs on its own thread; a handler only submits a request and translates the events
//! that come back (`generation`), so a slow or vanished client costs a thread, never the engine.
//!
//! `wire` frames HTTP/1.1, `fields` reads the JSON, `openai` and `ollama` speak the two APIs,
//! `observe` answers /health and /metrics.

pub mod fields;
mod generation;
mod observe;
mod ollama;
mod openai;
mod routes;
pub mod wire;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::server::request::EngineHandle;
use wire::{Connection, ReadError};

/// Connections served at once; more are answered 503 and closed. Each costs a thread.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may stay silent (between requests, or inside one) before it is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write may block on a client that does not read before it counts as gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Stack of a connection thread: JSON parsing (depth-limited by serde_json) and formatting
/// need little; the model runs on the engine's threads.
const CONNECTION_STACK: usize = 512 << 10;

/// Facts about the model the Ollama API reports besides `ServerInfo`.
#[derive(Clone, Debug, Default)]
pub struct ModelFacts {
    /// The model file's modification time.
    pub modified: Option<SystemTime>,
    /// The chat template's source, as the file has it (empty when it has none).
    pub chat_template: String,
    /// Context the model was trained with.
    pub n_ctx_train: usize,
}

/// What every handler shares: the engine, the model's facts, the API key and the server's own
/// counters.
pub struct App {
    pub engine: EngineHandle,
    pub facts: ModelFacts,
    api_key: Option<String>,
    started: Instant,
    stopping: AtomicBool,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    refused_busy: AtomicU64,
}

impl App {
    pub fn new(engine: EngineHandle, facts: ModelFacts, api_key: Option<String>) -> App {
        App {
            engine,
            facts,
            api_key,
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            refused_busy: AtomicU64::new(0),
        }
    }

    /// Stops accepting connections; `serve` returns once its listener wakes (see `wake`).
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits until no request is being answered, at most `limit`; true if none is left.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let t = Instant::now();
        while self.in_flight() > 0 {
            if t.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// Decrements a counter when dropped, so that every way out of a scope counts.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicUsize) -> Counted<'a> {
        c.fetch_add(1, Ordering::AcqRel);
        Counted(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves connections from `listener` until `App::begin_shutdown` (followed by `wake`).
pub fn serve(listener: TcpListener, app: Arc<App>) {
    for conn in listener.incoming() {
        if app.stopping() {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: say so, and give the system a moment.
                eprintln!("lckv: accepting a connection failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if app.connections.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            refuse_connection(stream);
            continue;
        }
        let app = Arc::clone(&app);
        // Counted before the thread starts, so a burst cannot overshoot the limit.
        app.connections.fetch_add(1, Ordering::AcqRel);
        let spawned = std::thread::Builder::new()
            .name("lckv-http".into())
            .stack_size(CONNECTION_STACK)
            .spawn({
                let app = Arc::clone(&app);
                move || {
                    serve_connection(&app, stream);
                    app.connections.fetch_sub(1, Ordering::AcqRel);
                }
            });
        if let Err(e) = spawned {
            app.connections.fetch_sub(1, Ordering::AcqRel);
            eprintln!("lckv: cannot start a connection thread: {e}");
        }
    }
}

/// Wakes `serve`'s blocking accept so that it sees the shutdown: connects to the listener once.
pub fn wake(addr: SocketAddr) {
    let target = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    };
    let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
}

/// Answers 503 on the accepting thread and closes at once: lingering here would stall every
/// other connection, and a server this full cannot give the client a thread.
fn refuse_connection(stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let r = routes::error_response(
        routes::Api::OpenAi,
        503,
        &format!("the server already serves {MAX_CONNECTIONS} connections; try again later"),
    )
    .with_header("Retry-After", "1".into());
    let _ = wire::write_response(&stream, &r, false);
}

fn serve_connection(app: &App, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let mut conn = Connection::new(stream);
    loop {
        let req = match conn.read_request() {
            Ok(r) => r,
            Err(ReadError::Closed) => return,
            Err(ReadError::Refuse(status, message)) => {
                let r = routes::error_response(routes::Api::OpenAi, status, &message);
                let _ = wire::write_response(conn.stream(), &r, false);
                conn.linger_close();
                return;
            }
        };
        let keep_alive = req.keep_alive() && !app.stopping();
        let done = {
            let _flight = Counted::new(&app.in_flight);
            let ex = routes::Exchange {
                req: &req,
                conn: conn.stream(),
                peer: &peer,
                received: Instant::now(),
            };
            match routes::route(app, &ex) {
                routes::Outcome::Respond(r) => {
                    wire::write_response(conn.stream(), &r, keep_alive).is_err()
                }
                routes::Outcome::Streamed { reusable } => !reusable,
                routes::Outcome::Gone => true,
            }
        };
        if done || !keep_alive {
            return;
        }
    }
}

/// Whether the client closed its side or reset the connection: checked while a generation
/// runs, so that an abandoned request frees its slot even before anything is written to it.
fn client_gone(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let gone = match stream.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    gone
}

/// A random 64-bit number (ids, seeds): the standard library's per-process random keys mixed
/// with the clock and a counter, so no extra dependency is needed.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// RFC 3339 time in UTC, e.g. 2024-05-01T12:00:00.123456Z (with microseconds when `micros`).
pub(crate) fn rfc3339(t: SystemTime, micros: bool) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = crate::chat::civil_from_days(days as i64);
    let base = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if micros {
        format!("{base}.{:06}Z", d.subsec_micros())
    } else {
        format!("{base}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc3339(at(0), false), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400), false), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_714_564_800), false), "2024-05-01T12:00:00Z");
        assert_eq!(
            rfc3339(at(1_714_564_800) + Duration::from_micros(7), true),
            "2024-05-01T12:00:00.000007Z"
        );
    }

    #[test]
    fn random_numbers_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}

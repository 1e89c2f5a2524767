//! HTTP/1.1 framing over one TCP connection: reading a request (head parsed by `httparse`, body
//! by Content-Length or chunked, each under a fixed limit) and writing a response, either whole
//! (Content-Length) or streamed as one chunk per event, flushed at once so that every token
//! reaches the client when it is made. Nothing here knows the APIs or the engine.
//!
//! Limits are checked before anything is allocated for them: a declared body over
//! `MAX_BODY_BYTES` is refused with 413 without reading it, and the connection is closed, since
//! its unread bytes would otherwise be taken for the next request.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Largest request body (JSON) accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest request line plus headers.
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// Most header lines in a request.
const MAX_HEADERS: usize = 64;
/// Longest line of chunked framing (size and extensions, or a trailer).
const MAX_CHUNK_LINE: usize = 1024;
/// After a refusal, how much of a refused body is read and dropped before closing, and for how
/// long (see `Connection::linger_close`).
const LINGER_BYTES: usize = 64 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_READ: std::time::Duration = std::time::Duration::from_millis(500);

/// A request as read off the wire.
#[derive(Debug)]
pub struct HttpRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after this response.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        match self.minor_version {
            0 => conn.is_some_and(|c| c.contains("keep-alive")),
            _ => !conn.is_some_and(|c| c.contains("close")),
        }
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection (or went quiet) between requests: nothing to answer.
    Closed,
    /// The request is malformed or too large: answer with this status and message, then close.
    Refuse(u16, String),
}

/// One client connection: the socket and the bytes read but not yet used.
pub struct Connection {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads the next request. Between requests an idle client (the socket's read timeout) or a
    /// closed one gives `Closed`.
    pub fn read_request(&mut self) -> Result<HttpRequest, ReadError> {
        let (head_len, mut request, framing) = loop {
            if let Some(parsed) = parse_head(&self.pending)? {
                break parsed;
            }
            if self.pending.len() >= MAX_HEAD_BYTES {
                return Err(ReadError::Refuse(
                    431,
                    format!("the request line and headers exceed {MAX_HEAD_BYTES} bytes"),
                ));
            }
            if self.fill()? == 0 {
                return Err(ReadError::Closed);
            }
        };
        self.pending.drain(..head_len);
        match framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                if n > MAX_BODY_BYTES {
                    return Err(too_large(n));
                }
                self.continue_if_expected(&request)?;
                request.body = self.take(n)?;
            }
            Framing::Chunked => {
                self.continue_if_expected(&request)?;
                request.body = self.read_chunked()?;
            }
        }
        Ok(request)
    }

    /// Reads more bytes into `pending`; 0 at end of stream. A timeout or reset counts as the
    /// end: the client is gone or stalled, and the connection will be closed.
    fn fill(&mut self) -> Result<usize, ReadError> {
        let mut buf = [0u8; 8192];
        loop {
            match self.stream.read(&mut buf) {
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(ReadError::Closed),
            }
        }
    }

    /// Ends the connection after a refusal without losing the answer: stops sending, then
    /// reads and drops what the client is still sending (a body that was refused unread) for a
    /// bounded time and size. Closing with unread bytes would make the kernel reset the
    /// connection, and the client could lose the response before reading it.
    pub fn linger_close(mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(LINGER_READ));
        let started = std::time::Instant::now();
        let mut drained = 0usize;
        let mut buf = [0u8; 8192];
        while drained < LINGER_BYTES && started.elapsed() < LINGER_TIME {
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }

    /// Takes exactly `n` bytes (`n` within the limits), reading what is missing.
    fn take(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        while self.pending.len() < n {
            if self.fill()? == 0 {
                return Err(ReadError::Closed);
            }
        }
        Ok(self.pending.drain(..n).collect())
    }

    fn take_line(&mut self) -> Result<String, ReadError> {
        loop {
            if let Some(at) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.pending[..at]).into_owned();
                self.pending.drain(..at + 2);
                return Ok(line);
            }
            if self.pending.len() > MAX_CHUNK_LINE {
                return Err(ReadError::Refuse(
                    400,
                    "a chunk-size line of the chunked body is too long".into(),
                ));
            }
            if self.fill()? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line()?;
            let size_field = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_field, 16).map_err(|_| {
                ReadError::Refuse(
                    400,
                    format!("bad chunk size '{size_field}' in the chunked body"),
                )
            })?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.take_line()?.is_empty() {}
                return Ok(body);
            }
            let total = body.len().saturating_add(size);
            if total > MAX_BODY_BYTES {
                return Err(too_large(total));
            }
            body.extend(self.take(size)?);
            if !self.take_line()?.is_empty() {
                return Err(ReadError::Refuse(
                    400,
                    "a chunk of the chunked body is longer than its size says".into(),
                ));
            }
        }
    }

    /// Answers `Expect: 100-continue` once the body is known to be acceptable.
    fn continue_if_expected(&mut self, r: &HttpRequest) -> Result<(), ReadError> {
        if r.minor_version == 1
            && r.header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|_| ReadError::Closed)?;
        }
        Ok(())
    }
}

fn too_large(n: usize) -> ReadError {
    ReadError::Refuse(
        413,
        format!("the request body is {n} bytes; the limit is {MAX_BODY_BYTES} bytes"),
    )
}

/// How the body of a request is delimited.
enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

/// Parses the request head at the start of `buf`: None while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, HttpRequest, Framing)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ReadError::Refuse(
                431,
                format!("the request has more than {MAX_HEADERS} headers"),
            ))
        }
        Err(e) => {
            return Err(ReadError::Refuse(
                400,
                format!("malformed HTTP request: {e}"),
            ))
        }
    };
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let request = HttpRequest {
        method,
        path,
        minor_version: req.version.unwrap_or(1),
        headers,
        body: Vec::new(),
    };
    let chunked = match request.header("transfer-encoding") {
        None => false,
        Some(te) if te.eq_ignore_ascii_case("chunked") => true,
        Some(te) => {
            return Err(ReadError::Refuse(
                501,
                format!("transfer encoding '{te}' is not supported: send the body with Content-Length or chunked"),
            ))
        }
    };
    let length = request.header("content-length");
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            // Both would let a proxy and this server split the stream differently.
            return Err(ReadError::Refuse(
                400,
                "the request has both Content-Length and Transfer-Encoding: send one".into(),
            ));
        }
        (true, None) => Framing::Chunked,
        (false, Some(v)) => match v.parse::<usize>() {
            Ok(0) => Framing::Empty,
            Ok(n) => Framing::Length(n),
            // Too many digits for usize is still a length, and still too large.
            Err(_) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(too_large(usize::MAX))
            }
            Err(_) => {
                return Err(ReadError::Refuse(
                    400,
                    format!("Content-Length '{v}' is not a number of bytes"),
                ))
            }
        },
        (false, None) => Framing::Empty,
    };
    Ok(Some((head_len, request, framing)))
}

/// A whole response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers, e.g. Retry-After.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

fn head(
    status: u16,
    content_type: &str,
    headers: &[(&'static str, String)],
    framing: &str,
    keep_alive: bool,
) -> String {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n{framing}Connection: {}\r\n",
        reason(status),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (name, value) in headers {
        h.push_str(&format!("{name}: {value}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// Writes a whole response in one write.
pub fn write_response(stream: &TcpStream, r: &Response, keep_alive: bool) -> io::Result<()> {
    let mut out = head(
        r.status,
        r.content_type,
        &r.headers,
        &format!("Content-Length: {}\r\n", r.body.len()),
        keep_alive,
    )
    .into_bytes();
    out.extend_from_slice(&r.body);
    let mut s = stream;
    s.write_all(&out)?;
    s.flush()
}

/// A response whose body is sent piece by piece: chunked for HTTP/1.1, or, for HTTP/1.0 (which
/// has no chunks), raw until the connection closes. Every `send` is written and flushed at
/// once; its error means the client is gone.
pub struct BodyStream<'a> {
    stream: &'a TcpStream,
    chunked: bool,
}

impl<'a> BodyStream<'a> {
    pub fn start(
        stream: &'a TcpStream,
        minor_version: u8,
        content_type: &'static str,
        keep_alive: bool,
    ) -> io::Result<BodyStream<'a>> {
        let chunked = minor_version >= 1;
        let framing = if chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            ""
        };
        let extra = [("Cache-Control", "no-cache".to_string())];
        let h = head(200, content_type, &extra, framing, keep_alive && chunked);
        let mut s = stream;
        s.write_all(h.as_bytes())?;
        s.flush()?;
        Ok(BodyStream { stream, chunked })
    }

    /// Whether the connection can carry another request after this body.
    pub fn reusable(&self) -> bool {
        self.chunked
    }

    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            // An empty chunk would end the body.
            return Ok(());
        }
        let mut s = self.stream;
        if self.chunked {
            let mut out = format!("{:x}\r\n", data.len()).into_bytes();
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            s.write_all(&out)?;
        } else {
            s.write_all(data)?;
        }
        s.flush()
    }

    pub fn finish(self) -> io::Result<()> {
        let mut s = self.stream;
        if self.chunked {
            s.write_all(b"0\r\n\r\n")?;
        }
        s.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<(usize, HttpRequest, Framing)>, ReadError> {
        parse_head(raw)
    }

    #[test]
    fn head_with_length() {
        let raw = b"POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let (n, r, f) = parse(raw).unwrap().unwrap();
        assert_eq!(&raw[n..], b"hello");
        assert_eq!(r.path, "/v1/completions");
        assert_eq!(r.header("host"), Some("a"));
        assert!(matches!(f, Framing::Length(5)));
        assert!(r.keep_alive());
    }

    #[test]
    fn incomplete_head_waits() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost").unwrap().is_none());
    }

    #[test]
    fn refusals() {
        let status = |raw: &[u8]| match parse(raw) {
            Err(ReadError::Refuse(s, _)) => s,
            other => panic!("expected a refusal, got {:?}", other.map(|o| o.is_some())),
        };
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
        assert_eq!(status(b"\x00\x01 nonsense\r\n\r\n"), 400);
    }

    #[test]
    fn http10_closes_unless_asked() {
        let (_, r, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive());
        let (_, r, _) = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive());
    }
}

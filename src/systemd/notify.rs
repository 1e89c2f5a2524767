//! The sd_notify protocol: one datagram per message, `KEY=value` lines, sent to the unix socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` for Linux's abstract namespace). Also reads the
//! watchdog interval systemd asks for (`$WATCHDOG_USEC`, meant for `$WATCHDOG_PID` when set). A
//! failed send is reported once and otherwise ignored: losing a notice must not stop serving.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The connection to the service manager, or nothing when there is none.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier that sends nothing (no service manager).
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
            warned: AtomicBool::new(false),
        }
    }

    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. A socket that cannot be
    /// used is reported on stderr and leaves the notifier disabled, never an error: the service
    /// still runs (and systemd will say it never became ready).
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
            return Notifier::disabled();
        };
        let name = name.to_string_lossy().into_owned();
        let target = socket_addr(&name)
            .and_then(|addr| {
                UnixDatagram::unbound()
                    .map(|sock| (sock, addr))
                    .map_err(|e| format!("cannot create a unix datagram socket: {e}"))
            })
            .map_err(|why| eprintln!("lckv: warning: NOTIFY_SOCKET={name}: {why}; not notifying"))
            .ok();
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Notifier {
            target,
            watchdog,
            warned: AtomicBool::new(false),
        }
        .checked()
    }

    /// Whether messages go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog interval systemd expects pings within (WatchdogSec), if it asks for any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Startup is complete: the service may be used.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// The service is alive (the caller must be the loop whose health this vouches for).
    pub fn ping(&self) {
        self.send("WATCHDOG=1");
    }

    /// The service is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// A one-line status for `systemctl status` (newlines would end the message: replaced).
    pub fn status(&self, text: &str) {
        if self.enabled() {
            self.send(&format!("STATUS={}", text.replace('\n', " ")));
        }
    }

    fn send(&self, msg: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!("lckv: warning: telling systemd {msg:?} failed: {e} (further failures are not reported)");
            }
        }
    }

    /// Drops the watchdog when there is no socket to send pings to.
    fn checked(mut self) -> Notifier {
        if self.target.is_none() {
            self.watchdog = None;
        }
        self
    }
}

/// The address `$NOTIFY_SOCKET` names: an absolute path, or `@name` in the abstract namespace.
fn socket_addr(name: &str) -> Result<SocketAddr, String> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        return abstract_addr(abstract_name);
    }
    if name.starts_with('/') {
        return SocketAddr::from_pathname(name).map_err(|e| format!("not a socket path: {e}"));
    }
    Err("only absolute paths and @abstract names are supported".into())
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> Result<SocketAddr, String> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| format!("bad abstract name: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_: &str) -> Result<SocketAddr, String> {
    Err("abstract socket names exist only on Linux".into())
}

/// The watchdog interval from `$WATCHDOG_USEC`, when it is meant for process `me`: systemd sets
/// `$WATCHDOG_PID` to the process it watches, and a child that inherited the variables must not
/// ping for its parent. Unset, zero or unreadable values mean no watchdog.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    match pid.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) if p.parse::<u32>().ok() != Some(me) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_follows_pid() {
        let d = Some(Duration::from_millis(500));
        assert_eq!(watchdog_interval(Some("500000"), None, 7), d);
        assert_eq!(watchdog_interval(Some("500000"), Some("7"), 7), d);
        assert_eq!(watchdog_interval(Some("500000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("500000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn socket_names() {
        assert!(socket_addr("/run/systemd/notify").is_ok());
        assert!(socket_addr("relative/path").is_err());
        assert!(socket_addr("vsock:2:1234").is_err());
        #[cfg(target_os = "linux")]
        assert!(socket_addr("@lckv-test").is_ok());
    }

    #[test]
    fn messages_arrive_as_datagrams() {
        let dir = std::env::temp_dir().join(format!("lckv-notify-unit-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let rx = UnixDatagram::bind(&dir).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                socket_addr(dir.to_str().unwrap()).unwrap(),
            )),
            watchdog: None,
            warned: AtomicBool::new(false),
        };
        n.ready();
        n.status("two\nlines");
        let mut buf = [0u8; 256];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1");
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"STATUS=two lines");
        std::fs::remove_file(&dir).unwrap();
        // Without a socket everything is a no-op.
        let off = Notifier::disabled();
        off.ready();
        assert!(!off.enabled() && off.watchdog().is_none());
    }
}

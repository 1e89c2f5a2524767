//! Running under systemd: readiness, watchdog, status and stop notices sent to the service
//! manager (`notify`, `heartbeat`), and the listening socket it may pass in (`activation`).
//! Everything here is a no-op when the process was not started by systemd (no NOTIFY_SOCKET,
//! no LISTEN_FDS), so `lckv serve` (and a future `lckv pipe`) call it unconditionally.

pub mod activation;
pub mod heartbeat;
pub mod memory_max;
pub mod notify;

pub use heartbeat::Heartbeat;
pub use notify::Notifier;

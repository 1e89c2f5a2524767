//! What the serving loop tells systemd while it runs: `WATCHDOG=1` every half watchdog interval
//! and a `STATUS=` line (sessions active and queued, tokens/s over the last second or more) at
//! most once a second. The loop itself calls `beat` each time round, so the pings stop when the
//! loop hangs, which is what the watchdog is for: a side thread would go on pinging for a
//! server that no longer serves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::stats::StatsSnapshot;
use crate::systemd::Notifier;

/// Least time between two STATUS= lines.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The loop's side of the notifier.
#[derive(Debug)]
pub struct Heartbeat {
    notifier: Arc<Notifier>,
    last_ping: Option<Instant>,
    /// When the last STATUS= was sent and the generated-token count then.
    last_status: Option<(Instant, u64)>,
    last_text: String,
}

impl Heartbeat {
    pub fn new(notifier: Arc<Notifier>) -> Heartbeat {
        Heartbeat {
            notifier,
            last_ping: None,
            last_status: None,
            last_text: String::new(),
        }
    }

    /// Longest the loop may sleep waiting for work before it must call `beat` again: a quarter
    /// of the watchdog interval, so that pings (due every half interval) are never late by
    /// more than another quarter. None when there is no watchdog.
    pub fn max_wait(&self) -> Option<Duration> {
        self.notifier.watchdog().map(|w| w / 4)
    }

    /// Pings the watchdog when half its interval has passed, and sends the status when a second
    /// has passed and it changed. Cheap when nothing is due; a no-op without systemd.
    pub fn beat(&mut self, s: &StatsSnapshot) {
        if !self.notifier.enabled() {
            return;
        }
        let now = Instant::now();
        if let Some(w) = self.notifier.watchdog() {
            if self.last_ping.is_none_or(|t| now - t >= w / 2) {
                self.notifier.ping();
                self.last_ping = Some(now);
            }
        }
        let rate = match self.last_status {
            Some((t, _)) if now - t < STATUS_EVERY => return,
            Some((t, generated)) => {
                s.generated_tokens.saturating_sub(generated) as f64 / (now - t).as_secs_f64()
            }
            None => 0.0,
        };
        self.last_status = Some((now, s.generated_tokens));
        let text = status_line(s, rate);
        if text != self.last_text {
            self.notifier.status(&text);
            self.last_text = text;
        }
    }
}

/// The STATUS= text, e.g. "2 active, 1 queued sessions; 31.5 tok/s".
pub fn status_line(s: &StatsSnapshot, tokens_per_second: f64) -> String {
    format!(
        "{} active, {} queued sessions; {tokens_per_second:.1} tok/s",
        s.active, s.queued
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_well() {
        let s = StatsSnapshot {
            active: 2,
            queued: 1,
            ..Default::default()
        };
        assert_eq!(
            status_line(&s, 31.46),
            "2 active, 1 queued sessions; 31.5 tok/s"
        );
    }

    #[test]
    fn without_systemd_nothing_is_due() {
        let mut h = Heartbeat::new(Arc::new(Notifier::disabled()));
        assert_eq!(h.max_wait(), None);
        h.beat(&StatsSnapshot::default());
        assert!(h.last_status.is_none());
    }
}

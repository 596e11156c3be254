//! What the mirror knows of its own freshness, shared by the engine, the client and the
//! health endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;
use tamizdat_protocol::{Link, SiteId};
use tamizdat_serve::{Health, HealthReport};

#[derive(Default)]
pub struct Status {
    pub connected: AtomicBool,
    applied: AtomicU64,
    head: AtomicU64,
    /// Since when the mirror has known of a change it has not applied.
    behind_since: Mutex<Option<Instant>>,
    /// The site last applied (sent in `Hello`).
    pub site: Mutex<Option<SiteId>>,
    /// The chain link of the last changeset applied (sent in `Hello`).
    pub link: Mutex<Link>,
    /// The last failure to apply (disk full, ...), cleared by the next success.
    pub error: Mutex<Option<String>>,
    /// Counters for `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

impl Status {
    pub fn applied(&self) -> u64 {
        self.applied.load(Relaxed)
    }

    pub fn head(&self) -> u64 {
        self.head.load(Relaxed)
    }

    fn update_behind(&self) {
        let mut b = self.behind_since.lock().unwrap();
        if self.head() > self.applied() {
            b.get_or_insert_with(Instant::now);
        } else {
            *b = None;
        }
    }

    pub fn observe_head(&self, head: u64) {
        self.head.fetch_max(head, Relaxed);
        self.update_behind();
    }

    pub fn set_applied(&self, seq: u64) {
        self.applied.store(seq, Relaxed);
        self.head.fetch_max(seq, Relaxed);
        self.update_behind();
    }
}

impl Health for Status {
    fn health(&self) -> HealthReport {
        let lag = self
            .behind_since
            .lock()
            .unwrap()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        HealthReport {
            applied_seq: self.applied(),
            head_seq: self.head(),
            lag_seconds: lag,
            connected: self.connected.load(Relaxed),
        }
    }
}

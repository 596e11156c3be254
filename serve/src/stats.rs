//! Request counters for the mirror's metrics: relaxed atomics bumped once per response, read
//! by whoever exports them (the mirror's `/metrics`). No metrics crate here: the hot path
//! stays one `fetch_add` per figure.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Statuses 100..=599, one counter each.
const STATUSES: usize = 500;

/// What the server has answered since it started.
pub struct ServeStats {
    by_status: [AtomicU64; STATUSES],
    body_bytes: AtomicU64,
    hot_hits: AtomicU64,
    hot_misses: AtomicU64,
    sendfile_bytes: AtomicU64,
    copied_for_sendfile: AtomicU64,
}

impl Default for ServeStats {
    fn default() -> Self {
        Self {
            by_status: [const { AtomicU64::new(0) }; STATUSES],
            body_bytes: AtomicU64::new(0),
            hot_hits: AtomicU64::new(0),
            hot_misses: AtomicU64::new(0),
            sendfile_bytes: AtomicU64::new(0),
            copied_for_sendfile: AtomicU64::new(0),
        }
    }
}

impl ServeStats {
    pub(crate) fn response(&self, status: u16, body_bytes: u64) {
        if let Some(c) = (status as usize)
            .checked_sub(100)
            .and_then(|i| self.by_status.get(i))
        {
            c.fetch_add(1, Relaxed);
        }
        self.body_bytes.fetch_add(body_bytes, Relaxed);
    }

    pub(crate) fn hot(&self, hit: bool) {
        let c = if hit {
            &self.hot_hits
        } else {
            &self.hot_misses
        };
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn sent_by_sendfile(&self, n: u64) {
        self.sendfile_bytes.fetch_add(n, Relaxed);
    }

    pub(crate) fn copied_for_sendfile(&self, n: u64) {
        self.copied_for_sendfile.fetch_add(n, Relaxed);
    }

    /// (status, responses) for every status answered at least once.
    pub fn responses(&self) -> Vec<(u16, u64)> {
        self.by_status
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Relaxed);
                (n > 0).then_some((i as u16 + 100, n))
            })
            .collect()
    }

    /// Bytes of response bodies sent (their `Content-Length`; 0 for `HEAD`).
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Relaxed)
    }

    /// Lookups answered from the hot cache.
    pub fn hot_hits(&self) -> u64 {
        self.hot_hits.load(Relaxed)
    }

    /// Lookups that had to open the file (not cached, or due for revalidation).
    pub fn hot_misses(&self) -> u64 {
        self.hot_misses.load(Relaxed)
    }

    /// Body bytes that went from the page cache to the socket with sendfile, never copied
    /// into the server's memory (part of [`body_bytes`](Self::body_bytes)).
    pub fn sendfile_bytes(&self) -> u64 {
        self.sendfile_bytes.load(Relaxed)
    }

    /// File body bytes a sendfile connection read into memory and wrote instead, because the
    /// page cache did not hold them (sendfile on the runtime thread would wait for the disk).
    pub fn copied_for_sendfile_bytes(&self) -> u64 {
        self.copied_for_sendfile.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_status_and_ignores_nonsense_statuses() {
        let s = ServeStats::default();
        s.response(200, 10);
        s.response(200, 5);
        s.response(404, 0);
        s.response(42, 1);
        s.response(999, 1);
        assert_eq!(s.responses(), vec![(200, 2), (404, 1)]);
        assert_eq!(s.body_bytes(), 17);
    }
}

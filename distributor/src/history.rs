//! Lag over the last hour, per mirror, for the status page's sparklines: a small ring buffer of
//! samples in memory (120 × 16 bytes per mirror), filled by a sampler task. Nothing is
//! persisted: after a restart the lines start empty.

use crate::hub::Hub;
use crate::index::Index;
use crate::status::{collect, Status};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often the sampler records every mirror's lag.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(30);
/// Samples kept per mirror: one hour at [`SAMPLE_INTERVAL`].
pub const SAMPLES: usize = 120;

/// One sample: (milliseconds since the epoch, lag in seconds).
pub type Sample = (u64, f64);

#[derive(Default)]
pub struct History {
    mirrors: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl History {
    /// Appends each mirror's lag from `s`, dropping the oldest sample past [`SAMPLES`].
    /// A disconnected mirror's lag is the time since it was last seen, if that is longer.
    pub fn record(&self, s: &Status) {
        let mut h = self.mirrors.lock().unwrap();
        h.retain(|name, _| s.mirrors.iter().any(|m| &m.name == name));
        for m in &s.mirrors {
            let ring = h.entry(m.name.clone()).or_default();
            if ring.len() == SAMPLES {
                ring.pop_front();
            }
            ring.push_back((s.now_ms, effective_lag(s, m)));
        }
    }

    /// The samples of `name`, oldest first.
    pub fn get(&self, name: &str) -> Vec<Sample> {
        self.mirrors
            .lock()
            .unwrap()
            .get(name)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// A mirror's lag as an operator means it: its data lag, or for a mirror that is not
/// connected, the time since it was last heard from if that is longer.
pub fn effective_lag(s: &Status, m: &crate::status::MirrorStatus) -> f64 {
    if m.connected || m.last_seen_ms == 0 {
        return m.lag_seconds;
    }
    let silent = s.now_ms.saturating_sub(m.last_seen_ms) as f64 / 1000.0;
    m.lag_seconds.max(silent)
}

/// Samples every [`SAMPLE_INTERVAL`] until the hub is dropped.
pub fn spawn_sampler(hub: &Arc<Hub>, index: Arc<Index>, history: Arc<History>) {
    let hub: Weak<Hub> = Arc::downgrade(hub);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        loop {
            tick.tick().await;
            let Some(hub) = hub.upgrade() else { return };
            let index = index.clone();
            match tokio::task::spawn_blocking(move || collect(&hub, &index)).await {
                Ok(Ok(s)) => history.record(&s),
                Ok(Err(e)) => tracing::warn!(cause = %format!("{e:#}"), "cannot sample lag"),
                Err(_) => return,
            }
        }
    });
}

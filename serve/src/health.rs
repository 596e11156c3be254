//! The freshness check a load balancer polls: `GET /.well-known/tamizdat/health`.

/// The path of the health endpoint.
pub const HEALTH_PATH: &str = "/.well-known/tamizdat/health";

/// What the server needs from the mirror for the health endpoint. Called once per health
/// request, on the async runtime: keep it cheap and non-blocking (read a few atomics or a
/// short-held lock).
pub trait Health: Send + Sync + 'static {
    /// The mirror's state right now.
    fn health(&self) -> HealthReport;
}

/// The mirror's freshness, as served (JSON) by the health endpoint.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HealthReport {
    /// Last changeset applied durably to the served tree.
    pub applied_seq: u64,
    /// Head sequence of the distributor, as last heard.
    pub head_seq: u64,
    /// Seconds since the oldest change not yet applied was produced (0 when caught up).
    pub lag_seconds: f64,
    /// Whether the mirror is connected to its upstream right now.
    pub connected: bool,
}

impl HealthReport {
    /// Fresh: connected, no further behind than `threshold_seconds`, and holding the site.
    ///
    /// A mirror that has applied nothing while its upstream has changes is doing its first
    /// sync: its root is empty or partial, so it is not fresh however recent that news is
    /// (its lag counts from when it heard of them, which for a new mirror is a moment ago).
    pub fn is_fresh(&self, threshold_seconds: f64) -> bool {
        let holds_site = self.applied_seq > 0 || self.head_seq == 0;
        self.connected && holds_site && self.lag_seconds <= threshold_seconds
    }
}

impl<F> Health for F
where
    F: Fn() -> HealthReport + Send + Sync + 'static,
{
    fn health(&self) -> HealthReport {
        self()
    }
}

#[cfg(test)]
mod tests {
    use super::HealthReport;

    fn report(applied_seq: u64, head_seq: u64, lag_seconds: f64, connected: bool) -> HealthReport {
        HealthReport {
            applied_seq,
            head_seq,
            lag_seconds,
            connected,
        }
    }

    #[test]
    fn fresh_only_when_connected_within_the_lag_and_holding_the_site() {
        assert!(report(5, 5, 0.0, true).is_fresh(60.0));
        assert!(report(4, 5, 59.0, true).is_fresh(60.0));
        assert!(!report(4, 5, 61.0, true).is_fresh(60.0));
        assert!(!report(5, 5, 0.0, false).is_fresh(60.0));
        // A first sync under way: nothing applied yet, news a moment old.
        assert!(!report(0, 1, 0.5, true).is_fresh(60.0));
        // An upstream with nothing published yet: nothing to hold.
        assert!(report(0, 0, 0.0, true).is_fresh(60.0));
    }
}

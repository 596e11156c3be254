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
    /// Fresh: connected and no further behind than `threshold_seconds`.
    pub fn is_fresh(&self, threshold_seconds: f64) -> bool {
        self.connected && self.lag_seconds <= threshold_seconds
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

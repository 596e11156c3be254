//! Counters, one per field, exported by the admin API (`GET /metrics`) in the Prometheus text
//! format through `prometheus-client`, the Prometheus project's own Rust client: it writes the
//! exposition format (escaping, `# EOF`, the `_total` suffix of counters) so we don't.
//!
//! A counter here is a `prometheus_client` [`Counter`]: an `Arc<AtomicU64>`, so the hot path
//! costs one relaxed `fetch_add` as before. Per-mirror figures and the head are read from a
//! status snapshot at scrape time (see `admin.rs`), not kept twice.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

macro_rules! metrics {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        #[derive(Default)]
        pub struct Metrics { $($(#[doc = $doc])* pub $name: Counter,)* }

        impl Metrics {
            /// Registers every counter (clones share the value) under its field's name; the
            /// encoder adds the `_total` suffix back.
            pub fn register(&self, reg: &mut Registry) {
                $(
                    let name = stringify!($name);
                    reg.register(
                        name.strip_suffix("_total").unwrap_or(name),
                        concat!($($doc),*).trim(),
                        self.$name.clone(),
                    );
                )*
            }
        }
    };
}

metrics! {
    /// Changesets committed to the journal.
    changesets_total,
    /// Operations (put, delete, move) in those changesets.
    ops_total,
    /// Bytes of file content hashed.
    hashed_bytes_total,
    /// Bytes of frames sent to mirrors.
    bytes_sent_total,
    /// Bytes of file content (blobs and chunks, as sent) sent to mirrors.
    blob_bytes_sent_total,
    /// Whole-tree reconciles (start-up and after lost events).
    reconciles_total,
    /// inotify queue overflows (events lost, tree reconciled).
    overflows_total,
    /// Mirror connections accepted.
    connections_total,
    /// Connections refused (bad token, revoked, malformed hello, over the limit).
    connections_refused_total,
    /// Frames refused from mirrors (malformed, oversized, out of order).
    frames_refused_total,
    /// Sessions switched to catch-up because their live queue overflowed.
    lagged_sessions_total,
}

pub fn add(c: &Counter, n: u64) {
    c.inc_by(n);
}

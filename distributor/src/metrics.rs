//! Counters, one per field, exported by the admin API as Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! metrics {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        #[derive(Default)]
        pub struct Metrics { $($(#[doc = $doc])* pub $name: AtomicU64,)* }

        impl Metrics {
            /// Prometheus text exposition of every counter.
            pub fn render(&self, out: &mut String) {
                $(
                    let help = concat!($($doc),*).trim();
                    let _ = writeln!(out, "# HELP tamizdat_{} {}", stringify!($name), help);
                    let _ = writeln!(out, "# TYPE tamizdat_{} counter", stringify!($name));
                    let _ = writeln!(out, "tamizdat_{} {}", stringify!($name), self.$name.load(Relaxed));
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

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

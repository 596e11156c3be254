//! The status report the admin API serves and `lag` reads.

use crate::hub::Hub;
use crate::index::{now_ms, Index};
use crate::mirrors;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub site: String,
    pub head_seq: u64,
    pub head_produced_at_ms: u64,
    pub now_ms: u64,
    pub mirrors: Vec<MirrorStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorStatus {
    pub name: String,
    pub connected: bool,
    /// `live`, `catch-up`, `full-resync`, `offline` or `revoked`.
    pub state: String,
    pub remote_addr: Option<String>,
    pub acked_seq: u64,
    pub lag_changes: u64,
    /// Seconds since the oldest change the mirror has not acknowledged was made (0 when it
    /// has them all).
    pub lag_seconds: f64,
    pub bytes_sent: u64,
    /// Of those, bytes of file content (blobs and chunks).
    pub blob_bytes_sent: u64,
    pub last_seen_ms: u64,
    /// The last error the mirror reported (disk full, ...), until it acknowledges again.
    pub last_error: Option<String>,
    /// What a connected mirror says it runs (`tamizdat-mirror/0.1.0`).
    #[serde(default)]
    pub version: Option<String>,
}

pub fn collect(hub: &Hub, index: &Index) -> Result<Status> {
    let (head, head_at) = hub.head();
    let site = index.site()?.to_hex();
    let live = hub.sessions();
    let now = now_ms();
    let mut out = Vec::new();
    for m in index.with(mirrors::list)? {
        let session = live.get(&m.name);
        let acked = session.map_or(m.acked_seq, |s| s.acked.max(m.acked_seq));
        let lag_seconds = if acked >= head {
            0.0
        } else {
            let since = index.produced_after(acked)?.unwrap_or(head_at);
            now.saturating_sub(since) as f64 / 1000.0
        };
        let state = if m.revoked {
            "revoked"
        } else {
            session.map_or("offline", |s| s.mode)
        };
        out.push(MirrorStatus {
            connected: session.is_some(),
            state: state.to_owned(),
            remote_addr: session.map(|s| s.addr.to_string()),
            acked_seq: acked,
            lag_changes: head.saturating_sub(acked),
            lag_seconds,
            bytes_sent: m.bytes_sent + session.map_or(0, |s| s.bytes_sent),
            blob_bytes_sent: session.map_or(0, |s| s.blob_bytes_sent),
            last_seen_ms: session.map_or(m.last_seen_ms, |s| s.last_seen_ms),
            last_error: hub.error(&m.name),
            version: session.map(|s| s.agent.to_string()),
            name: m.name,
        });
    }
    Ok(Status {
        site,
        head_seq: head,
        head_produced_at_ms: head_at,
        now_ms: now,
        mirrors: out,
    })
}

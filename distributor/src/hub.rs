//! Fan-out: the journal publishes each changeset once (encoded once), every session receives
//! it from a bounded broadcast queue. A session that falls more than the queue's length behind
//! is told it lagged and switches to catch-up from the index, so a slow mirror never makes the
//! distributor buffer without bound.

use crate::blobs::BlobCache;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tamizdat_protocol::{
    encode, Changeset, ContentHash, Link, Message, Mode, Op, Proof, OPS_PER_FRAME,
};
use tokio::sync::{broadcast, watch, Notify};

/// One changeset, ready to send.
pub struct Published {
    pub seq: u64,
    pub produced_at_ms: u64,
    /// Empty when the changeset is too big to send inline: catch up from the index.
    pub frames: Vec<tokio_tungstenite::tungstenite::Bytes>,
    /// New small files whose blobs go just before `frames`, so a mirror need not ask. Only
    /// hashes: the bytes stay in the blob cache, not in every slot of the live queue.
    pub pushed: Vec<ContentHash>,
    /// The chain link a mirror holds once it applied this changeset (unused when `frames` is
    /// empty: the catch-up carries its own).
    pub link: Link,
}

/// The head as last committed: (sequence, produced at ms).
pub type Head = (u64, u64);

/// What the admin API shows of one connected mirror.
#[derive(Clone, Debug)]
pub struct Live {
    pub id: u64,
    pub addr: SocketAddr,
    pub acked: u64,
    pub last_seen_ms: u64,
    pub bytes_sent: u64,
    pub blob_bytes_sent: u64,
    pub mode: &'static str,
    /// What the mirror says it runs (`tamizdat-mirror/0.1.0`), printable ASCII, short.
    pub agent: Arc<str>,
    pub kick: Arc<Notify>,
}

pub struct Hub {
    live: broadcast::Sender<Arc<Published>>,
    head: watch::Sender<Head>,
    pub cache: BlobCache,
    pub metrics: Metrics,
    sessions: Mutex<HashMap<String, Live>>,
    /// The last error each mirror reported (disk full, ...), until it acknowledges again.
    errors: Mutex<HashMap<String, String>>,
    /// Sessions each mirror has opened since start (reconnects, for the metrics).
    connections: Mutex<HashMap<String, u64>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Hub {
    pub fn new(head: Head, queue: usize, cache_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            live: broadcast::channel(queue.max(1)).0,
            head: watch::channel(head).0,
            cache: BlobCache::new(cache_bytes),
            metrics: Metrics::default(),
            sessions: Mutex::new(HashMap::new()),
            errors: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            next_id: 1.into(),
        })
    }

    /// Sends a committed changeset to every session, preceded by the blobs of `push` (new
    /// small files whose bytes are in the cache).
    pub fn publish(
        &self,
        seq: u64,
        produced_at_ms: u64,
        ops: Vec<Op>,
        push: &[ContentHash],
        proof: Proof,
    ) {
        let pushed = push.to_vec();
        let frames = changeset_frames(seq, seq - 1, produced_at_ms, Mode::Live, ops, Some(proof));
        self.head.send_replace((seq, produced_at_ms));
        let _ = self.live.send(Arc::new(Published {
            seq,
            produced_at_ms,
            frames,
            pushed,
            link: proof.next,
        }));
    }

    /// Announces a committed changeset too big to send inline: sessions catch up to it from
    /// the index, in frames, at their own pace.
    pub fn publish_catch_up(&self, seq: u64, produced_at_ms: u64) {
        self.head.send_replace((seq, produced_at_ms));
        let _ = self.live.send(Arc::new(Published {
            seq,
            produced_at_ms,
            frames: Vec::new(),
            pushed: Vec::new(),
            link: [0; 32],
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.live.subscribe()
    }

    pub fn head(&self) -> Head {
        *self.head.borrow()
    }

    pub fn watch_head(&self) -> watch::Receiver<Head> {
        self.head.subscribe()
    }

    /// Registers a session under `name`, kicking out an older session of the same mirror.
    pub fn join(&self, name: &str, addr: SocketAddr, acked: u64, agent: &str) -> Live {
        // Shown on the status page and in JSON: keep it short and printable.
        let agent: String = agent
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(64)
            .collect();
        let live = Live {
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            addr,
            acked,
            last_seen_ms: crate::index::now_ms(),
            bytes_sent: 0,
            blob_bytes_sent: 0,
            mode: "connecting",
            agent: agent.into(),
            kick: Arc::new(Notify::new()),
        };
        *self
            .connections
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default() += 1;
        if let Some(old) = self
            .sessions
            .lock()
            .unwrap()
            .insert(name.to_owned(), live.clone())
        {
            old.kick.notify_one();
        }
        live
    }

    /// Updates a session's entry, if it is still the current one for `name`.
    pub fn update(&self, name: &str, id: u64, f: impl FnOnce(&mut Live)) {
        if let Some(l) = self.sessions.lock().unwrap().get_mut(name) {
            if l.id == id {
                f(l);
            }
        }
    }

    /// Ends a session; returns its final figures if it was still the current one.
    pub fn leave(&self, name: &str, id: u64) -> Option<Live> {
        let mut s = self.sessions.lock().unwrap();
        if s.get(name).is_some_and(|l| l.id == id) {
            s.remove(name)
        } else {
            None
        }
    }

    /// Drops the session of a revoked mirror at once.
    pub fn kick(&self, name: &str) -> bool {
        match self.sessions.lock().unwrap().remove(name) {
            Some(l) => {
                l.kick.notify_one();
                true
            }
            None => false,
        }
    }

    pub fn set_error(&self, name: &str, error: Option<String>) {
        let mut e = self.errors.lock().unwrap();
        match error {
            Some(msg) => {
                e.insert(name.to_owned(), msg);
            }
            None => {
                e.remove(name);
            }
        }
    }

    pub fn error(&self, name: &str) -> Option<String> {
        self.errors.lock().unwrap().get(name).cloned()
    }

    /// Sessions each mirror has opened since the distributor started.
    pub fn connections(&self) -> HashMap<String, u64> {
        self.connections.lock().unwrap().clone()
    }

    /// Changesets in the live fan-out queue not yet taken by the slowest session.
    pub fn queue_depth(&self) -> usize {
        self.live.len()
    }

    pub fn sessions(&self) -> HashMap<String, Live> {
        self.sessions.lock().unwrap().clone()
    }
}

/// Splits (part of) a changeset into frames of at most [`OPS_PER_FRAME`] ops; with `complete`
/// the last frame is marked as the end of the changeset.
pub fn changeset_frames(
    seq: u64,
    base_seq: u64,
    produced_at_ms: u64,
    kind: Mode,
    mut ops: Vec<Op>,
    proof: Option<Proof>,
) -> Vec<tokio_tungstenite::tungstenite::Bytes> {
    let mut frames = Vec::new();
    loop {
        let rest = if ops.len() > OPS_PER_FRAME {
            ops.split_off(OPS_PER_FRAME)
        } else {
            Vec::new()
        };
        let end = rest.is_empty();
        let last = end && proof.is_some();
        frames.push(
            encode(&Message::Changeset(Changeset {
                seq,
                base_seq,
                produced_at_ms,
                kind,
                ops,
                last,
                proof: if last { proof } else { None },
            }))
            .into(),
        );
        if end {
            return frames;
        }
        ops = rest;
    }
}

//! The apply engine: assembles changesets, fetches only the bytes the mirror holds nowhere,
//! stages and verifies them, then publishes each changeset atomically.
//!
//! Publishing one changeset, in order:
//! 1. every new file is staged under `ROOT/.tamizdat/stage/` (same file system as the tree),
//!    its blake3 hash verified, then flushed (one `syncfs`, or an fsync per file when few);
//! 2. the changeset is written to the state database as `pending` (it survives a kill; the
//!    fsync of step 4 makes it durable against a power cut too);
//! 3. under the server's publish gate, every op is carried out with `rename`, and the touched
//!    directories are fsynced;
//! 4. the rows, the new sequence and the end of `pending` are committed in one transaction;
//! 5. `Ack { seq }` goes upstream.
//!
//! Killed anywhere, each served file is a complete old or new version; on the next start a
//! `pending` changeset is finished (every step is idempotent) before anything else.
//!
//! A full resync into an empty mirror publishes its files in batches as their bytes arrive
//! (steps 1 and 3 per batch, recorded without a sequence once the next batch's flush has
//! made its renames durable), so renaming does not all wait for the last byte; its sequence
//! and ack still come at the end (`publish_early`).

use crate::fsops::{self, FsError};
use crate::stage::Stage;
use crate::status::Status;
use crate::store::Store;
use anyhow::Result;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tamizdat_protocol::{
    encode, sign, Blob, Changeset, Chunk, ContentHash, ErrorCode, Fingerprint, Link, Message, Mode,
    Op, OpsDigest, Proof, SiteId, SiteKey, SitePath, Statement, Welcome, GENESIS, INLINE_LIMIT,
    OPS_PER_FRAME, WANT_WINDOW,
};
use tamizdat_serve::Site;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// What the engine accepts from upstream, at most. Each is a flag of `tamizdat-mirror run`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Ops (files) in one changeset, across its frames: a full manifest must fit.
    pub max_ops: usize,
    /// Bytes in a path (the protocol's own ceiling is [`tamizdat_protocol::path::MAX_PATH_LEN`]).
    pub max_path_len: usize,
    /// Components in a path (the protocol's ceiling is [`tamizdat_protocol::path::MAX_DEPTH`]).
    pub max_path_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ops: 2_000_000,
            max_path_len: tamizdat_protocol::path::MAX_PATH_LEN,
            max_path_depth: tamizdat_protocol::path::MAX_DEPTH,
        }
    }
}

impl Limits {
    fn check(&self, ops: &[Op]) -> Result<(), EngineError> {
        let path_ok = |p: &SitePath| -> Result<(), EngineError> {
            if p.as_str().len() > self.max_path_len {
                return Err(peer(
                    ErrorCode::Protocol,
                    format!(
                        "path of {} bytes, over this mirror's --max-path-len {}",
                        p.as_str().len(),
                        self.max_path_len
                    ),
                ));
            }
            let depth = p.components().count();
            if depth > self.max_path_depth {
                return Err(peer(
                    ErrorCode::Protocol,
                    format!(
                        "path {depth} directories deep, over this mirror's --max-path-depth {}",
                        self.max_path_depth
                    ),
                ));
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Put { path, .. } | Op::Delete { path } => path_ok(path)?,
                Op::Move { from, to } => {
                    path_ok(from)?;
                    path_ok(to)?;
                }
            }
        }
        Ok(())
    }
}

/// Whom the engine trusts and what it accepts.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// The join token's key fingerprint: what the trust in a site key starts from.
    pub anchor: Fingerprint,
    pub limits: Limits,
}

/// Wire bytes of frames that may wait for the engine at once (one larger frame may pass it
/// alone). The channel to the engine holds 64 inputs; counted in frames only, 64 chunks of a
/// video were 11 MB of a fresh mirror's heap peak (heaptrack), while the engine wrote the
/// previous ones to disk.
pub const INPUT_BYTES: usize = 2 << 20;

pub enum Input {
    Connected(Welcome),
    /// A frame, with the share of [`INPUT_BYTES`] it holds until the engine is done with it.
    Frame(Message, tokio::sync::OwnedSemaphorePermit),
    Disconnected(oneshot::Sender<()>),
}

pub enum Output {
    Send(Message),
    /// Tell upstream why, then close the connection.
    Close(ErrorCode, String),
}

/// Why the engine stops a connection.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{1}")]
    Peer(ErrorCode, String),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{0:#}")]
    Local(#[from] anyhow::Error),
}

fn peer(code: ErrorCode, msg: impl Into<String>) -> EngineError {
    EngineError::Peer(code, msg.into())
}

/// A changeset's ops: in memory, or, for the full resync in progress, in the state
/// database's `manifest` (read back in order, [`SPILL_CHUNK`] at a time), so that a fresh
/// mirror's memory does not grow with the size of the site: a 100,000-file manifest was
/// 12.6 MB of its 23.8 MB heap peak (heaptrack), where issue 2 allows 24 MB of RSS in all.
enum Ops {
    Held(Vec<Op>),
    Spilled(u32),
}

/// Manifest ops read back at a time.
const SPILL_CHUNK: usize = 1024;

/// [`Ops::get_sorted`] reads ops this close together with one query, the ones between
/// included.
const RUN_GAP: u32 = 16;

impl Ops {
    fn len(&self) -> usize {
        match self {
            Ops::Held(v) => v.len(),
            Ops::Spilled(n) => *n as usize,
        }
    }

    fn is_spilled(&self) -> bool {
        matches!(self, Ops::Spilled(_))
    }

    /// Op `i`.
    fn get(&self, store: &Store, i: u32) -> Result<Op, EngineError> {
        match self {
            Ops::Held(v) => v
                .get(i as usize)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("op {i} of {} asked for", v.len()).into()),
            Ops::Spilled(_) => Ok(store.manifest_op(i)?),
        }
    }

    /// Ops `indices` (sorted here), each with its index, in order. A spilled manifest is read
    /// a run of nearby indices at a time: one lookup per op cost three page reads each in a
    /// 100k resync, where the early publisher's commits kept the page cache cold.
    fn get_sorted(
        &self,
        store: &Store,
        indices: &mut [u32],
    ) -> Result<Vec<(u32, Op)>, EngineError> {
        indices.sort_unstable();
        let mut out = Vec::with_capacity(indices.len());
        if !self.is_spilled() {
            for &i in indices.iter() {
                out.push((i, self.get(store, i)?));
            }
            return Ok(out);
        }
        let mut rest = &indices[..];
        while let Some(&first) = rest.first() {
            // A run: indices no more than RUN_GAP apart, read with one range query.
            let mut end = 1;
            while end < rest.len() && rest[end] - rest[end - 1] <= RUN_GAP {
                end += 1;
            }
            let (run, tail) = rest.split_at(end);
            let last = *run.last().expect("a run is not empty");
            let rows = store.manifest_ops(first, (last - first) as usize + 1)?;
            let mut rows = rows.into_iter().peekable();
            for &i in run {
                while rows.next_if(|(j, _)| *j < i).is_some() {}
                match rows.next_if(|(j, _)| *j == i) {
                    Some(row) => out.push(row),
                    None => {
                        return Err(anyhow::anyhow!("op {i} is not in the manifest").into());
                    }
                }
            }
            rest = tail;
        }
        Ok(out)
    }

    /// Calls `f` with each op from index `from` on, in order, until it breaks.
    fn visit(
        &self,
        store: &Store,
        from: usize,
        mut f: impl FnMut(usize, &Op) -> Result<ControlFlow<()>, EngineError>,
    ) -> Result<ControlFlow<()>, EngineError> {
        match self {
            Ops::Held(v) => {
                for (i, op) in v.iter().enumerate().skip(from) {
                    if f(i, op)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
            Ops::Spilled(n) => {
                let mut next = from as u32;
                while next < *n {
                    let chunk = store.manifest_ops(next, SPILL_CHUNK)?;
                    let Some(&(last, _)) = chunk.last() else {
                        return Err(anyhow::anyhow!(
                            "the manifest in the state database ends at op {next} of {n}"
                        )
                        .into());
                    };
                    for (i, op) in &chunk {
                        if f(*i as usize, op)?.is_break() {
                            return Ok(ControlFlow::Break(()));
                        }
                    }
                    next = last + 1;
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// A changeset whose frames are still arriving.
struct Assembly {
    seq: u64,
    base_seq: u64,
    kind: Mode,
    ops: Ops,
    /// Of every op so far, fed as the frames come: what the signature covers.
    digest: OpsDigest,
    last: bool,
    proof: Option<Proof>,
}

impl Assembly {
    fn add(&mut self, ops: Vec<Op>, store: &mut Store) -> Result<(), EngineError> {
        self.digest.add_all(&ops);
        match &mut self.ops {
            Ops::Held(v) => {
                // Grown to fit, not doubled: a multi-frame changeset's last step would
                // otherwise leave a quarter unused, and both steps resident while it moved.
                v.reserve_exact(ops.len());
                v.extend(ops);
            }
            Ops::Spilled(n) => {
                if ops.iter().any(|op| !matches!(op, Op::Put { .. })) {
                    return Err(not_only_puts(self.seq));
                }
                if let Some(p) = store.manifest_add(*n, &ops)? {
                    return Err(listed_twice(self.seq, &p));
                }
                *n += ops.len() as u32;
            }
        }
        Ok(())
    }
}

/// A complete, verified changeset waiting for its bytes.
struct Queued {
    seq: u64,
    base_seq: u64,
    kind: Mode,
    ops: Ops,
    /// The verified proof: its `next` is the link recorded with the sequence.
    proof: Proof,
}

/// What one connection is in the middle of.
struct Conn {
    site: SiteId,
    /// The site key every changeset must verify against.
    key: SiteKey,
    assembling: Option<Assembly>,
    queue: VecDeque<Queued>,
    last_queued: u64,
    /// The chain link of the last changeset queued (or applied).
    link: Link,
    /// A full resync older than this is a replay: it would roll the site back.
    full_floor: u64,
    /// Requested hashes, each with its size and the changeset that waits for it first.
    wanted: HashMap<ContentHash, Want>,
    gone: HashSet<ContentHash>,
    /// What the front changeset still waits for, and what of it has arrived.
    front: Option<Front>,
    /// Where `request_missing` stopped when `wanted` was full ([`WANT_WINDOW`]): the
    /// changeset and the first of its ops not yet looked at. Everything from there on is
    /// still to be asked for.
    ask_from: Option<(u64, usize)>,
    /// The full resync that may publish its files as their bytes arrive ([`EARLY_BATCH`]).
    early_seq: Option<u64>,
    /// The hashes that resync has looked for, when its stage began empty ([`Seen`]).
    early_seen: Option<Seen>,
    /// Which of its ops the early publisher was given: its end plans only the others.
    early_done: OpSet,
    /// Blobs pushed ahead of the changeset that needs them, and their bytes.
    pushed: HashSet<ContentHash>,
    pushed_bytes: u64,
}

/// A requested hash: its size, and the earliest queued changeset that puts it (`seq`) with
/// the first of its ops that does (`op`, an index into its ops).
#[derive(Clone, Copy)]
struct Want {
    size: u64,
    seq: u64,
    op: u32,
}

/// A set of op indices, one bit each.
#[derive(Default)]
struct OpSet(Vec<u64>);

impl OpSet {
    fn insert(&mut self, i: u32) {
        let (word, bit) = (i as usize / 64, i % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// The hashes a fresh mirror's full resync has looked for, as a Bloom filter. The resync
/// began with an empty stage in a fresh root, so bytes it never looked for are neither staged
/// nor published: `request_missing` asks for them without looking, where it made a `statat`
/// that failed and a lookup by hash in the state database for every file (a tenth of the
/// apply thread's samples in a 100k-file resync, `perf`). A hash that may have been looked
/// for is looked for as before, so a false positive costs only that. 16 bits a file (200 KB
/// at 100,000 files) and four bits a hash: about one hash in 400 is looked for needlessly.
struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    fn new(files: usize) -> Seen {
        Seen {
            bits: vec![0; (files / 4).max(16)],
        }
    }

    /// Notes `hash`; true when it may have been noted before. The bits come from the hash
    /// itself: its bytes are uniform, whoever chose the files (a hostile upstream can make
    /// only false positives, which cost a lookup each).
    fn insert(&mut self, hash: &ContentHash) -> bool {
        let n = self.bits.len() * 64;
        let mut before = true;
        for word in hash.0.chunks_exact(4).take(4) {
            let i = u32::from_le_bytes(word.try_into().expect("four bytes")) as usize % n;
            let (w, bit) = (i / 64, 1u64 << (i % 64));
            before &= self.bits[w] & bit != 0;
            self.bits[w] |= bit;
        }
        before
    }
}

/// The front changeset's sequence, how many requested hashes it still waits for (the
/// `wanted` entries with its `seq`), and those of its ops whose bytes are staged now.
struct Front {
    seq: u64,
    waiting: usize,
    ready: Vec<u32>,
}

impl Conn {
    /// Requested bytes arrived (`staged`) or are gone: forgets the request, and notes it in
    /// the front changeset if that waited for them. `None` if they were never asked for.
    fn arrived(&mut self, hash: &ContentHash, staged: bool) -> Option<Want> {
        let w = self.wanted.remove(hash)?;
        if let Some(f) = self.front.as_mut().filter(|f| f.seq == w.seq) {
            debug_assert!(f.waiting > 0, "the front's count of requests is off");
            f.waiting = f.waiting.saturating_sub(1);
            if staged {
                f.ready.push(w.op);
            }
        }
        Some(w)
    }
}

/// A full resync into an empty mirror publishes its files in batches as their bytes arrive,
/// instead of all at the end: renaming 100,000 files into place took the last third of a
/// full resync while the distributor sat idle (`docs/design.md`). The sequence, and the ack,
/// still come only when every file is in place. A batch is an eighth of the manifest, within
/// these bounds. Up to five batches' ops are held at once (two waiting in the channel, one
/// being prepared, one flushing, one placed and waiting to be recorded): at 4,096 the
/// mirror's peak through a 100k resync was 26.0 MB (run 23), where issue 2 allows 24.
pub const EARLY_BATCH: (usize, usize) = (64, 2048);

/// How many arrived files a full resync of `ops` files publishes at a time.
fn early_batch(ops: usize) -> usize {
    (ops / 8).clamp(EARLY_BATCH.0, EARLY_BATCH.1)
}

/// True when the root holds nothing but the mirror's own directory.
fn root_is_fresh(root: &Path) -> Result<bool, EngineError> {
    let entries = std::fs::read_dir(root).map_err(|e| FsError::io("read", root, e))?;
    for e in entries {
        let e = e.map_err(|e| FsError::io("read", root, e))?;
        if e.file_name() != crate::stage::OWN_DIR {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Where [`Engine::request_missing`] starts looking.
#[derive(Clone, Copy, PartialEq)]
enum Ask {
    /// At the changeset just queued, unless an earlier walk stopped short of it.
    Newest,
    /// At the front of the queue: something counted on went missing.
    All,
    /// Where the last walk stopped, if it did: requested bytes arrived.
    More,
}

/// Hashes asked for in one `Need`: half the window, so the next is asked for while the
/// bytes of the one before arrive.
const NEED_AT_ONCE: usize = WANT_WINDOW / 2;
const _: () = assert!(NEED_AT_ONCE <= tamizdat_protocol::HASHES_PER_NEED);

/// Up to this many ops, a publish tells the server each path it changed; more, the root.
/// (A fresh mirror's early batches of 4,096 named every path: the list and the set the
/// server made of it were 1 MB of its heap peak; its caches hold nothing yet anyway.)
const INVALIDATE_EACH: usize = 1024;

/// Pushed blobs accepted ahead of one changeset, at most.
pub const MAX_PUSHED: usize = 4096;
/// Pushed bytes accepted ahead of one changeset, at most.
pub const MAX_PUSHED_BYTES: u64 = 64 << 20;

pub struct Engine {
    root: PathBuf,
    stage: Stage,
    store: Store,
    site: Arc<Site>,
    status: Arc<Status>,
    rt: tokio::runtime::Handle,
    out: mpsc::UnboundedSender<Output>,
    conn: Option<Conn>,
    policy: Policy,
    /// Publishing a fresh mirror's full resync in batches, while it lasts.
    early: Option<Early>,
    /// The state database's `manifest` may hold rows (see [`Ops`]).
    manifest_rows: bool,
}

impl Engine {
    pub fn new(
        root: PathBuf,
        store: Store,
        site: Arc<Site>,
        status: Arc<Status>,
        rt: tokio::runtime::Handle,
        out: mpsc::UnboundedSender<Output>,
        policy: Policy,
    ) -> Result<Self> {
        let stage = Stage::open(&root)?;
        let mut e = Self {
            root,
            stage,
            store,
            site,
            status,
            rt,
            out,
            conn: None,
            policy,
            early: None,
            // A manifest left by a stop belongs to a connection that is gone.
            manifest_rows: true,
        };
        e.recover()?;
        e.stage.clean()?;
        e.store.manifest_clear()?;
        e.manifest_rows = false;
        e.status.set_applied(e.store.applied()?);
        *e.status.link.lock().unwrap() = e.store.link()?;
        *e.status.site.lock().unwrap() = e.store.site()?;
        Ok(e)
    }

    /// Runs until the input channel closes.
    pub fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        while let Some(input) = rx.blocking_recv() {
            match input {
                Input::Connected(w) => {
                    if let Err(e) = self.connected(w) {
                        self.fail(e);
                    }
                }
                Input::Disconnected(done) => {
                    self.drop_conn();
                    let _ = done.send(());
                }
                Input::Frame(m, _held) => {
                    if self.conn.is_none() {
                        continue;
                    }
                    if let Err(e) = self.frame(m) {
                        self.fail(e);
                    }
                }
            }
        }
        self.drop_conn();
    }

    /// Checks upstream's site key against the one trusted (following signed rotations), and
    /// starts a connection's work.
    fn connected(&mut self, w: Welcome) -> Result<(), EngineError> {
        self.status.observe_head(w.head_seq);
        let trust = self.store.trust(self.policy.anchor)?;
        let key = sign::follow(w.site, trust, &w.key, &w.rotations)
            .map_err(|e| peer(ErrorCode::Signature, format!("refusing upstream: {e}")))?;
        if trust != tamizdat_protocol::Trust::Key(key) {
            self.store.pin(self.policy.anchor, &key)?;
            match trust {
                tamizdat_protocol::Trust::Key(old) => info!(
                    from = %old.fingerprint(), to = %key.fingerprint(),
                    "followed the site's signed key rotation"
                ),
                tamizdat_protocol::Trust::Fingerprint(_) => {
                    info!(fingerprint = %key.fingerprint(), "pinned the site key")
                }
            }
        }
        let applied = self.store.applied()?;
        let same_site = self.store.site()? == Some(w.site);
        self.conn = Some(Conn {
            site: w.site,
            key,
            link: if w.mode == Mode::Full {
                GENESIS
            } else {
                self.store.link()?
            },
            full_floor: if same_site { applied } else { 0 },
            assembling: None,
            queue: VecDeque::new(),
            last_queued: if w.mode == Mode::Full { 0 } else { applied },
            wanted: HashMap::new(),
            gone: HashSet::new(),
            pushed: HashSet::new(),
            pushed_bytes: 0,
            front: None,
            ask_from: None,
            early_seq: None,
            early_seen: None,
            early_done: OpSet::default(),
        });
        Ok(())
    }

    fn fail(&mut self, e: EngineError) {
        let (code, msg) = match &e {
            EngineError::Peer(code, msg) => {
                warn!(cause = %msg, "refusing what upstream sent");
                (*code, msg.clone())
            }
            EngineError::Fs(FsError::Missing(_)) => {
                warn!(cause = %e, "out of step with upstream: asking for a full resync");
                let _ = self.store.reset();
                self.status.set_applied(0);
                *self.status.link.lock().unwrap() = GENESIS;
                *self.status.site.lock().unwrap() = None;
                (ErrorCode::Internal, e.to_string())
            }
            EngineError::Fs(f) => {
                let full = f
                    .io_error()
                    .and_then(|io| io.raw_os_error())
                    .is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT);
                let msg = if full {
                    format!("disk full: {f}; serving the previous versions, will retry")
                } else {
                    format!("cannot apply: {f}; serving the previous versions, will retry")
                };
                tracing::error!("{msg}");
                *self.status.error.lock().unwrap() = Some(msg.clone());
                (ErrorCode::Internal, msg)
            }
            EngineError::Local(err) => {
                let msg = format!("cannot apply: {err:#}; will retry");
                tracing::error!("{msg}");
                *self.status.error.lock().unwrap() = Some(msg.clone());
                (ErrorCode::Internal, msg)
            }
        };
        self.drop_conn();
        let _ = self.out.send(Output::Close(code, msg));
    }

    /// Forgets a connection's work in progress (what is applied stays applied).
    fn drop_conn(&mut self) {
        // Batches already handed over are placed and recorded: the next resync keeps them.
        if let Err(e) = self.finish_early() {
            tracing::warn!(cause = %e, "publishing part of a full resync failed");
        }
        if let Some(conn) = self.conn.take() {
            for h in &conn.pushed {
                self.stage.discard(h);
            }
        }
        // A manifest belonged to this connection (even one whose publish failed after it
        // left the queue).
        if self.manifest_rows {
            match self.store.manifest_clear() {
                Ok(()) => self.manifest_rows = false,
                Err(e) => tracing::warn!(
                    cause = %e,
                    "forgetting an unfinished full resync's manifest failed"
                ),
            }
        }
        self.stage.drop_partials();
    }

    fn frame(&mut self, m: Message) -> Result<(), EngineError> {
        match m {
            Message::Changeset(c) => self.changeset(c),
            Message::Blob(b) => self.blob(b),
            Message::Chunk(c) => self.chunk(c),
            Message::Gone { hash } => {
                let conn = self.conn.as_mut().expect("connected");
                if conn.arrived(&hash, false).is_none() {
                    return Err(peer(ErrorCode::Protocol, "Gone for a hash never asked for"));
                }
                self.stage.abandon(&hash);
                conn.gone.insert(hash);
                self.request_missing(Ask::More)?;
                self.try_apply()
            }
            other => Err(peer(
                ErrorCode::Protocol,
                format!("unexpected frame from upstream: {other:?}"),
            )),
        }
    }

    fn changeset(&mut self, c: Changeset) -> Result<(), EngineError> {
        let limits = self.policy.limits;
        limits.check(&c.ops)?;
        let Self {
            conn,
            store,
            stage,
            root,
            manifest_rows,
            ..
        } = self;
        let conn = conn.as_mut().expect("connected");
        self.status.observe_head(c.seq);
        match &mut conn.assembling {
            Some(a) => {
                if a.seq != c.seq || a.kind != c.kind {
                    return Err(peer(
                        ErrorCode::Protocol,
                        format!("changeset {} interrupted by {}", a.seq, c.seq),
                    ));
                }
                if a.ops.len() + c.ops.len() > limits.max_ops {
                    return Err(too_many(c.seq, limits.max_ops));
                }
                a.last = c.last;
                a.proof = c.proof;
                a.add(c.ops, store)?;
            }
            None => {
                if c.seq <= conn.last_queued {
                    return Err(peer(
                        ErrorCode::Protocol,
                        format!(
                            "sequence went backwards: {} after {}",
                            c.seq, conn.last_queued
                        ),
                    ));
                }
                if c.kind == Mode::Full && c.seq < conn.full_floor {
                    return Err(peer(
                        ErrorCode::Protocol,
                        format!(
                            "a full resync to {} would roll this mirror back from {}: a replay, \
                             or the origin was restored from an older backup (then re-enrol \
                             this mirror with a new join token)",
                            c.seq, conn.full_floor
                        ),
                    ));
                }
                if c.kind != Mode::Full && c.base_seq != conn.last_queued {
                    return Err(peer(
                        ErrorCode::Protocol,
                        format!(
                            "changeset {} builds on {}, but this mirror is at {}",
                            c.seq, c.base_seq, conn.last_queued
                        ),
                    ));
                }
                if c.ops.len() > limits.max_ops {
                    return Err(too_many(c.seq, limits.max_ops));
                }
                // A full resync's manifest goes into the state database; there is one
                // `manifest`, so a second full resync queued behind it stays in memory.
                let spill = c.kind == Mode::Full && !conn.queue.iter().any(|q| q.ops.is_spilled());
                if spill {
                    store.manifest_clear()?;
                    *manifest_rows = true;
                }
                let mut a = Assembly {
                    seq: c.seq,
                    base_seq: c.base_seq,
                    kind: c.kind,
                    ops: if spill {
                        Ops::Spilled(0)
                    } else {
                        Ops::Held(Vec::new())
                    },
                    digest: OpsDigest::new(),
                    last: c.last,
                    proof: c.proof,
                };
                a.add(c.ops, store)?;
                conn.assembling = Some(a);
            }
        }
        if !conn.assembling.as_ref().is_some_and(|a| a.last) {
            return Ok(());
        }
        let a = conn.assembling.take().expect("assembling");
        let proof = verify(conn, &a)?;
        conn.link = proof.next;
        if a.kind == Mode::Full {
            check_manifest(store, &a)?;
            // Only into an empty mirror: where files are held, the resync's deletes of
            // what the origin no longer has must run before its puts, as they do in one
            // publish at the end.
            if conn.queue.is_empty() && store.holds_nothing()? && root_is_fresh(root)? {
                conn.early_seq = Some(a.seq);
                conn.early_done = OpSet::default();
                conn.early_seen = stage.is_empty().then(|| Seen::new(a.ops.len()));
            }
        }
        conn.last_queued = a.seq;
        // Pushed blobs belong to the changeset that follows them; drop any it does not use.
        if !conn.pushed.is_empty() {
            let pushed = &mut conn.pushed;
            let _ = a.ops.visit(store, 0, |_, op| {
                if let Op::Put { hash, .. } = op {
                    pushed.remove(hash);
                }
                Ok(ControlFlow::Continue(()))
            })?;
            for h in conn.pushed.drain() {
                stage.discard(&h);
            }
            conn.pushed_bytes = 0;
        }
        debug!(seq = a.seq, ops = a.ops.len(), kind = ?a.kind, "changeset received");
        let early = match a.ops {
            Ops::Spilled(n) if conn.early_seq == Some(a.seq) => Some(n),
            _ => None,
        };
        conn.queue.push_back(Queued {
            seq: a.seq,
            base_seq: a.base_seq,
            kind: a.kind,
            ops: a.ops,
            proof,
        });
        if early.is_some() && self.early.is_none() {
            self.early = Some(Early::start(self, early)?);
        }
        self.request_missing(Ask::Newest)?;
        self.try_apply()
    }

    fn blob(&mut self, b: Blob) -> Result<(), EngineError> {
        let conn = self.conn.as_mut().expect("connected");
        let Some(size) = conn.wanted.get(&b.hash).map(|w| w.size) else {
            // Pushed ahead of the live changeset that will need it: small, bounded, verified.
            if conn.assembling.is_some() {
                return Err(peer(
                    ErrorCode::Protocol,
                    "unrequested blob inside a changeset",
                ));
            }
            if conn.pushed.len() >= MAX_PUSHED {
                return Err(peer(ErrorCode::Protocol, "too many blobs never asked for"));
            }
            let n = self.stage.whole(&b, INLINE_LIMIT)?;
            conn.pushed.insert(b.hash);
            conn.pushed_bytes += n;
            if conn.pushed_bytes > MAX_PUSHED_BYTES {
                return Err(peer(ErrorCode::Protocol, "too many bytes never asked for"));
            }
            return Ok(());
        };
        self.stage.whole_exact(&b, size)?;
        conn.arrived(&b.hash, true);
        self.request_missing(Ask::More)?;
        self.try_apply()
    }

    fn chunk(&mut self, c: Chunk) -> Result<(), EngineError> {
        let conn = self.conn.as_mut().expect("connected");
        let Some(size) = conn.wanted.get(&c.hash).map(|w| w.size) else {
            return Err(peer(ErrorCode::Protocol, "chunk never asked for"));
        };
        if self.stage.piece(&c, size)? {
            conn.arrived(&c.hash, true);
            self.request_missing(Ask::More)?;
            self.try_apply()?;
        }
        Ok(())
    }

    /// Asks for every hash a queued changeset needs that is not here, not asked for yet, and
    /// not gone, in queue order, until [`WANT_WINDOW`] are outstanding; then it notes where
    /// it stopped (`ask_from`) and goes on from there as bytes arrive ([`Ask::More`]). With
    /// [`Ask::Newest`], only from the changeset just queued. The ones before it
    /// were looked at when they arrived, and what they need that has gone missing since
    /// (a file they would copy from was replaced) is found by `plan`, which asks again for the
    /// whole queue: a live edit queued behind a 100,000-file full resync costs its own ops,
    /// not another 100,000 lookups.
    ///
    /// Each hash goes into `wanted` as it is found, and out in a `Need` every
    /// [`NEED_AT_ONCE`]: a set of the hashes seen and a list of those needed, each an
    /// entry per file of a full resync, were 13 MB of a fresh mirror's heap peak at 100,000
    /// files (heaptrack).
    fn request_missing(&mut self, ask: Ask) -> Result<(), EngineError> {
        let Self {
            conn,
            stage,
            store,
            root,
            out,
            ..
        } = self;
        let conn = conn.as_mut().expect("connected");
        let start = match (ask, conn.ask_from) {
            (Ask::All, _) => conn.queue.front().map(|cs| (cs.seq, 0)),
            (_, Some(at)) => Some(at),
            (Ask::Newest, None) => conn.queue.back().map(|cs| (cs.seq, 0)),
            (Ask::More, None) => None,
        };
        let Some((from_seq, from_op)) = start else {
            return Ok(());
        };
        if ask == Ask::More && conn.wanted.len() + NEED_AT_ONCE > WANT_WINDOW {
            return Ok(()); // asks again when a whole Need's worth has arrived
        }
        conn.ask_from = None;
        let Conn {
            queue,
            wanted,
            gone,
            front,
            ask_from,
            early_seq,
            early_seen,
            ..
        } = conn;
        let skip = queue.iter().take_while(|cs| cs.seq < from_seq).count();
        let mut need: Vec<ContentHash> = Vec::new();
        let front = front.as_mut().map(|f| (f.seq, &mut f.waiting));
        let (front_seq, mut front_waiting) = front.unzip();
        // One read transaction for the walk: each lookup on its own took and dropped SQLite's
        // locks (two `fcntl`s) and, after any commit of the early publisher's, read its pages
        // again; in a 100k resync that was 7 `pread`s and 4 `fcntl`s an op.
        store.reading(|store| -> Result<(), EngineError> {
            for cs in queue.iter().skip(skip) {
                let waits = front_seq == Some(cs.seq);
                let first = if cs.seq == from_seq { from_op } else { 0 };
                let walked = cs.ops.visit(store, first, |i, op| {
                    if wanted.len() >= WANT_WINDOW {
                        *ask_from = Some((cs.seq, i));
                        return Ok(ControlFlow::Break(()));
                    }
                    let Op::Put {
                        path, hash, size, ..
                    } = op
                    else {
                        return Ok(ControlFlow::Continue(()));
                    };
                    if let Some(w) = wanted.get_mut(hash) {
                        // Asked for by a later changeset: this one, ahead in the queue, waits
                        // for it first (the queue is walked in order).
                        if w.seq > cs.seq {
                            (w.seq, w.op) = (cs.seq, i as u32);
                            if let (true, Some(n)) = (waits, front_waiting.as_deref_mut()) {
                                *n += 1;
                            }
                        }
                        return Ok(ControlFlow::Continue(()));
                    }
                    if gone.contains(hash) {
                        return Ok(ControlFlow::Continue(()));
                    }
                    // A fresh mirror's resync (published early) finds in its records only
                    // what it published itself, which `obtainable` finds by hash anyway.
                    let fresh = *early_seq == Some(cs.seq);
                    if !fresh && (cs.kind == Mode::Full || cs.kind == Mode::CatchUp) {
                        if let Some(h) = store.get(path)? {
                            if h.hash == *hash {
                                return Ok(ControlFlow::Continue(()));
                            }
                        }
                    }
                    // Bytes this resync never looked for are nowhere here yet ([`Seen`]).
                    let unseen = fresh && early_seen.as_mut().is_some_and(|s| !s.insert(hash));
                    if !unseen && obtainable(stage, store, root, hash)? {
                        return Ok(ControlFlow::Continue(()));
                    }
                    let want = Want {
                        size: *size,
                        seq: cs.seq,
                        op: i as u32,
                    };
                    wanted.insert(*hash, want);
                    if let (true, Some(n)) = (waits, front_waiting.as_deref_mut()) {
                        *n += 1;
                    }
                    need.push(*hash);
                    if need.len() == NEED_AT_ONCE {
                        let _ = out.send(Output::Send(Message::Need {
                            hashes: std::mem::take(&mut need),
                        }));
                    }
                    Ok(ControlFlow::Continue(()))
                })?;
                if walked.is_break() {
                    break;
                }
            }
            Ok(())
        })?;
        if !need.is_empty() {
            let _ = out.send(Output::Send(Message::Need { hashes: need }));
        }
        Ok(())
    }

    /// Publishes queued changesets whose bytes are all here, in order.
    fn try_apply(&mut self) -> Result<(), EngineError> {
        loop {
            let conn = self.conn.as_ref().expect("connected");
            if conn.queue.is_empty() {
                return Ok(());
            }
            if (!conn.wanted.is_empty() || conn.ask_from.is_some()) && self.waits_on_wanted() {
                return self.publish_early();
            }
            // Its early batches are all in place and recorded before its end is planned.
            self.finish_early()?;
            let cs = self
                .conn
                .as_mut()
                .expect("connected")
                .queue
                .pop_front()
                .expect("front");
            let site = self.conn.as_ref().expect("connected").site;
            let plan = self.plan(cs)?;
            let Some(plan) = plan else {
                // Something it needs went missing since it was asked for: ask again.
                self.request_missing(Ask::All)?;
                return Ok(());
            };
            self.publish(plan, site)?;
        }
    }

    /// True while the front changeset still waits for requested bytes. How many it waits
    /// for is counted once per changeset and goes down as bytes arrive, so a full resync of
    /// n files costs O(n), not O(n) per arriving file; each request names the changeset it
    /// belongs to, so this needs no set of its own (a second set of every hash asked for was
    /// 4.9 MB of a fresh mirror's heap peak at 100,000 files, heaptrack).
    fn waits_on_wanted(&mut self) -> bool {
        let conn = self.conn.as_mut().expect("connected");
        let Some(cs) = conn.queue.front() else {
            return false;
        };
        if conn.front.as_ref().map(|f| f.seq) != Some(cs.seq) {
            let seq = cs.seq;
            conn.front = Some(Front {
                seq,
                waiting: conn.wanted.values().filter(|w| w.seq == seq).count(),
                ready: Vec::new(),
            });
        }
        let unasked = conn.ask_from.is_some_and(|(seq, _)| seq <= cs.seq);
        unasked || conn.front.as_ref().is_some_and(|f| f.waiting > 0)
    }

    /// While a full resync into an empty mirror still waits for bytes, hands a batch of the
    /// files that are here to the early publisher ([`Early`]), which renames them into place
    /// and records them (not the sequence: that, and the ack, wait for the end) while this
    /// thread goes on receiving. Killed in the middle, the next start finds them recorded,
    /// or in place with the right hash, and keeps them.
    fn publish_early(&mut self) -> Result<(), EngineError> {
        let conn = self.conn.as_mut().expect("connected");
        let (Some(front), Some(cs)) = (conn.front.as_mut(), conn.queue.front()) else {
            return Ok(());
        };
        if conn.early_seq != Some(cs.seq)
            || front.seq != cs.seq
            || front.ready.len() < early_batch(cs.ops.len())
        {
            return Ok(());
        }
        let mut ops: Vec<Op> = Vec::with_capacity(front.ready.len());
        let (stage, done) = (&self.stage, &mut conn.early_done);
        let ready = cs.ops.get_sorted(&self.store, &mut front.ready)?;
        front.ready.clear();
        for (i, op) in ready {
            if matches!(&op, Op::Put { hash, .. } if stage.has(hash)) {
                ops.push(op);
                done.insert(i);
            }
        }
        if self.early.is_none() {
            self.early = Some(Early::start(self, None)?);
        }
        let early = self.early.as_mut().expect("started");
        if early.tx.send(ops).is_err() {
            // It stopped on an error: that is the error of this resync.
            return self.finish_early();
        }
        Ok(())
    }

    /// Waits for the early publisher to place every batch it was given.
    fn finish_early(&mut self) -> Result<(), EngineError> {
        match self.early.take() {
            Some(early) => early.finish(),
            None => Ok(()),
        }
    }
}

/// The thread that publishes a fresh mirror's full resync in batches while the engine goes on
/// receiving: publishing (prepare, rename, directory fsync, record) took as long as receiving
/// and staging the same files, and on one thread the two took turns. It has its own handles
/// on the staging directory and the state database; the engine waits for it
/// ([`Engine::finish_early`]) before it plans the resync's end, and when the connection ends.
struct Early {
    tx: std::sync::mpsc::SyncSender<Vec<Op>>,
    /// Makes the manifest's directories ahead of the batches ([`make_dirs`]).
    dirs: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    thread: std::thread::JoinHandle<Result<(), EngineError>>,
}

impl Early {
    /// `spilled`: the resync's manifest, when it is in the state database, whose directories
    /// a second thread makes ahead.
    fn start(e: &Engine, spilled: Option<u32>) -> Result<Early, EngineError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Op>>(2);
        let stage = e.stage.sibling();
        let mut store = e.store.reopen()?;
        let (root, site, rt, status) = (
            e.root.clone(),
            e.site.clone(),
            e.rt.clone(),
            e.status.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("early-publish".into())
            .spawn(move || {
                // A batch's renames are made durable by the flush of the next batch's bytes
                // (the staging directory is on the tree's file system: one `syncfs` does
                // both) and recorded only after it; the last batch gets a flush of its own.
                // One flush per batch instead of two: each took 10-35 ms at 10k pages. The
                // flush runs on a thread of its own while this one prepares the next batch:
                // at 100k pages, waiting for it was 40 % of this thread's time.
                let mut placed: Option<(Vec<Op>, Dirs)> = None;
                let mut flushing: Option<(Vec<Op>, Vec<Option<PathBuf>>, Flush)> = None;
                let record = |store: &mut Store, ops: &[Op]| -> Result<(), EngineError> {
                    store.adopt(ops)?;
                    status.metrics.published_early.inc_by(ops.len() as u64);
                    Ok(())
                };
                let place = |store: &mut Store,
                             placed: &mut Option<(Vec<Op>, Dirs)>,
                             (ops, sources, flush): (Vec<Op>, Vec<Option<PathBuf>>, Flush)|
                 -> Result<(), EngineError> {
                    let t = std::time::Instant::now();
                    flush.wait()?;
                    let flushed = t.elapsed();
                    if let Some((done, _)) = placed.take() {
                        record(store, &done)?;
                    }
                    let recorded = t.elapsed();
                    let dirs = execute(&root, &site, &rt, &ops, &sources, Tree::Filling)?;
                    debug!(
                        files = ops.len(),
                        us = t.elapsed().as_micros() as u64,
                        flush_wait_us = flushed.as_micros() as u64,
                        record_us = (recorded - flushed).as_micros() as u64,
                        "published part of a full resync"
                    );
                    *placed = Some((ops, dirs));
                    Ok(())
                };
                loop {
                    // While a batch's flush runs, the next batch is prepared if it is here
                    // already; if not, the batch is placed now rather than when it comes.
                    let next = match flushing {
                        Some(_) => rx.try_recv().ok(),
                        None => match rx.recv() {
                            Ok(ops) => Some(ops),
                            Err(_) => break,
                        },
                    };
                    let Some(ops) = next else {
                        if let Some(prepared) = flushing.take() {
                            place(&mut store, &mut placed, prepared)?;
                        }
                        continue;
                    };
                    let sources = stage.prepare_early(&ops)?;
                    if let Some(prepared) = flushing.take() {
                        place(&mut store, &mut placed, prepared)?;
                    }
                    // After the renames just made: it covers them too.
                    flushing = Some((ops, sources, Flush::start(&root)));
                }
                if let Some((done, dirs)) = placed {
                    dirs.sync(&root)?;
                    record(&mut store, &done)?;
                }
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("cannot start the early publisher: {e}"))?;
        let dirs = match spilled {
            Some(n) => {
                let stop = Arc::new(AtomicBool::new(false));
                let (store, root, stopped) = (e.store.reopen()?, e.root.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("early-dirs".into())
                    .spawn(move || {
                        if let Err(err) = make_dirs(&store, &root, n, &stopped) {
                            // The publisher makes whatever is missing itself.
                            warn!("making a full resync's directories ahead: {err}");
                        }
                    })
                    .ok()
                    .map(|t| (stop, t))
            }
            None => None,
        };
        Ok(Early { tx, dirs, thread })
    }

    fn finish(self) -> Result<(), EngineError> {
        if let Some((stop, t)) = self.dirs {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
        drop(self.tx);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the early publisher panicked"))?
    }
}

/// A `syncfs` of the tree's file system running on a thread of its own, or, where no thread
/// could be started (a process limit), done already.
enum Flush {
    Running(std::thread::JoinHandle<Result<(), FsError>>),
    Done(Result<(), FsError>),
}

impl Flush {
    fn start(root: &Path) -> Flush {
        let dir = root.to_path_buf();
        match std::thread::Builder::new()
            .name("flush".into())
            .spawn(move || fsops::sync_fs(&dir))
        {
            Ok(t) => Flush::Running(t),
            Err(_) => Flush::Done(fsops::sync_fs(root)),
        }
    }

    fn wait(self) -> Result<(), EngineError> {
        match self {
            Flush::Running(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("a flush of the tree panicked"))??,
            Flush::Done(r) => r?,
        }
        Ok(())
    }
}

/// Makes the directories of a spilled manifest's `n` puts, in order, until `stop`: the early
/// publisher then only renames. Making them was half of its work (a `mkdir` a page in a site
/// of `yyyy/mm/slug/index.html`), and this runs while the bytes arrive. An empty directory
/// in the served tree shows nothing; each batch's flush makes those made so far durable
/// before its renames, and the publisher makes any it finds missing.
fn make_dirs(store: &Store, root: &Path, n: u32, stop: &AtomicBool) -> Result<(), EngineError> {
    // It reads the manifest once, in order: a small cache does.
    store.cache_kib(64)?;
    let mut dirs = fsops::Ancestors::fresh();
    let _ = Ops::Spilled(n).visit(store, 0, |_, op| {
        if stop.load(Ordering::Relaxed) {
            return Ok(ControlFlow::Break(()));
        }
        if let Op::Put { path, .. } = op {
            dirs.prepare_parent(root, path)?;
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(())
}

/// A full resync's manifest puts each path once, and never a file where another path needs a
/// directory (`a` and `a/b`): such a manifest cannot be applied, and publishing part of it
/// early would leave files and records disagreeing. A manifest in the state database was
/// checked for the first two as it went in ([`Assembly::add`]).
fn check_manifest(store: &Store, a: &Assembly) -> Result<(), EngineError> {
    let ops = match &a.ops {
        Ops::Spilled(_) => {
            return match store.manifest_conflict()? {
                Some((file, under)) => Err(file_and_dir(a.seq, &file, &under)),
                None => Ok(()),
            };
        }
        Ops::Held(ops) => ops,
    };
    let mut paths: HashSet<&str> = HashSet::with_capacity(ops.len());
    for op in ops {
        let Op::Put { path, .. } = op else {
            return Err(not_only_puts(a.seq));
        };
        if !paths.insert(path.as_str()) {
            return Err(listed_twice(a.seq, path));
        }
    }
    for p in &paths {
        if let Some((i, _)) = p.match_indices('/').find(|(i, _)| paths.contains(&p[..*i])) {
            return Err(file_and_dir(a.seq, &p[..i], p));
        }
    }
    Ok(())
}

fn not_only_puts(seq: u64) -> EngineError {
    peer(
        ErrorCode::Protocol,
        format!("full resync {seq} holds a delete or a move: refusing it"),
    )
}

fn listed_twice(seq: u64, path: &SitePath) -> EngineError {
    peer(
        ErrorCode::Protocol,
        format!("full resync {seq} lists '{path}' twice: refusing it"),
    )
}

fn file_and_dir(seq: u64, file: &str, under: &str) -> EngineError {
    peer(
        ErrorCode::Protocol,
        format!(
            "full resync {seq} lists '{file}' as a file and as a directory of '{under}': refusing it"
        ),
    )
}

fn too_many(seq: u64, max: usize) -> EngineError {
    peer(
        ErrorCode::Protocol,
        format!("changeset {seq} has more than {max} files, this mirror's --max-changeset-files"),
    )
}

/// Checks a complete changeset against the site key and the chain; returns its proof.
fn verify(conn: &Conn, a: &Assembly) -> Result<Proof, EngineError> {
    let Some(proof) = a.proof else {
        return Err(peer(
            ErrorCode::Signature,
            format!("changeset {} is not signed: refusing it", a.seq),
        ));
    };
    let expected = if a.kind == Mode::Full {
        GENESIS
    } else {
        conn.link
    };
    if proof.prev != expected {
        return Err(peer(
            ErrorCode::Signature,
            format!(
                "changeset {} does not follow the last changeset this mirror holds (its chain \
                 link differs): a changeset was dropped, replayed or reordered; refusing it",
                a.seq
            ),
        ));
    }
    let st = Statement {
        site: conn.site,
        seq: a.seq,
        base_seq: a.base_seq,
        kind: a.kind,
        prev: proof.prev,
        ops_digest: a.digest.finish(),
        next: proof.next,
    };
    sign::verify(&conn.key, &st, &proof.sig).map_err(|e| {
        peer(
            ErrorCode::Signature,
            format!("changeset {}: {e}; refusing it", a.seq),
        )
    })?;
    Ok(proof)
}

/// Whether the bytes for `hash` are staged already or held by a served file.
fn obtainable(
    stage: &Stage,
    store: &Store,
    root: &Path,
    hash: &ContentHash,
) -> Result<bool, EngineError> {
    if stage.has(hash) {
        return Ok(true);
    }
    Ok(local(store, root, hash)?.is_some())
}

/// A served file holding `hash`, per the store, that is really there.
fn local(store: &Store, root: &Path, hash: &ContentHash) -> Result<Option<PathBuf>, EngineError> {
    let Some(p) = store.find(hash)? else {
        return Ok(None);
    };
    Ok(fsops::existing(root, &p)?.filter(|f| f.is_file()))
}

/// Directories whose entries changed, to fsync.
struct Dirs(HashSet<PathBuf>);

impl Dirs {
    fn sync(&self, root: &std::path::Path) -> Result<(), FsError> {
        if self.0.len() > 16 {
            return fsops::sync_fs(root);
        }
        for d in &self.0 {
            if d.exists() {
                fsops::sync_dir(d)?;
            }
        }
        Ok(())
    }
}

/// A changeset reduced to what this mirror must do.
pub struct Plan {
    pub seq: u64,
    pub base_seq: u64,
    pub kind: Mode,
    /// Carried out on disk, and recorded.
    pub exec: Vec<Op>,
    /// Files a full resync found already in place: only recorded.
    pub adopted: Vec<Op>,
    /// The verified proof: its `next` is the link recorded with the sequence.
    pub proof: Proof,
    /// Its ops came from the state database's manifest, which goes once it is published.
    pub spilled: bool,
}

impl Engine {
    /// Drops what is already in place or gone upstream; for a full resync adds deletes for
    /// whatever the manifest does not list. `None` if a needed hash is no longer obtainable
    /// (the changeset goes back to the front of the queue).
    fn plan(&mut self, cs: Queued) -> Result<Option<Plan>, EngineError> {
        let mut exec: Vec<Op> = Vec::new();
        let mut adopted: Vec<Op> = Vec::new();
        let mut missing = false;
        let early = {
            let Self {
                conn,
                store,
                stage,
                root,
                ..
            } = &*self;
            let conn = conn.as_ref().expect("connected");
            let gone = &conn.gone;
            let early = conn.early_seq == Some(cs.seq);
            // A break is a hash that went missing (`missing`).
            let _ = cs.ops.visit(store, 0, |i, op| {
                // Placed and recorded by the early publisher, which has finished: looking
                // again was a tenth of a 10k-page resync, after its last byte had arrived.
                if early && conn.early_done.contains(i) {
                    return Ok(ControlFlow::Continue(()));
                }
                let Op::Put {
                    path,
                    hash,
                    mode,
                    mtime,
                    size,
                } = op
                else {
                    exec.push(op.clone());
                    return Ok(ControlFlow::Continue(()));
                };
                if gone.contains(hash) {
                    return Ok(ControlFlow::Continue(()));
                }
                let held = store.get(path)?;
                if held
                    .as_ref()
                    .is_some_and(|h| h.hash == *hash && h.mode == *mode && h.mtime == *mtime)
                    && fsops::existing(root, path)?.is_some_and(|f| f.is_file())
                {
                    return Ok(ControlFlow::Continue(()));
                }
                if cs.kind == Mode::Full && held.is_none() {
                    if let Some(full) = fsops::existing(root, path)? {
                        if stage.file_has(&full, *size, hash) {
                            adopted.push(op.clone());
                            return Ok(ControlFlow::Continue(()));
                        }
                    }
                }
                if !obtainable(stage, store, root, hash)? {
                    missing = true;
                    return Ok(ControlFlow::Break(()));
                }
                exec.push(op.clone());
                Ok(ControlFlow::Continue(()))
            })?;
            early
        };
        if missing {
            self.conn.as_mut().expect("connected").queue.push_front(cs);
            return Ok(None);
        }
        // A full resync that began in a fresh root (see `publish_early`) has nothing extra to
        // look for: only it has written there since. Otherwise whatever it does not list goes,
        // first.
        if cs.kind == Mode::Full && !early {
            let (store, stage, root) = (&self.store, &self.stage, &self.root);
            let mut extra = match &cs.ops {
                Ops::Held(ops) => {
                    let listed: HashSet<&SitePath> = ops
                        .iter()
                        .filter_map(|op| match op {
                            Op::Put { path, .. } => Some(path),
                            _ => None,
                        })
                        .collect();
                    let mut extra = store.paths()?;
                    extra.retain(|p| !listed.contains(p));
                    extra.extend(stage.unlisted_files(root, |p| listed.contains(p)));
                    extra
                }
                Ops::Spilled(_) => {
                    let mut extra = store.unlisted_held()?;
                    // A path that cannot be looked up counts as listed: kept, not deleted.
                    extra.extend(
                        stage.unlisted_files(root, |p| store.manifest_lists(p).unwrap_or(true)),
                    );
                    extra
                }
            };
            extra.sort();
            extra.dedup();
            exec.splice(0..0, extra.into_iter().map(|path| Op::Delete { path }));
        }
        Ok(Some(Plan {
            seq: cs.seq,
            base_seq: cs.base_seq,
            kind: cs.kind,
            exec,
            adopted,
            proof: cs.proof,
            spilled: cs.ops.is_spilled(),
        }))
    }

    fn publish(&mut self, plan: Plan, site: SiteId) -> Result<(), EngineError> {
        let t = std::time::Instant::now();
        let sources = self.stage.prepare(&plan.exec, |h| {
            local(&self.store, &self.root, h).ok().flatten()
        })?;
        self.store.adopt(&plan.adopted)?;
        // A live changeset is finished on the next start if the mirror is killed mid-way, so
        // one publish stays one publish even when upstream is gone. A large catch-up is not
        // copied again for that: the next connection's catch-up finishes it.
        if plan.exec.len() <= OPS_PER_FRAME {
            let frame = encode(&Message::Changeset(Changeset {
                seq: plan.seq,
                base_seq: plan.base_seq,
                produced_at_ms: 0,
                kind: plan.kind,
                ops: plan.exec.clone(),
                last: true,
                // Only its link is used when finishing: the ops here are what is left to do.
                proof: Some(plan.proof),
            }));
            self.store.set_pending(plan.seq, site, &frame)?;
        }
        let dirs = execute(
            &self.root,
            &self.site,
            &self.rt,
            &plan.exec,
            &sources,
            Tree::Served,
        )?;
        // The renames' directories and the state database flush at the same time; both are
        // durable before the ack.
        let (synced, committed) = std::thread::scope(|s| {
            let synced = s.spawn(|| dirs.sync(&self.root));
            let committed = self
                .store
                .commit(plan.seq, site, &plan.exec, &plan.proof.next);
            (synced.join(), committed)
        });
        synced.map_err(|_| anyhow::anyhow!("directory sync thread panicked"))??;
        committed?;
        if plan.spilled {
            self.store.manifest_clear()?;
            self.manifest_rows = false;
        }
        self.status.set_applied(plan.seq);
        *self.status.link.lock().unwrap() = plan.proof.next;
        self.status.metrics.applied(t.elapsed().as_secs_f64());
        *self.status.site.lock().unwrap() = Some(site);
        *self.status.error.lock().unwrap() = None;
        let _ = self.out.send(Output::Send(Message::Ack { seq: plan.seq }));
        debug!(
            seq = plan.seq,
            ops = plan.exec.len(),
            us = t.elapsed().as_micros() as u64,
            "changeset applied"
        );
        if plan.kind != Mode::Live {
            info!(seq = plan.seq, ops = plan.exec.len(), kind = ?plan.kind, "caught up");
        }
        Ok(())
    }

    /// Finishes a changeset that was being renamed into place when the mirror stopped.
    fn recover(&mut self) -> Result<()> {
        let Some((seq, site, frame)) = self.store.pending()? else {
            return Ok(());
        };
        let Ok(Message::Changeset(cs)) = tamizdat_protocol::decode(&frame, usize::MAX) else {
            anyhow::bail!("the pending changeset in the state database is damaged");
        };
        info!(
            seq,
            ops = cs.ops.len(),
            "finishing a changeset interrupted by a stop"
        );
        let sources = self.stage.recovered_sources(&cs.ops);
        match execute(
            &self.root,
            &self.site,
            &self.rt,
            &cs.ops,
            &sources,
            Tree::Served,
        )
        .and_then(|d| d.sync(&self.root).map_err(Into::into))
        {
            Ok(()) => {}
            Err(EngineError::Fs(FsError::Missing(_))) => {}
            Err(e) => anyhow::bail!("cannot finish the interrupted changeset: {e}"),
        }
        let Some(proof) = cs.proof else {
            anyhow::bail!("the pending changeset in the state database has no chain link");
        };
        self.store.commit(seq, site, &cs.ops, &proof.next)?;
        Ok(())
    }
}

/// What [`execute`] expects to find where it renames.
#[derive(Clone, Copy, PartialEq)]
enum Tree {
    /// A tree in service: a file in the way is kept open across the rename, so freeing its
    /// blocks is not on the publish's path, and missing directories are the exception.
    Served,
    /// A fresh mirror's tree being filled by its full resync (the early publisher): nothing
    /// is normally in the way and the directories are made already ([`make_dirs`]), so each
    /// file is renamed without looking first. Where that fails, whatever is in the way is
    /// dealt with as in service, directories are made without looking first
    /// ([`fsops::Ancestors::fresh`]), and the rename is tried again.
    Filling,
}

/// The root and the directory of the last source, held open for `renameat`.
struct RenameAt {
    root: std::os::fd::OwnedFd,
    from: Option<(PathBuf, std::os::fd::OwnedFd)>,
}

impl RenameAt {
    fn open(root: &Path) -> Option<Self> {
        let root = fsops::open_dir(root).ok()?;
        Some(RenameAt { root, from: None })
    }

    /// Renames `src` to `rel` under the root; false where that failed (the caller then
    /// looks at what is in the way).
    fn rename(&mut self, src: &Path, rel: &str) -> bool {
        let (Some(dir), Some(name)) = (src.parent(), src.file_name()) else {
            return false;
        };
        if self.from.as_ref().is_none_or(|(d, _)| d != dir) {
            self.from = fsops::open_dir(dir).ok().map(|fd| (dir.to_path_buf(), fd));
        }
        let Some((_, from)) = &self.from else {
            return false;
        };
        rustix::fs::renameat(from, name, &self.root, rel).is_ok()
    }
}

/// Carries out `ops` in `root` under `site`'s publish gate; returns the directories to fsync.
/// The files it replaces or deletes are freed after the gate opens ([`fsops::Held`]).
fn execute(
    root: &Path,
    site: &Site,
    rt: &tokio::runtime::Handle,
    ops: &[Op],
    sources: &[Option<PathBuf>],
    tree: Tree,
) -> Result<Dirs, EngineError> {
    // A large changeset (a full resync, a long catch-up) empties the server's caches
    // instead of naming every path: a list of 100,000 paths, and the set the server builds
    // from it, were the largest allocations of a 100k-file full resync (heaptrack).
    let changed: Vec<String> = if ops.len() > INVALIDATE_EACH {
        vec![String::new()]
    } else {
        ops.iter()
            .flat_map(|op| match op {
                Op::Move { from, to } => vec![from.to_string(), to.to_string()],
                other => vec![other.path().to_string()],
            })
            .collect()
    };
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut ancestors = match tree {
        Tree::Served => fsops::Ancestors::default(),
        Tree::Filling => fsops::Ancestors::fresh(),
    };
    let mut held = fsops::Held::default();
    // Filling, each file is renamed relative to the root and to its staging directory, both
    // held open: the kernel looks up the path's own components, not the root's (a seventh of
    // the applying thread's time was path walking before the stage did the same).
    let mut at = match tree {
        Tree::Filling => RenameAt::open(root),
        Tree::Served => None,
    };
    let gate = rt.block_on(site.publish(changed));
    for (op, src) in ops.iter().zip(sources) {
        match op {
            Op::Put {
                path, hash, size, ..
            } => {
                let Some(src) = src else { continue };
                // Filling, the directories are normally there already (`make_dirs`).
                let placed = match tree {
                    Tree::Filling => Some(root.join(path.as_str())).filter(|full| match &mut at {
                        Some(at) => at.rename(src, path.as_str()),
                        None => std::fs::rename(src, full).is_ok(),
                    }),
                    Tree::Served => None,
                };
                let full = match placed {
                    Some(full) => full,
                    None => {
                        let full = ancestors.prepare_parent(root, path)?;
                        if fsops::clear_for_rename(&full, &mut held)? {
                            ancestors.forget();
                        }
                        std::fs::rename(src, &full).map_err(|e| FsError::io("rename", &full, e))?;
                        full
                    }
                };
                if site.wants_hash(*size) {
                    let _ = site.set_hash(path.as_str(), &hash.to_hex());
                }
                dirs.insert(full.parent().unwrap_or(root).to_path_buf());
            }
            Op::Delete { path } => {
                // It may prune directories the next put would take as checked.
                ancestors.forget();
                if let Some(full) = fsops::existing(root, path)? {
                    // Only a regular file: opening anything else (a device a hostile hand
                    // left in the root) could have effects of its own.
                    if std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_file()) {
                        held.hold(&full);
                    }
                    if fsops::remove_any(&full)? {
                        fsops::prune_empty_parents(root, &full);
                        dirs.insert(full.parent().unwrap_or(root).to_path_buf());
                    }
                }
            }
            Op::Move { from, to } => {
                ancestors.forget();
                let Some(src) = fsops::existing(root, from)?.filter(|p| p.exists()) else {
                    if fsops::existing(root, to)?.is_some_and(|p| p.exists()) {
                        continue; // done before a crash
                    }
                    return Err(FsError::Missing(from.clone()).into());
                };
                let dst = fsops::prepare_parent(root, to)?;
                fsops::clear_for_rename(&dst, &mut held)?;
                std::fs::rename(&src, &dst).map_err(|e| FsError::io("rename", &dst, e))?;
                fsops::prune_empty_parents(root, &src);
                dirs.insert(src.parent().unwrap_or(root).to_path_buf());
                dirs.insert(dst.parent().unwrap_or(root).to_path_buf());
            }
        }
    }
    drop(gate);
    held.close_later();
    Ok(Dirs(dirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(i: u32) -> Op {
        let p = format!("d{}/page-{i}.html", i % 5);
        Op::Put {
            hash: ContentHash::of(p.as_bytes()),
            path: SitePath::new(p).unwrap(),
            size: i as u64,
            mode: 0o644,
            mtime: 7,
        }
    }

    /// A store whose manifest holds `n` ops, and the same ops held in memory.
    fn manifest(n: u32) -> (tempfile::TempDir, Store, Vec<Op>) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let all: Vec<Op> = (0..n).map(put).collect();
        assert_eq!(store.manifest_add(0, &all).unwrap(), None);
        (dir, store, all)
    }

    #[test]
    fn ops_come_back_sorted_by_index_whether_held_or_spilled() {
        let (_dir, store, all) = manifest(300);
        // Runs, lone indices and gaps wider than RUN_GAP, out of order.
        let wanted = [250u32, 3, 4, 5, 299, 0, 40, 41, 57, 120, 6, 121, 200];
        let mut sorted = wanted.to_vec();
        sorted.sort_unstable();
        let expected: Vec<(u32, Op)> = sorted.iter().map(|&i| (i, put(i))).collect();
        for ops in [Ops::Held(all.clone()), Ops::Spilled(300)] {
            let mut indices = wanted.to_vec();
            let got = ops.get_sorted(&store, &mut indices).unwrap();
            assert_eq!(got, expected);
            assert_eq!(indices, sorted);
        }
    }

    #[test]
    fn a_hash_never_seen_is_always_told_apart_and_few_others_are_mistaken_for_it() {
        let hash = |i: u32| ContentHash::of(&i.to_le_bytes());
        let mut seen = Seen::new(100_000);
        assert!(
            !seen.insert(&hash(0)),
            "an empty filter took a hash for seen"
        );
        for i in 1..100_000 {
            seen.insert(&hash(i));
        }
        // Every hash noted says so (no false negatives: a staged file is never asked for
        // again) ...
        assert!((0..100_000).all(|i| seen.insert(&hash(i))));
        // ... and few of those never noted look noted (each costs a lookup, no more).
        let mistaken = (100_000..110_000)
            .filter(|&i| seen.insert(&hash(i)))
            .count();
        assert!(
            mistaken < 100,
            "{mistaken} of 10,000 new hashes looked seen"
        );
    }

    #[test]
    fn an_index_past_the_manifest_is_an_error_not_a_shorter_answer() {
        let (_dir, store, all) = manifest(20);
        for ops in [Ops::Held(all.clone()), Ops::Spilled(20)] {
            assert!(ops.get_sorted(&store, &mut [2, 19, 20]).is_err());
            assert!(ops.get_sorted(&store, &mut [40, 2]).is_err());
        }
    }
}

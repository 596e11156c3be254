//! Turns a settled batch of file-system events into one numbered changeset.
//!
//! Events are only hints: every path they name is looked at on disk and compared with the
//! index, so a lost, doubled or reordered event cannot make the journal wrong. Within one
//! batch, renames are planned first (a file or directory whose identity is unchanged becomes a
//! `Move`: the mirror renames, no bytes travel), then every dirty path; a directory is walked
//! (inotify never reports what a directory held when it arrived). The ops go out in the order
//! moves, deletes, puts; the rows and the new head are committed in one durable transaction
//! before the hub sends anything.

use crate::hashing::{hash_file, hash_many, Hashed};
use crate::hub::Hub;
use crate::ignore::Ignore;
use crate::index::{now_ms, Entry, RowChange, Stat, Txn, Writer};
use crate::keys::Signing;
use crate::metrics::add;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tamizdat_protocol::{sign, ContentHash, Link, Mode, Op, OpsDigest, Proof, SitePath};
use tracing::{debug, warn};

/// Files hashed together during a walk.
const HASH_BATCH: usize = 1024;

/// By default, a changeset with more ops than this is not sent inline: sessions catch up from
/// the index, so a huge change (a tree copied in) never sits in memory as one message.
pub const MAX_INLINE_OPS: usize = 20_000;

/// What the watcher gathered in one settle window.
#[derive(Default, Debug)]
pub struct Batch {
    pub dirty: BTreeSet<PathBuf>,
    pub moves: Vec<(PathBuf, PathBuf)>,
    /// Events were lost: compare the whole tree with the index.
    pub rescan: bool,
    /// ... because the kernel's event queue overflowed.
    pub overflowed: bool,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty() && self.moves.is_empty() && !self.rescan
    }
}

pub struct Journal {
    root: PathBuf,
    writer: Writer,
    ignore: Ignore,
    hub: Arc<Hub>,
    /// Tombstones kept, in changes: a mirror away longer gets a full resync.
    retention: u64,
    /// Larger changesets are announced, not sent: mirrors catch up from the index.
    max_inline_ops: usize,
    signing: Arc<Signing>,
}

impl Journal {
    pub fn new(
        root: PathBuf,
        writer: Writer,
        ignore: Ignore,
        hub: Arc<Hub>,
        retention: u64,
        max_inline_ops: usize,
        signing: Arc<Signing>,
    ) -> Self {
        Self {
            root,
            writer,
            ignore,
            hub,
            retention,
            max_inline_ops,
            signing,
        }
    }

    /// Plans, commits and publishes one batch. Returns the new sequence, if anything changed.
    pub fn apply(&mut self, batch: Batch) -> Result<Option<u64>> {
        let (head, _) = self.writer.head()?;
        let seq = head + 1;
        let prev = self.writer.link()?;
        let hub = self.hub.clone();
        let Some(planned) = self.plan(batch, seq, prev, &hub)? else {
            return Ok(None);
        };
        let produced = now_ms();
        let mut push = Vec::new();
        for (h, bytes, fresh) in planned.small {
            hub.cache.insert(h, &bytes);
            if fresh && !push.contains(&h) {
                push.push(h);
            }
        }
        add(&hub.metrics.changesets_total, 1);
        add(&hub.metrics.ops_total, planned.count as u64);
        debug!(seq, ops = planned.count, "changeset committed");
        if planned.count > self.max_inline_ops {
            hub.publish_catch_up(seq, produced);
        } else {
            hub.publish(seq, produced, planned.ops, &push, planned.proof);
        }
        if seq % 1024 == 0 {
            let n = self.writer.compact(self.retention)?;
            if n > 0 {
                debug!(tombstones = n, "compacted the journal");
            }
        }
        Ok(Some(seq))
    }

    /// Plans a batch against the index and commits it as `seq`; `None` when nothing changed.
    fn plan(&mut self, batch: Batch, seq: u64, prev: Link, hub: &Hub) -> Result<Option<Planned>> {
        let tx = self.writer.begin()?;
        let mut plan = Plan {
            root: &self.root,
            ignore: &self.ignore,
            tx,
            seq,
            moves: Vec::new(),
            deletes: Vec::new(),
            puts: Vec::new(),
            small: Vec::new(),
            hub,
            count: 0,
            max_inline_ops: self.max_inline_ops,
        };
        if batch.overflowed {
            add(&hub.metrics.overflows_total, 1);
        }
        if batch.rescan {
            add(&hub.metrics.reconciles_total, 1);
            plan.walk(&self.root.clone(), None)?;
        }
        for (from, to) in &batch.moves {
            plan.moved(from, to)?;
        }
        for p in &batch.dirty {
            plan.path(p)?;
        }
        let Plan {
            tx,
            moves,
            deletes,
            puts,
            small,
            count,
            ..
        } = plan;
        if count == 0 {
            tx.commit(None, 0, 0)?;
            return Ok(None);
        }
        let mut ops = moves;
        ops.extend(deletes);
        ops.extend(puts);
        // Linked and signed before anything is sent. A changeset too big to send inline has
        // no ops here, and is digested as none: mirrors reach past it by a signed catch-up.
        let ops_digest = OpsDigest::of(&ops);
        let site = self.signing.site;
        let next = sign::link(site, seq, &prev, &ops_digest);
        tx.commit(Some((seq, next)), now_ms(), count)?;
        let proof = self
            .signing
            .proof(seq, seq - 1, Mode::Live, prev, ops_digest, next);
        Ok(Some(Planned {
            ops,
            small,
            count,
            proof,
        }))
    }
}

/// A committed changeset, ready to publish.
struct Planned {
    /// In the order to apply them: moves, deletes, puts. Empty when there were too many to
    /// send inline.
    ops: Vec<Op>,
    /// Bytes of the small files just hashed, for the blob cache; true when no live file had
    /// those bytes before.
    small: Vec<(ContentHash, Vec<u8>, bool)>,
    count: usize,
    proof: Proof,
}

struct Plan<'a> {
    root: &'a Path,
    ignore: &'a Ignore,
    tx: Txn<'a>,
    seq: u64,
    moves: Vec<Op>,
    deletes: Vec<Op>,
    puts: Vec<Op>,
    small: Vec<(ContentHash, Vec<u8>, bool)>,
    hub: &'a Hub,
    /// Ops planned, kept or not.
    count: usize,
    max_inline_ops: usize,
}

impl Plan<'_> {
    /// Counts one more op; false once the changeset is too big to send inline (its ops are
    /// then dropped: mirrors catch up from the index instead).
    fn keep(&mut self) -> bool {
        self.count += 1;
        if self.count > self.max_inline_ops {
            if self.count == self.max_inline_ops + 1 {
                self.moves = Vec::new();
                self.deletes = Vec::new();
                self.puts = Vec::new();
                self.small = Vec::new();
            }
            return false;
        }
        true
    }

    /// The site path of `abs`, or `None` when it is outside the root, ignored, or not a name
    /// a mirror could hold.
    fn site_path(&self, abs: &Path) -> Option<SitePath> {
        let rel = abs.strip_prefix(self.root).ok()?;
        if rel.as_os_str().is_empty() || self.ignore.path(rel) {
            return None;
        }
        match SitePath::from_fs(self.root, abs) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(path = %abs.display(), cause = %e, "not sent: the name cannot be mirrored");
                None
            }
        }
    }

    fn row(&self, change: RowChange) -> Result<()> {
        self.tx.apply(&change, self.seq)
    }

    /// A rename seen as a from/to pair.
    fn moved(&mut self, from: &Path, to: &Path) -> Result<()> {
        let (Some(f), Some(t)) = (self.site_path(from), self.site_path(to)) else {
            // A temp file renamed into place, or a move in or out of the tree.
            self.path(from)?;
            return self.path(to);
        };
        let same = match std::fs::symlink_metadata(to) {
            Ok(m) if m.is_file() => self
                .tx
                .get(&f)?
                .is_some_and(|e| e.same_file(&Stat::of(&m)) && e.mode == Stat::of(&m).mode),
            Ok(m) if m.is_dir() => self.tx.get(&f)?.is_none() && self.tx.has_under(&f)?,
            _ => false,
        };
        if !same || t.starts_with(&f) {
            self.path(from)?;
            return self.path(to);
        }
        self.row(RowChange::Moved {
            from: f.clone(),
            to: t.clone(),
        })?;
        if self.keep() {
            self.moves.push(Op::Move { from: f, to: t });
        }
        if to.is_dir() {
            // Anything written into it since is caught by comparing with the moved rows.
            self.walk(to, self.site_path(to))?;
        }
        Ok(())
    }

    /// Brings the index in line with whatever is (or is not) at `abs` now.
    fn path(&mut self, abs: &Path) -> Result<()> {
        let Some(sp) = self.site_path(abs) else {
            return Ok(());
        };
        match std::fs::symlink_metadata(abs) {
            Ok(m) if m.is_file() => {
                if self.tx.has_under(&sp)? {
                    self.delete(sp.clone(), true)?;
                }
                let stat = Stat::of(&m);
                let old = self.tx.get(&sp)?;
                if let Some(o) = &old {
                    if o.same_file(&stat) && o.mode == stat.mode {
                        return Ok(());
                    }
                }
                match hash_file(abs) {
                    Ok(Some(h)) => self.file(sp, old, h)?,
                    Ok(None) => self.gone(sp)?,
                    Err(e) => warn!(path = %abs.display(), cause = %e, "not sent: cannot read"),
                }
                Ok(())
            }
            Ok(m) if m.is_dir() => {
                if self.tx.get(&sp)?.is_some() {
                    self.delete(sp.clone(), false)?;
                }
                self.walk(abs, Some(sp))
            }
            Ok(_) => self.gone(sp),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.gone(sp),
            Err(e) => {
                warn!(path = %abs.display(), cause = %e, "cannot stat");
                Ok(())
            }
        }
    }

    /// Records a hashed file if its bytes or mode changed.
    fn file(&mut self, sp: SitePath, old: Option<Entry>, h: Hashed) -> Result<()> {
        add(&self.hub.metrics.hashed_bytes_total, h.entry.size);
        if let Some(o) = old {
            if o.hash == h.entry.hash && o.mode == h.entry.mode {
                return self.row(RowChange::Touch(sp, h.entry));
            }
        }
        if self.keep() {
            if let Some(bytes) = h.small {
                // Bytes no live file had before cannot be on any mirror yet: they are pushed
                // with the changeset instead of waiting for a Need.
                let fresh = !self.tx.hash_live(&h.entry.hash)?;
                self.small.push((h.entry.hash, bytes, fresh));
            }
            self.puts.push(Op::Put {
                path: sp.clone(),
                hash: h.entry.hash,
                size: h.entry.size,
                mode: h.entry.mode,
                mtime: h.entry.mtime_ns.div_euclid(1_000_000_000),
            });
        }
        self.row(RowChange::Live(sp, h.entry))
    }

    fn gone(&mut self, sp: SitePath) -> Result<()> {
        if self.tx.get(&sp)?.is_some() {
            self.delete(sp, false)
        } else if self.tx.has_under(&sp)? {
            self.delete(sp, true)
        } else {
            Ok(())
        }
    }

    fn delete(&mut self, sp: SitePath, dir: bool) -> Result<()> {
        self.row(RowChange::Gone {
            path: sp.clone(),
            dir,
        })?;
        if self.keep() {
            self.deletes.push(Op::Delete { path: sp });
        }
        Ok(())
    }

    /// Compares everything under directory `abs` (the whole tree when `sp` is `None`) with the
    /// index: new and changed files are hashed on every core, a batch at a time so a large tree
    /// never sits in memory, and indexed files no longer on disk are deleted.
    fn walk(&mut self, abs: &Path, sp: Option<SitePath>) -> Result<()> {
        let mut batch: Vec<(PathBuf, SitePath, Option<Entry>)> = Vec::new();
        let ignore = self.ignore;
        let walker = walkdir::WalkDir::new(abs)
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| !ignore.name(e.file_name()));
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    warn!(cause = %e, "walk error");
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let Some(p) = self.site_path(entry.path()) else {
                continue;
            };
            let Ok(m) = entry.metadata() else { continue };
            let stat = Stat::of(&m);
            let old = self.tx.get(&p)?;
            if old
                .as_ref()
                .is_some_and(|o| o.same_file(&stat) && o.mode == stat.mode)
            {
                continue;
            }
            batch.push((entry.into_path(), p, old));
            if batch.len() >= HASH_BATCH {
                self.hash_batch(&mut batch)?;
            }
        }
        self.hash_batch(&mut batch)?;
        let root = self.root;
        let mut gone = Vec::new();
        self.tx.for_each_live(sp.as_ref(), |p| {
            let on_disk = std::fs::symlink_metadata(p.to_fs(root)).is_ok_and(|m| m.is_file());
            if !on_disk {
                gone.push(p);
            }
            Ok(())
        })?;
        for p in gone {
            self.delete(p, false)?;
        }
        Ok(())
    }

    fn hash_batch(&mut self, batch: &mut Vec<(PathBuf, SitePath, Option<Entry>)>) -> Result<()> {
        let mut names: Vec<Option<(SitePath, Option<Entry>)>> = Vec::with_capacity(batch.len());
        let mut paths = Vec::with_capacity(batch.len());
        for (i, (path, p, old)) in batch.drain(..).enumerate() {
            paths.push((path, i));
            names.push(Some((p, old)));
        }
        for (i, r) in hash_many(paths) {
            let Some((p, old)) = names[i].take() else {
                continue;
            };
            match r {
                Ok(Some(h)) => self.file(p, old, h)?,
                Ok(None) => {
                    if old.is_some() {
                        self.delete(p, false)?;
                    }
                }
                Err(e) => warn!(path = %p, cause = %e, "not sent: cannot read"),
            }
        }
        Ok(())
    }
}

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
use crate::metrics::add;
use anyhow::Result;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tamizdat_protocol::{ContentHash, Op, SitePath};
use tracing::{debug, warn};

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
}

impl Journal {
    pub fn new(
        root: PathBuf,
        writer: Writer,
        ignore: Ignore,
        hub: Arc<Hub>,
        retention: u64,
    ) -> Self {
        Self {
            root,
            writer,
            ignore,
            hub,
            retention,
        }
    }

    /// Plans, commits and publishes one batch. Returns the new sequence, if anything changed.
    pub fn apply(&mut self, batch: Batch) -> Result<Option<u64>> {
        let (head, _) = self.writer.head()?;
        let seq = head + 1;
        let hub = self.hub.clone();
        let planned = self.plan(batch, seq, &hub)?;
        let Some((ops, small)) = planned else {
            return Ok(None);
        };
        let produced = now_ms();
        for (h, bytes) in small {
            hub.cache.insert(h, &bytes);
        }
        add(&hub.metrics.changesets_total, 1);
        add(&hub.metrics.ops_total, ops.len() as u64);
        debug!(seq, ops = ops.len(), "changeset committed");
        hub.publish(seq, produced, ops);
        if seq % 1024 == 0 {
            let n = self.writer.compact(self.retention)?;
            if n > 0 {
                debug!(tombstones = n, "compacted the journal");
            }
        }
        Ok(Some(seq))
    }

    /// Plans a batch against the index and commits it as `seq`; returns the ops and the small
    /// files' bytes, or `None` when nothing changed.
    #[allow(clippy::type_complexity)]
    fn plan(
        &mut self,
        batch: Batch,
        seq: u64,
        hub: &Hub,
    ) -> Result<Option<(Vec<Op>, Vec<(ContentHash, Vec<u8>)>)>> {
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
            ..
        } = plan;
        let mut ops = moves;
        ops.extend(deletes);
        ops.extend(puts);
        if ops.is_empty() {
            tx.commit(None, 0, 0)?;
            return Ok(None);
        }
        tx.commit(Some(seq), now_ms(), ops.len())?;
        Ok(Some((ops, small)))
    }
}

struct Plan<'a> {
    root: &'a Path,
    ignore: &'a Ignore,
    tx: Txn<'a>,
    seq: u64,
    moves: Vec<Op>,
    deletes: Vec<Op>,
    puts: Vec<Op>,
    small: Vec<(ContentHash, Vec<u8>)>,
    hub: &'a Hub,
}

impl Plan<'_> {
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
            Ok(m) if m.is_dir() => self.tx.get(&f)?.is_none() && !self.tx.under(&f)?.is_empty(),
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
        self.moves.push(Op::Move { from: f, to: t });
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
                if !self.tx.under(&sp)?.is_empty() {
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
        if let Some(bytes) = h.small {
            self.small.push((h.entry.hash, bytes));
        }
        self.puts.push(Op::Put {
            path: sp.clone(),
            hash: h.entry.hash,
            size: h.entry.size,
            mode: h.entry.mode,
            mtime: h.entry.mtime_ns.div_euclid(1_000_000_000),
        });
        self.row(RowChange::Live(sp, h.entry))
    }

    fn gone(&mut self, sp: SitePath) -> Result<()> {
        if self.tx.get(&sp)?.is_some() {
            self.delete(sp, false)
        } else if !self.tx.under(&sp)?.is_empty() {
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
        self.deletes.push(Op::Delete { path: sp });
        Ok(())
    }

    /// Compares everything under directory `abs` (the whole tree when `sp` is `None`) with the
    /// index: new and changed files are hashed on every core, vanished ones deleted.
    fn walk(&mut self, abs: &Path, sp: Option<SitePath>) -> Result<()> {
        let mut known: HashMap<SitePath, Entry> = match &sp {
            Some(d) => self.tx.under(d)?.into_iter().collect(),
            None => {
                let mut m = HashMap::new();
                for p in self.tx.live_paths()? {
                    if let Some(e) = self.tx.get(&p)? {
                        m.insert(p, e);
                    }
                }
                m
            }
        };
        let mut to_hash = Vec::new();
        let mut names = Vec::new();
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
            let old = known.remove(&p);
            let Ok(m) = entry.metadata() else { continue };
            let stat = Stat::of(&m);
            if let Some(o) = &old {
                if o.same_file(&stat) && o.mode == stat.mode {
                    continue;
                }
            }
            to_hash.push((entry.into_path(), names.len()));
            names.push((p, old));
        }
        let mut names: Vec<Option<(SitePath, Option<Entry>)>> =
            names.into_iter().map(Some).collect();
        for (i, r) in hash_many(to_hash) {
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
        let mut gone: Vec<SitePath> = known.into_keys().collect();
        gone.sort();
        for p in gone {
            self.delete(p, false)?;
        }
        Ok(())
    }
}

//! The index is the journal: per path, the hash, size, mode, file identity (mtime, inode) and
//! the sequence of its last change, deletions kept as tombstones. "What changed after S" is a
//! range scan on the `seq` column.
//!
//! Schema (SQLite, WAL, `synchronous=FULL`; inspect with `sqlite3 STATE/index.db`):
//! ```sql
//! meta(key TEXT PRIMARY KEY, value)            -- schema, site, head, horizon, link
//! files(path TEXT PRIMARY KEY, hash BLOB, size, mode, mtime_ns, ino, seq, deleted)
//! changesets(seq INTEGER PRIMARY KEY, produced_at_ms, ops, link)
//! mirrors(name TEXT PRIMARY KEY, secret_hash BLOB, created_ms, revoked, acked_seq,
//!         last_seen_ms, bytes_sent)
//! ```

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tamizdat_protocol::{ContentHash, Link, Op, SiteId, SitePath, GENESIS};
use tamizdat_sqlite::{hand_over, Checkpointer};

const SCHEMA_VERSION: i64 = 1;
const DB_FILE: &str = "index.db";

/// What the index knows of one live file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub hash: ContentHash,
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
    pub ino: u64,
}

impl Entry {
    /// The file on disk still looks like the one that was hashed.
    pub fn same_file(&self, stat: &Stat) -> bool {
        self.size == stat.size && self.mtime_ns == stat.mtime_ns && self.ino == stat.ino
    }
}

/// The parts of `lstat` the index compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
    pub ino: u64,
}

impl Stat {
    pub fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stat {
            size: m.len(),
            mode: m.mode() & 0o7777,
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ino: m.ino(),
        }
    }
}

/// A change to make to the `files` table, in the same transaction as its changeset.
pub enum RowChange {
    Live(SitePath, Entry),
    /// The same bytes with a new identity (touched, copied over itself): no new sequence.
    Touch(SitePath, Entry),
    /// A file, or a whole directory when `dir` is set.
    Gone {
        path: SitePath,
        dir: bool,
    },
    /// Rebase every live row under (or at) `from` onto `to`.
    Moved {
        from: SitePath,
        to: SitePath,
    },
}

/// Opens connections to one state directory's database.
/// Where the bytes of `hash` can be read, per `c`.
fn locate_in(c: &Connection, hash: &ContentHash) -> Result<Option<(SitePath, u64)>> {
    // Once per hash a mirror asks for: a cached statement, not one parsed each time.
    let row: Option<(String, i64)> = c
        .prepare_cached("SELECT path, size FROM files WHERE hash = ?1 AND deleted = 0 LIMIT 1")?
        .query_row([&hash.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(p, s)| SitePath::new(p).ok().map(|p| (p, s as u64))))
}

pub struct Index {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    /// Copies the log into the database after commits, so that no changeset's commit (which
    /// comes before it is sent) waits for a checkpoint.
    checkpointer: Arc<Checkpointer>,
}

/// Page cache of the one writer (the journal), in KiB. Its pages are in the kernel's page
/// cache anyway; at 2 MiB it filled through the harness's edits and bursts after the initial
/// sync, and with the blob cache at 2 MiB the distributor peaked at 33.9-35.7 MB at 100k
/// files in seven harness runs; with 512 KiB and 1 MiB, 27.0 and 27.6 MB in two (issue 2
/// allows 32), the edits' latency and the bursts within the spread of those runs.
const WRITER_CACHE_KIB: i64 = 512;

/// Page cache of each pooled reader, in KiB. Readers look paths up by hash while a mirror's
/// bytes are packed, one random descent each, which no cache this size holds at 100,000
/// files anyway; the file system's cache serves the misses. At the writer's 2 MiB each, the
/// four pooled readers and the writer were 6.7 MB of the distributor's 18 MB heap peak
/// through a full resync (heaptrack).
const READER_CACHE_KIB: i64 = 256;

fn open(path: &Path, cache_kib: i64) -> Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("Failed to open the index database {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "full")?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    hand_over(&conn)?;
    Ok(conn)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Index {
    /// Opens (creating if needed) the index under `state`, with owner-only permissions on the
    /// directory: it holds mirror secrets' hashes.
    pub fn open(state: &Path) -> Result<Self> {
        std::fs::create_dir_all(state)
            .with_context(|| format!("Failed to create state directory {}", state.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700));
        }
        let path = state.join(DB_FILE);
        let conn = open(&path, WRITER_CACHE_KIB)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
             CREATE TABLE IF NOT EXISTS files(
                path TEXT PRIMARY KEY, hash BLOB NOT NULL, size INTEGER NOT NULL,
                mode INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL,
                seq INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS files_seq ON files(seq);
             CREATE INDEX IF NOT EXISTS files_hash ON files(hash) WHERE deleted = 0;
             CREATE TABLE IF NOT EXISTS changesets(
                seq INTEGER PRIMARY KEY, produced_at_ms INTEGER NOT NULL, ops INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS mirrors(
                name TEXT PRIMARY KEY, secret_hash BLOB NOT NULL, created_ms INTEGER NOT NULL,
                revoked INTEGER NOT NULL DEFAULT 0, acked_seq INTEGER NOT NULL DEFAULT 0,
                last_seen_ms INTEGER NOT NULL DEFAULT 0, bytes_sent INTEGER NOT NULL DEFAULT 0);",
        )
        .context("Failed to create the index schema")?;
        // Chain links per changeset (added with signed changesets; older rows have none).
        let has_link: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('changesets') WHERE name = 'link'")?
            .exists([])?;
        if !has_link {
            conn.execute_batch("ALTER TABLE changesets ADD COLUMN link BLOB")?;
        }
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version {
            None => {
                let site: [u8; 16] = rand::random();
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?1), ('site', ?2),
                     ('head', 0), ('horizon', 0)",
                    params![SCHEMA_VERSION, site.to_vec()],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => anyhow::bail!(
                "the index at {} has schema version {v}; this build knows {SCHEMA_VERSION}",
                path.display()
            ),
        }
        let checkpointer = Checkpointer::start(&path)
            .context("Failed to start the index's checkpointing thread")?;
        Ok(Self {
            path,
            readers: Mutex::new(vec![conn]),
            checkpointer: Arc::new(checkpointer),
        })
    }

    /// Runs `f` on a pooled connection (reads, or short writes like mirror enrolment).
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = match self.readers.lock().unwrap().pop() {
            Some(c) => c,
            None => open(&self.path, READER_CACHE_KIB)?,
        };
        let changes = conn.total_changes();
        let out = f(&conn);
        // Where it wrote (mirrors' progress every few seconds, enrolments), the checkpointer
        // hears of it: without a nudge, an idle distributor's log would only grow. Reads,
        // such as a lookup per hash a mirror asks for, wake no thread.
        if conn.total_changes() != changes {
            self.checkpointer.nudge();
        }
        let mut pool = self.readers.lock().unwrap();
        if pool.len() < 4 {
            pool.push(conn);
        }
        out
    }

    /// A connection of its own, for the one writer (the journal).
    pub fn writer(&self) -> Result<Writer> {
        Ok(Writer {
            conn: open(&self.path, WRITER_CACHE_KIB)?,
            checkpointer: self.checkpointer.clone(),
        })
    }

    pub fn site(&self) -> Result<SiteId> {
        self.with(|c| {
            let v: Vec<u8> =
                c.query_row("SELECT value FROM meta WHERE key='site'", [], |r| r.get(0))?;
            Ok(SiteId(v.try_into().map_err(|_| {
                anyhow::anyhow!("the index's site id is damaged")
            })?))
        })
    }

    /// (head sequence, tombstone horizon).
    pub fn head(&self) -> Result<(u64, u64)> {
        self.with(head)
    }

    /// When the oldest changeset after `seq` was produced, if any (for lag in seconds).
    pub fn produced_after(&self, seq: u64) -> Result<Option<u64>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT produced_at_ms FROM changesets WHERE seq > ?1 ORDER BY seq LIMIT 1",
                [seq as i64],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| v as u64))
        })
    }

    /// Where the bytes of each of `hashes` can be read now, with their size; looked up in one
    /// read transaction: outside one, each lookup takes and drops SQLite's locks on its own
    /// (`fcntl` on the log's index), and a full resync looks up every file of the site.
    pub fn locate_all(&self, hashes: &[ContentHash]) -> Result<Vec<Option<(SitePath, u64)>>> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let found = hashes.iter().map(|h| locate_in(&tx, h)).collect();
            tx.finish()?;
            found
        })
    }

    /// The hash-chain link after changeset `seq`, while the journal still records it.
    pub fn link_at(&self, seq: u64) -> Result<Option<Link>> {
        if seq == 0 {
            return Ok(Some(GENESIS));
        }
        self.with(|c| {
            let v: Option<Option<Vec<u8>>> = c
                .query_row(
                    "SELECT link FROM changesets WHERE seq = ?1",
                    [seq as i64],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(v.flatten().and_then(|v| v.try_into().ok()))
        })
    }

    /// A consistent snapshot for a mirror at `since` (0 = everything): the head it brings the
    /// mirror to and that head's link, and the ops, deletes first. `f` receives the ops in
    /// batches so a large site never sits in memory whole.
    pub fn snapshot(
        &self,
        since: Option<u64>,
        batch: usize,
        mut f: impl FnMut(u64, Vec<Op>) -> Result<()>,
    ) -> Result<(u64, Link)> {
        self.with(|c| {
            c.execute_batch("BEGIN")?;
            let out = (|| {
                let (head_seq, _) = head(c)?;
                let head_link = link(c)?;
                let mut ops = Vec::with_capacity(batch);
                let mut flush = |ops: &mut Vec<Op>, force: bool| -> Result<()> {
                    if ops.len() >= batch || (force && !ops.is_empty()) {
                        f(head_seq, std::mem::take(ops))?;
                    }
                    Ok(())
                };
                let (deletes, puts) = match since {
                    Some(s) => (
                        format!("SELECT path FROM files WHERE seq > {s} AND deleted = 1"),
                        format!(
                            "SELECT path, hash, size, mode, mtime_ns FROM files
                             WHERE seq > {s} AND deleted = 0"
                        ),
                    ),
                    // In path order, as rsync sends: without `ORDER BY` SQLite scanned the
                    // partial hash index, so a fresh mirror got the site in random order
                    // and made each page's year and month directories again (three
                    // `mkdir`s and two `lstat`s a page where one `mkdir` does), inserted
                    // its records at random places in its B-trees, and the distributor read
                    // the tree in random order.
                    None => (
                        String::new(),
                        "SELECT path, hash, size, mode, mtime_ns FROM files WHERE deleted = 0
                         ORDER BY path"
                            .to_owned(),
                    ),
                };
                if !deletes.is_empty() {
                    let mut st = c.prepare(&deletes)?;
                    let mut rows = st.query([])?;
                    while let Some(r) = rows.next()? {
                        if let Ok(path) = SitePath::new(r.get::<_, String>(0)?) {
                            ops.push(Op::Delete { path });
                            flush(&mut ops, false)?;
                        }
                    }
                }
                let mut st = c.prepare(&puts)?;
                let mut rows = st.query([])?;
                while let Some(r) = rows.next()? {
                    let Ok(path) = SitePath::new(r.get::<_, String>(0)?) else {
                        continue;
                    };
                    ops.push(Op::Put {
                        path,
                        hash: hash_col(r.get_ref(1)?.as_blob()?)?,
                        size: r.get::<_, i64>(2)? as u64,
                        mode: r.get::<_, i64>(3)? as u32,
                        mtime: r.get::<_, i64>(4)?.div_euclid(1_000_000_000),
                    });
                    flush(&mut ops, false)?;
                }
                flush(&mut ops, true)?;
                Ok((head_seq, head_link))
            })();
            c.execute_batch("COMMIT")?;
            out
        })
    }
}

fn head(c: &Connection) -> Result<(u64, u64)> {
    let mut st = c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
    let mut value = |key: &str| st.query_row([key], |r| r.get::<_, i64>(0));
    let (h, z) = (value("head")?, value("horizon")?);
    Ok((h as u64, z as u64))
}

/// The head's link; a state made before changesets were signed starts the chain at zero.
fn link(c: &Connection) -> Result<Link> {
    let v: Option<Vec<u8>> = c
        .query_row("SELECT value FROM meta WHERE key='link'", [], |r| r.get(0))
        .optional()?;
    match v {
        None => Ok(GENESIS),
        Some(v) => v
            .try_into()
            .map_err(|_| anyhow::anyhow!("the index's chain link is damaged")),
    }
}

fn hash_col(b: &[u8]) -> Result<ContentHash> {
    Ok(ContentHash(b.try_into().map_err(|_| {
        anyhow::anyhow!("damaged hash in the index")
    })?))
}

/// The journal's own connection: the only one that writes files and changesets.
pub struct Writer {
    conn: Connection,
    checkpointer: Arc<Checkpointer>,
}

impl Writer {
    /// Opens a write transaction. Rows written through it are visible to its own reads, so a
    /// batch can plan a rename and then the paths under its destination.
    pub fn begin(&mut self) -> Result<Txn<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Ok(Txn {
            tx,
            checkpointer: &self.checkpointer,
        })
    }

    pub fn head(&self) -> Result<(u64, u64)> {
        head(&self.conn)
    }

    pub fn link(&self) -> Result<Link> {
        link(&self.conn)
    }

    /// Drops tombstones and changeset records older than `keep` changes before the head; a
    /// mirror that was away longer gets a full resync (which still sends only what differs).
    pub fn compact(&mut self, keep: u64) -> Result<u64> {
        let (head, horizon) = self.head()?;
        let new = head.saturating_sub(keep);
        if new <= horizon {
            return Ok(0);
        }
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM files WHERE deleted = 1 AND seq <= ?1",
            [new as i64],
        )?;
        tx.execute("DELETE FROM changesets WHERE seq <= ?1", [new as i64])?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'horizon'",
            [new as i64],
        )?;
        tx.commit()?;
        self.checkpointer.nudge();
        Ok(n as u64)
    }
}

/// One batch's write transaction.
pub struct Txn<'a> {
    tx: rusqlite::Transaction<'a>,
    checkpointer: &'a Checkpointer,
}

impl Txn<'_> {
    pub fn get(&self, path: &SitePath) -> Result<Option<Entry>> {
        get_in(&self.tx, path)
    }

    /// True when some live file has these bytes.
    pub fn hash_live(&self, hash: &ContentHash) -> Result<bool> {
        let mut st = self
            .tx
            .prepare_cached("SELECT 1 FROM files WHERE hash = ?1 AND deleted = 0 LIMIT 1")?;
        Ok(st.exists([&hash.0[..]])?)
    }

    /// True when some live path lies strictly under directory `dir`.
    pub fn has_under(&self, dir: &SitePath) -> Result<bool> {
        let (lo, hi) = prefix_range(dir);
        let mut st = self.tx.prepare_cached(
            "SELECT 1 FROM files WHERE path > ?1 AND path < ?2 AND deleted = 0 LIMIT 1",
        )?;
        Ok(st.exists([lo, hi])?)
    }

    /// Live paths strictly under directory `dir`, in path order.
    pub fn under(&self, dir: &SitePath) -> Result<Vec<(SitePath, Entry)>> {
        let (lo, hi) = prefix_range(dir);
        let mut st = self.tx.prepare_cached(
            "SELECT path, hash, size, mode, mtime_ns, ino FROM files
             WHERE path > ?1 AND path < ?2 AND deleted = 0 ORDER BY path",
        )?;
        let mut rows = st.query([lo, hi])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            if let Ok(p) = SitePath::new(r.get::<_, String>(0)?) {
                out.push((p, entry_at(r, 1)?));
            }
        }
        Ok(out)
    }

    /// Calls `f` with every live path under `dir` (the whole tree for `None`), in order,
    /// without collecting them.
    pub fn for_each_live(
        &self,
        dir: Option<&SitePath>,
        mut f: impl FnMut(SitePath) -> Result<()>,
    ) -> Result<()> {
        let (lo, hi) = match dir {
            Some(d) => prefix_range(d),
            None => (String::new(), "\u{10FFFF}".to_owned()),
        };
        let mut st = self.tx.prepare_cached(
            "SELECT path FROM files WHERE path > ?1 AND path < ?2 AND deleted = 0 ORDER BY path",
        )?;
        let mut rows = st.query([lo, hi])?;
        while let Some(r) = rows.next()? {
            if let Ok(p) = SitePath::new(r.get::<_, String>(0)?) {
                f(p)?;
            }
        }
        Ok(())
    }

    /// Writes one row change, stamped with `seq`.
    pub fn apply(&self, change: &RowChange, seq: u64) -> Result<()> {
        let s = seq as i64;
        let put = |p: &SitePath, e: &Entry| -> Result<()> {
            self.tx
                .prepare_cached(
                    "INSERT INTO files(path, hash, size, mode, mtime_ns, ino, seq, deleted)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)
                     ON CONFLICT(path) DO UPDATE SET hash=excluded.hash, size=excluded.size,
                       mode=excluded.mode, mtime_ns=excluded.mtime_ns, ino=excluded.ino,
                       seq=excluded.seq, deleted=0",
                )?
                .execute(params![
                    p.as_str(),
                    &e.hash.0[..],
                    e.size as i64,
                    e.mode as i64,
                    e.mtime_ns,
                    e.ino as i64,
                    s
                ])?;
            Ok(())
        };
        let gone = |p: &SitePath, dir: bool| -> Result<()> {
            self.tx
                .prepare_cached(
                    "UPDATE files SET deleted = 1, seq = ?2 WHERE path = ?1 AND deleted = 0",
                )?
                .execute(params![p.as_str(), s])?;
            if dir {
                let (lo, hi) = prefix_range(p);
                self.tx
                    .prepare_cached(
                        "UPDATE files SET deleted = 1, seq = ?3
                         WHERE path > ?1 AND path < ?2 AND deleted = 0",
                    )?
                    .execute(params![lo, hi, s])?;
            }
            Ok(())
        };
        match change {
            RowChange::Live(p, e) => put(p, e)?,
            RowChange::Touch(p, e) => {
                self.tx
                    .prepare_cached(
                        "UPDATE files SET size = ?2, mtime_ns = ?3, ino = ?4 WHERE path = ?1",
                    )?
                    .execute(params![p.as_str(), e.size as i64, e.mtime_ns, e.ino as i64])?;
            }
            RowChange::Gone { path, dir } => gone(path, *dir)?,
            RowChange::Moved { from, to } => {
                let mut moved: Vec<(SitePath, Entry)> = Vec::new();
                if let Some(e) = self.get(from)? {
                    moved.push((to.clone(), e));
                }
                for (p, e) in self.under(from)? {
                    if let Some(np) = p.rebase(from, to) {
                        moved.push((np, e));
                    }
                }
                gone(from, true)?;
                // Whatever stood at the destination is replaced.
                gone(to, true)?;
                for (p, e) in &moved {
                    put(p, e)?;
                }
            }
        }
        Ok(())
    }

    /// Records the changeset, the new head and its link, then commits durably. `seq: None`
    /// commits only metadata (touched files), with no new sequence.
    pub fn commit(self, seq: Option<(u64, Link)>, produced_at_ms: u64, ops: usize) -> Result<()> {
        if let Some((seq, link)) = seq {
            self.tx.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('link', ?1)",
                [&link[..]],
            )?;
            self.tx.execute(
                "INSERT INTO changesets(seq, produced_at_ms, ops, link) VALUES (?1, ?2, ?3, ?4)",
                params![seq as i64, produced_at_ms as i64, ops as i64, &link[..]],
            )?;
            self.tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'head'",
                [seq as i64],
            )?;
        }
        self.tx
            .commit()
            .context("Failed to commit a changeset to the index")?;
        self.checkpointer.nudge();
        Ok(())
    }
}

fn get_in(c: &Connection, path: &SitePath) -> Result<Option<Entry>> {
    let mut st = c.prepare_cached(
        "SELECT hash, size, mode, mtime_ns, ino FROM files WHERE path = ?1 AND deleted = 0",
    )?;
    let mut rows = st.query([path.as_str()])?;
    rows.next()?.map(|r| entry_at(r, 0)).transpose()
}

/// Reads an [`Entry`] from columns `i..i + 5` (hash, size, mode, mtime_ns, ino).
fn entry_at(r: &rusqlite::Row<'_>, i: usize) -> Result<Entry> {
    Ok(Entry {
        hash: hash_col(r.get_ref(i)?.as_blob()?)?,
        size: r.get::<_, i64>(i + 1)? as u64,
        mode: r.get::<_, i64>(i + 2)? as u32,
        mtime_ns: r.get(i + 3)?,
        ino: r.get::<_, i64>(i + 4)? as u64,
    })
}

/// `(dir + "/", dir + "0")`: '0' is the byte after '/', so the range holds exactly the paths
/// under `dir`, answered from the primary key.
fn prefix_range(dir: &SitePath) -> (String, String) {
    (format!("{dir}/"), format!("{dir}0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_snapshot_lists_the_tree_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let mut w = index.writer().unwrap();
        // Written in an order unlike the paths', with hashes that sort unlike either.
        let mut paths: Vec<String> = (0..60u32)
            .map(|i| {
                format!(
                    "{}/{:02}/page-{}/index.html",
                    2000 + i % 7,
                    i % 12,
                    i * 37 % 60
                )
            })
            .collect();
        let tx = w.begin().unwrap();
        for (i, p) in paths.iter().enumerate() {
            let e = Entry {
                hash: ContentHash::of(p.as_bytes()),
                size: i as u64,
                mode: 0o644,
                mtime_ns: 0,
                ino: i as u64,
            };
            tx.apply(&RowChange::Live(SitePath::new(p.clone()).unwrap(), e), 1)
                .unwrap();
        }
        tx.commit(Some((1, [7; 32])), 0, paths.len()).unwrap();

        let mut got = Vec::new();
        let mut frames = 0;
        index
            .snapshot(None, 16, |_, ops| {
                frames += 1;
                for op in ops {
                    let Op::Put { path, .. } = op else {
                        panic!("a full snapshot holds only puts");
                    };
                    got.push(path.as_str().to_owned());
                }
                Ok(())
            })
            .unwrap();
        paths.sort();
        assert_eq!(got, paths);
        assert_eq!(frames, 4, "60 puts in frames of at most 16");
    }
}

//! The mirror's durable state (SQLite under `--state`): what it serves, per path, and the last
//! sequence it applied; plus the changeset being renamed into place, so a mirror killed in the
//! middle finishes it on the next start.
//!
//! ```sql
//! meta(key TEXT PRIMARY KEY, value)     -- schema, site, applied, link, key, anchor
//! files(path TEXT PRIMARY KEY, hash BLOB, size, mode, mtime)
//! pending(id INTEGER PRIMARY KEY CHECK (id = 1), seq, site BLOB, frame BLOB)
//! manifest(idx INTEGER PRIMARY KEY, path TEXT UNIQUE, hash BLOB, size, mode, mtime)
//! ```
//!
//! `manifest` holds the puts of the full resync in progress, in the order they came, so the
//! engine holds none of them in memory (at 100,000 files they were 12.6 MB of a fresh
//! mirror's 23.8 MB heap peak, heaptrack). It means nothing after the connection that sent
//! it ends, and is emptied then, and at start-up.

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;
use tamizdat_protocol::{
    ContentHash, Fingerprint, Link, Op, SiteId, SiteKey, SitePath, Trust, GENESIS,
};
use tamizdat_sqlite::{hand_over, Checkpointer};

const SCHEMA_VERSION: i64 = 1;
const DB_FILE: &str = "mirror.db";

pub struct Store {
    conn: Connection,
    /// Copies the log into the database after commits, so that no commit (the one before an
    /// ack, above all) waits for a checkpoint: shared with [`Store::reopen`]'s connections.
    checkpointer: Arc<Checkpointer>,
}

/// What the mirror serves at one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub hash: ContentHash,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
}

impl Store {
    pub fn open(state: &Path) -> Result<Self> {
        let conn = open_conn(state)?;
        let checkpointer = Checkpointer::start(&state.join(DB_FILE))
            .context("Failed to start the state database's checkpointing thread")?;
        Ok(Self {
            conn,
            checkpointer: Arc::new(checkpointer),
        })
    }

    pub fn applied(&self) -> Result<u64> {
        let v: i64 =
            self.conn
                .query_row("SELECT value FROM meta WHERE key='applied'", [], |r| {
                    r.get(0)
                })?;
        Ok(v as u64)
    }

    pub fn site(&self) -> Result<Option<SiteId>> {
        let v: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key='site'", [], |r| r.get(0))
            .optional()?;
        Ok(v.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok().map(SiteId)))
    }

    fn meta_blob(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// The hash-chain link of the last changeset applied.
    pub fn link(&self) -> Result<Link> {
        Ok(self
            .meta_blob("link")?
            .and_then(|v| v.try_into().ok())
            .unwrap_or(GENESIS))
    }

    /// What to trust as the site key: the key pinned earlier, if it was pinned under the same
    /// join token's fingerprint (`anchor`); otherwise the token's fingerprint itself (a new
    /// token is how a volunteer tells the mirror to trust a new origin).
    pub fn trust(&self, anchor: Fingerprint) -> Result<Trust> {
        let pinned_under = self
            .meta_blob("anchor")?
            .and_then(|v| <[u8; 16]>::try_from(v).ok());
        let key = self
            .meta_blob("key")?
            .and_then(|v| <[u8; 32]>::try_from(v).ok());
        Ok(match (pinned_under, key) {
            (Some(a), Some(k)) if a == anchor.0 => Trust::Key(SiteKey(k)),
            _ => Trust::Fingerprint(anchor),
        })
    }

    /// Pins the site key, durably.
    pub fn pin(&self, anchor: Fingerprint, key: &SiteKey) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('anchor', ?1), ('key', ?2)",
            params![&anchor.0[..], &key.0[..]],
        )?;
        Ok(())
    }

    pub fn get(&self, path: &SitePath) -> Result<Option<Held>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT hash, size, mode, mtime FROM files WHERE path = ?1")?;
        let row = st
            .query_row([path.as_str()], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()?;
        Ok(row.and_then(|(h, size, mode, mtime)| {
            Some(Held {
                hash: ContentHash(h.try_into().ok()?),
                size: size as u64,
                mode: mode as u32,
                mtime,
            })
        }))
    }

    /// A path that serves `hash` now, if any.
    pub fn find(&self, hash: &ContentHash) -> Result<Option<SitePath>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT path FROM files WHERE hash = ?1 LIMIT 1")?;
        let p: Option<String> = st.query_row([&hash.0[..]], |r| r.get(0)).optional()?;
        Ok(p.and_then(|p| SitePath::new(p).ok()))
    }

    /// A second connection to the same database (WAL: it sees what this one committed).
    pub fn reopen(&self) -> Result<Store> {
        let path = self.conn.path().context("the state database has no path")?;
        let state = Path::new(path)
            .parent()
            .context("the state database has no directory")?;
        Ok(Store {
            conn: open_conn(state)?,
            checkpointer: self.checkpointer.clone(),
        })
    }

    /// Sets this connection's page cache, in KiB.
    pub fn cache_kib(&self, kib: i64) -> Result<()> {
        self.conn.pragma_update(None, "cache_size", -kib)?;
        Ok(())
    }

    /// True when no file is recorded at all (a new mirror, or one reset for a full resync).
    pub fn holds_nothing(&self) -> Result<bool> {
        let any: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM files LIMIT 1", [], |r| r.get(0))
            .optional()?;
        Ok(any.is_none())
    }

    /// Every path held, in order.
    pub fn paths(&self) -> Result<Vec<SitePath>> {
        self.path_list("SELECT path FROM files ORDER BY path")
    }

    /// The paths `sql` selects, in its order; a row that is no valid path is skipped.
    fn path_list(&self, sql: &str) -> Result<Vec<SitePath>> {
        let mut st = self.conn.prepare(sql)?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            if let Ok(p) = SitePath::new(r?) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Notes the changeset about to be renamed into place, before the first rename.
    ///
    /// Written without an fsync of its own (`synchronous=NORMAL` for this one transaction):
    /// it must survive the mirror being killed, which the page cache does; a power cut may
    /// lose it, and then the next catch-up redoes the changeset instead. The commit that
    /// records the applied changeset is fully synchronous, and flushes this too.
    pub fn set_pending(&self, seq: u64, site: SiteId, frame: &[u8]) -> Result<()> {
        self.conn.pragma_update(None, "synchronous", "normal")?;
        let r = self.conn.execute(
            "INSERT OR REPLACE INTO pending(id, seq, site, frame) VALUES (1, ?1, ?2, ?3)",
            params![seq as i64, &site.0[..], frame],
        );
        self.conn.pragma_update(None, "synchronous", "full")?;
        r?;
        Ok(())
    }

    pub fn pending(&self) -> Result<Option<(u64, SiteId, Vec<u8>)>> {
        let row: Option<(i64, Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT seq, site, frame FROM pending WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row.and_then(|(seq, site, frame)| {
            Some((seq as u64, SiteId(site.try_into().ok()?), frame))
        }))
    }

    /// Records an applied changeset: its rows, the new sequence and site, and clears
    /// `pending`, in one durable transaction.
    pub fn commit(&mut self, seq: u64, site: SiteId, ops: &[Op], link: &Link) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO files(path, hash, size, mode, mtime) VALUES (?1,?2,?3,?4,?5)",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM files WHERE path = ?1")?;
            let mut del_dir =
                tx.prepare_cached("DELETE FROM files WHERE path > ?1 AND path < ?2")?;
            let mut moved = tx.prepare_cached(
                // substr and length count characters, consistently with each other.
                "UPDATE files SET path = ?1 || substr(path, length(?2) + 1)
                 WHERE path > ?3 AND path < ?4",
            )?;
            for op in ops {
                match op {
                    Op::Put {
                        path,
                        hash,
                        size,
                        mode,
                        mtime,
                    } => {
                        put.execute(params![
                            path.as_str(),
                            &hash.0[..],
                            *size as i64,
                            *mode as i64,
                            mtime
                        ])?;
                    }
                    Op::Delete { path } => {
                        del.execute([path.as_str()])?;
                        del_dir.execute([format!("{path}/"), format!("{path}0")])?;
                    }
                    Op::Move { from, to } => {
                        del.execute([to.as_str()])?;
                        del_dir.execute([format!("{to}/"), format!("{to}0")])?;
                        tx.execute(
                            "UPDATE files SET path = ?2 WHERE path = ?1",
                            [from.as_str(), to.as_str()],
                        )?;
                        moved.execute(params![
                            to.as_str(),
                            from.as_str(),
                            format!("{from}/"),
                            format!("{from}0")
                        ])?;
                    }
                }
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'applied'",
            [seq as i64],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('site', ?1), ('link', ?2)",
            [&site.0[..], &link[..]],
        )?;
        tx.execute("DELETE FROM pending", [])?;
        tx.commit()
            .context("Failed to record the applied changeset")?;
        self.checkpointer.nudge();
        Ok(())
    }

    /// Records files that are in place, without a new sequence: those a full resync found
    /// already there, and those it published ahead of its end.
    pub fn adopt(&mut self, ops: &[Op]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO files(path, hash, size, mode, mtime) VALUES (?1,?2,?3,?4,?5)",
            )?;
            for op in ops {
                if let Op::Put {
                    path,
                    hash,
                    size,
                    mode,
                    mtime,
                } = op
                {
                    put.execute(params![
                        path.as_str(),
                        &hash.0[..],
                        *size as i64,
                        *mode as i64,
                        mtime
                    ])?;
                }
            }
        }
        tx.commit()?;
        self.checkpointer.nudge();
        Ok(())
    }

    /// Forgets the manifest of a full resync (done, abandoned, or left by a stop).
    pub fn manifest_clear(&self) -> Result<()> {
        self.conn.execute("DELETE FROM manifest", [])?;
        Ok(())
    }

    /// Appends a frame's puts to the manifest as ops `first..`; returns the first path the
    /// manifest now lists twice, if any (then nothing of the frame is kept). Written without
    /// an fsync (`synchronous=NORMAL` for these transactions): a manifest is worth nothing
    /// after a stop.
    pub fn manifest_add(&mut self, first: u32, ops: &[Op]) -> Result<Option<SitePath>> {
        self.conn.pragma_update(None, "synchronous", "normal")?;
        let r = (|| -> Result<Option<SitePath>> {
            let tx = self.conn.transaction()?;
            {
                let mut put = tx.prepare_cached(
                    "INSERT INTO manifest(idx, path, hash, size, mode, mtime) VALUES (?1,?2,?3,?4,?5,?6)",
                )?;
                for (i, op) in ops.iter().enumerate() {
                    let Op::Put {
                        path,
                        hash,
                        size,
                        mode,
                        mtime,
                    } = op
                    else {
                        anyhow::bail!("only puts go into a manifest");
                    };
                    let r = put.execute(params![
                        first as i64 + i as i64,
                        path.as_str(),
                        &hash.0[..],
                        *size as i64,
                        *mode as i64,
                        mtime
                    ]);
                    match r {
                        Ok(_) => {}
                        Err(rusqlite::Error::SqliteFailure(e, _))
                            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                        {
                            return Ok(Some(path.clone()));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            tx.commit()?;
            Ok(None)
        })();
        self.conn.pragma_update(None, "synchronous", "full")?;
        r
    }

    /// A path the manifest lists as a file while it lists another path under it (as if it
    /// were a directory), with that other path: no tree can match such a manifest.
    pub fn manifest_conflict(&self) -> Result<Option<(String, String)>> {
        // '0' follows '/' in byte order: `a/...` sorts between `a/` and `a0`. One range probe
        // of the path index per path.
        Ok(self
            .conn
            .query_row(
                "SELECT a.path, b.path FROM manifest a JOIN manifest b
                 ON b.path > a.path || '/' AND b.path < a.path || '0' LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Up to `limit` ops of the manifest from index `from` on, in order, with their indexes.
    pub fn manifest_ops(&self, from: u32, limit: usize) -> Result<Vec<(u32, Op)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT idx, path, hash, size, mode, mtime FROM manifest WHERE idx >= ?1
             ORDER BY idx LIMIT ?2",
        )?;
        let rows = st.query_map(params![from as i64, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, manifest_row(r)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (idx, op) = row?;
            out.push((idx as u32, op?));
        }
        Ok(out)
    }

    /// Op `idx` of the manifest.
    pub fn manifest_op(&self, idx: u32) -> Result<Op> {
        let mut st = self.conn.prepare_cached(
            "SELECT idx, path, hash, size, mode, mtime FROM manifest WHERE idx = ?1",
        )?;
        st.query_row([idx as i64], manifest_row)
            .optional()?
            .with_context(|| format!("op {idx} is not in the manifest"))?
    }

    /// Runs `f` in one read transaction: a statement outside one takes and drops SQLite's
    /// locks (`fcntl` on the WAL index) by itself, and the engine's walk for bytes to ask
    /// for looks up a 100k resync's paths and hashes one by one (`request_missing`).
    pub fn reading<T, E: From<anyhow::Error>>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        if !self.conn.is_autocommit() {
            return f(self);
        }
        self.conn
            .execute_batch("BEGIN")
            .map_err(|e| E::from(e.into()))?;
        let out = f(self);
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| E::from(e.into()))?;
        out
    }

    /// Whether the manifest lists `path`.
    pub fn manifest_lists(&self, path: &SitePath) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM manifest WHERE path = ?1")?;
        Ok(st.exists([path.as_str()])?)
    }

    /// Every path held that the manifest does not list, in order.
    pub fn unlisted_held(&self) -> Result<Vec<SitePath>> {
        self.path_list(
            "SELECT path FROM files WHERE path NOT IN (SELECT path FROM manifest) ORDER BY path",
        )
    }

    /// Forgets everything (a full resync from another site starts from the files on disk).
    pub fn reset(&mut self) -> Result<()> {
        self.conn.execute_batch(
            "DELETE FROM files; DELETE FROM pending; UPDATE meta SET value = 0 WHERE key = 'applied';
             DELETE FROM meta WHERE key IN ('site', 'link');",
        )?;
        self.checkpointer.nudge();
        Ok(())
    }
}

/// Opens the state database, creating its directory (owner-only) and schema.
fn open_conn(state: &Path) -> Result<Connection> {
    std::fs::create_dir_all(state)
        .with_context(|| format!("Failed to create state directory {}", state.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700));
    }
    let path = state.join(DB_FILE);
    let conn =
        Connection::open(&path).with_context(|| format!("Failed to open {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "full")?;
    // 512 KiB of page cache, not SQLite's 2 MB default, for each of the connections (the
    // engine's and, through a fresh mirror's resync, its publisher's; the one that makes
    // directories ahead takes 64): the pages it would keep are in the kernel's page cache
    // anyway.
    conn.pragma_update(None, "cache_size", -512)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
         CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, hash BLOB NOT NULL,
            size INTEGER NOT NULL, mode INTEGER NOT NULL, mtime INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
         CREATE TABLE IF NOT EXISTS pending(id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL, site BLOB NOT NULL, frame BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS manifest(idx INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
            hash BLOB NOT NULL, size INTEGER NOT NULL, mode INTEGER NOT NULL,
            mtime INTEGER NOT NULL);
         INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', 1), ('applied', 0);",
    )
    .context("Failed to create the mirror's schema")?;
    let v: i64 = conn.query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
        r.get(0)
    })?;
    anyhow::ensure!(
        v == SCHEMA_VERSION,
        "state schema {v} is not known to this build ({SCHEMA_VERSION})"
    );
    hand_over(&conn)?;
    Ok(conn)
}

/// A manifest row as a put; a damaged row is an error, not a panic.
fn manifest_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Op>> {
    let path: String = r.get(1)?;
    let hash: Vec<u8> = r.get(2)?;
    let (size, mode, mtime): (i64, i64, i64) = (r.get(3)?, r.get(4)?, r.get(5)?);
    Ok((|| {
        Ok(Op::Put {
            path: SitePath::new(path).map_err(|e| anyhow::anyhow!("damaged manifest row: {e}"))?,
            hash: ContentHash(
                hash.try_into()
                    .map_err(|_| anyhow::anyhow!("damaged manifest row: a hash"))?,
            ),
            size: size as u64,
            mode: mode as u32,
            mtime,
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(p: &str) -> Op {
        Op::Put {
            path: SitePath::new(p).unwrap(),
            hash: ContentHash::of(p.as_bytes()),
            size: p.len() as u64,
            mode: 0o644,
            mtime: 7,
        }
    }

    #[test]
    fn a_manifest_reads_back_in_order_across_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let ops: Vec<Op> = (0..2500)
            .map(|i| put(&format!("d{}/f{i}", i % 7)))
            .collect();
        assert_eq!(s.manifest_add(0, &ops[..1000]).unwrap(), None);
        assert_eq!(s.manifest_add(1000, &ops[1000..]).unwrap(), None);
        let mut read = Vec::new();
        let mut next = 0;
        loop {
            let chunk = s.manifest_ops(next, 300).unwrap();
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            read.extend(chunk.into_iter().map(|(_, op)| op));
            next = last + 1;
        }
        assert_eq!(read, ops);
        assert_eq!(s.manifest_op(1234).unwrap(), ops[1234]);
        assert!(s.manifest_op(2500).is_err());
        assert!(s.manifest_lists(&SitePath::new("d3/f3").unwrap()).unwrap());
        assert!(!s.manifest_lists(&SitePath::new("d3/f4").unwrap()).unwrap());
        assert_eq!(s.manifest_conflict().unwrap(), None);
        s.manifest_clear().unwrap();
        assert!(s.manifest_ops(0, 10).unwrap().is_empty());
    }

    #[test]
    fn a_path_listed_twice_is_named_and_its_frame_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.manifest_add(0, &[put("a"), put("b")]).unwrap(), None);
        // Twice across frames, then within one frame: neither frame stays.
        let dup = s.manifest_add(2, &[put("c"), put("a")]).unwrap();
        assert_eq!(dup, Some(SitePath::new("a").unwrap()));
        let dup = s.manifest_add(2, &[put("d"), put("d")]).unwrap();
        assert_eq!(dup, Some(SitePath::new("d").unwrap()));
        let all: Vec<Op> = s
            .manifest_ops(0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, o)| o)
            .collect();
        assert_eq!(all, [put("a"), put("b")]);
        assert!(s
            .manifest_add(
                2,
                &[Op::Delete {
                    path: SitePath::new("x").unwrap()
                }]
            )
            .is_err());
    }

    #[test]
    fn a_file_that_another_path_needs_as_a_directory_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        // Names that sort between `a` and `a/...` are no conflict.
        s.manifest_add(0, &[put("a"), put("a.txt"), put("a-b/c"), put("ab/c")])
            .unwrap();
        assert_eq!(s.manifest_conflict().unwrap(), None);
        s.manifest_add(4, &[put("a/b/c")]).unwrap();
        assert_eq!(
            s.manifest_conflict().unwrap(),
            Some(("a".to_string(), "a/b/c".to_string()))
        );
    }

    #[test]
    fn held_paths_the_manifest_does_not_list() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.adopt(&[put("keep"), put("old/one"), put("old/two")])
            .unwrap();
        s.manifest_add(0, &[put("keep"), put("new")]).unwrap();
        let gone: Vec<String> = s
            .unlisted_held()
            .unwrap()
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(gone, ["old/one", "old/two"]);
    }
}

//! The mirror's durable state (SQLite under `--state`): what it serves, per path, and the last
//! sequence it applied; plus the changeset being renamed into place, so a mirror killed in the
//! middle finishes it on the next start.
//!
//! ```sql
//! meta(key TEXT PRIMARY KEY, value)     -- schema, site, applied, link, key, anchor
//! files(path TEXT PRIMARY KEY, hash BLOB, size, mode, mtime)
//! pending(id INTEGER PRIMARY KEY CHECK (id = 1), seq, site BLOB, frame BLOB)
//! ```

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
        let mut st = self.conn.prepare("SELECT path FROM files ORDER BY path")?;
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
    // 512 KiB of page cache, not SQLite's 2 MB default, for each of the (up to two)
    // connections: the pages it would keep are in the kernel's page cache anyway.
    conn.pragma_update(None, "cache_size", -512)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
         CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, hash BLOB NOT NULL,
            size INTEGER NOT NULL, mode INTEGER NOT NULL, mtime INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
         CREATE TABLE IF NOT EXISTS pending(id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL, site BLOB NOT NULL, frame BLOB NOT NULL);
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

//! SQLite helpers shared by tamizdat's daemons.
//!
//! # Checkpoints off the latency path
//!
//! SQLite in WAL mode copies the log into the database inside the commit that takes the log
//! past 1,000 pages: it writes those pages into the database file and fsyncs it, and whoever
//! waits for that commit waits for the copy too. The producer's publishes, the distributor's
//! changesets (committed before they are sent) and the mirror's (committed before the ack)
//! all wait for a commit, and those checkpoints were their slowest cases (README.md has the
//! figures).
//!
//! So every connection a daemon opens calls [`hand_over`], which turns automatic
//! checkpoints off, and the daemon owns a [`Checkpointer`]: a thread with its own
//! connection, nudged after commits, that runs a `PASSIVE` checkpoint (which waits for no
//! reader or writer, so no commit waits for it) once commits pause for [`QUIET`], or
//! [`MAX_DELAY`] after the first commit it has not copied yet if they never pause, and a last
//! one when it is dropped. A checkpoint still shares the disk with the commits that run
//! beside it, so under a steady stream of commits it comes rarely: a first version of this
//! thread checkpointed at most once a second, and the harness's edit p99 stayed where
//! SQLite's own checkpoints had left it (7.4 against 7.5 ms, one run each). A checkpoint
//! after a pause also copies each page once, however often the commits before it rewrote
//! it.

use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A pause in commits this long starts a checkpoint.
pub const QUIET: Duration = Duration::from_millis(50);
/// Commits that never pause are checkpointed this long after the first of them.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// Turns off SQLite's checkpoint inside commits on `conn`: a [`Checkpointer`] does it.
pub fn hand_over(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)
}

/// Page cache of the checkpointing connection, in KiB: a checkpoint copies pages from the
/// log to the database without it, so it is kept at a minimum (the mirror counts its memory).
const CACHE_KIB: i64 = 64;

/// The checkpointing thread. Dropping it runs a last checkpoint and joins the thread.
#[derive(Debug)]
pub struct Checkpointer {
    tx: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread, with a connection of its own to the database at `path` (which must
    /// be in WAL mode already: the daemon's own connection sets that up).
    pub fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let conn = Connection::open(path).map_err(std::io::Error::other)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .and_then(|()| hand_over(&conn))
            .map_err(std::io::Error::other)?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || run(&conn, &rx))?;
        Ok(Checkpointer {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Says that the log has grown; returns at once.
    pub fn nudge(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(conn: &Connection, rx: &mpsc::Receiver<()>) {
    // Each round: wait for a nudge, then for a pause of QUIET (or MAX_DELAY from that first
    // nudge), taking the nudges meanwhile with it; then checkpoint.
    while rx.recv().is_ok() {
        let deadline = Instant::now() + MAX_DELAY;
        let closing = loop {
            let wait = QUIET.min(deadline.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(()) if Instant::now() < deadline => continue,
                Ok(()) | Err(RecvTimeoutError::Timeout) => break false,
                Err(RecvTimeoutError::Disconnected) => break true,
            }
        };
        checkpoint(conn);
        if closing {
            return;
        }
    }
    // Dropped with nothing nudged since the last checkpoint, or before any: one more costs
    // little and leaves the log empty behind a daemon that stops.
    checkpoint(conn);
}

/// One `PASSIVE` checkpoint; a failure is logged, and the next one retries.
fn checkpoint(conn: &Connection) {
    let t = Instant::now();
    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match done {
        Ok((log, copied)) => tracing::debug!(
            log_pages = log,
            copied_pages = copied,
            ms = t.elapsed().as_secs_f64() * 1000.0,
            "checkpointed the database's log"
        ),
        Err(e) => tracing::warn!(cause = %e, "checkpointing the database's log failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Connection {
        let conn = Connection::open(dir.join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn
    }

    fn log_pages(conn: &Connection) -> i64 {
        // A NOOP-like probe: PASSIVE on an idle log returns its size in pages.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    #[test]
    fn a_pause_in_commits_starts_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path());
        hand_over(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t(x BLOB)").unwrap();
        let cp = Checkpointer::start(&dir.path().join("t.db")).unwrap();
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .unwrap();
            cp.nudge();
        }
        // No drop: the thread checkpoints on its own once the nudges stop. Then the next
        // write starts the log over from its beginning.
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
            if log_pages(&conn) < 10 {
                break;
            }
            assert!(
                Instant::now() < give_up,
                "no checkpoint after the commits paused"
            );
            std::thread::sleep(QUIET);
        }
        drop(cp);
    }

    #[test]
    fn handed_over_connections_leave_the_log_to_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path());
        hand_over(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t(x BLOB)").unwrap();
        // Far past SQLite's own 1,000-page threshold: no commit checkpoints.
        for _ in 0..1500 {
            conn.execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        let before = std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len();
        assert!(before > 1000 * 4096, "the log grew to {before} bytes");
        let cp = Checkpointer::start(&dir.path().join("t.db")).unwrap();
        cp.nudge();
        drop(cp);
        // Every page of the log is in the database now: a new writer starts the log over.
        let other = open(dir.path());
        let n: i64 = other
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1500);
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert!(
            log_pages(&conn) < 10,
            "the log restarted from its beginning after the checkpoint"
        );
    }
}

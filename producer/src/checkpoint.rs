//! Copies the store's write-ahead log into the database on a thread of its own, after
//! publishes instead of inside them.
//!
//! SQLite checkpoints by itself inside the commit that takes the log past 1,000 pages: it
//! writes those pages into the database file and fsyncs it, and the publish whose commit that
//! was waits for it. At 100,000 articles that was one publish in thirty or so, and it was the
//! publishes' p99: the store phase took 14-24 ms in those, under 2 ms with the checkpoints
//! moved out (`benches/publish.rs`, 400 publishes each way). So every connection of a
//! [`crate::Site`] turns automatic checkpoints off ([`hand_over`]) and the site nudges this
//! thread after each publish; it runs a `PASSIVE` checkpoint (which waits for no reader or
//! writer, so a publish never waits for it) at most once per [`CHECKPOINT_INTERVAL`], and a
//! last one when the site closes.

use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The least time between two checkpoints: a burst of publishes shares one.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Turns off SQLite's checkpoint inside commits on `conn`: a [`Checkpointer`] does it.
pub fn hand_over(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)
}

/// The checkpointing thread. Dropping it runs a last checkpoint and joins the thread.
pub struct Checkpointer {
    tx: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread, with a connection of its own to the store in `state`.
    pub fn start(state: &Path) -> anyhow::Result<Checkpointer> {
        let conn = crate::store::open(state)?;
        hand_over(&conn)?;
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
    let mut last: Option<Instant> = None;
    // Each round: wait for a nudge, then for the rest of the interval since the last
    // checkpoint (nudges meanwhile are taken with it), then checkpoint.
    while rx.recv().is_ok() {
        let mut closing = false;
        if let Some(at) = last {
            let until = at + CHECKPOINT_INTERVAL;
            loop {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(()) => continue,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        closing = true;
                        break;
                    }
                }
            }
        }
        while rx.try_recv().is_ok() {}
        checkpoint(conn);
        last = Some(Instant::now());
        if closing {
            return;
        }
    }
    // The site closed with log written since the last checkpoint (or none at all).
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
            "checkpointed the store's log"
        ),
        Err(e) => tracing::warn!(cause = %e, "checkpointing the store's log failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_pages(conn: &Connection) -> i64 {
        // A NOOP-like probe: PASSIVE on an idle log returns its size in pages.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    #[test]
    fn handed_over_connections_leave_the_log_to_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path()).unwrap();
        hand_over(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t(x BLOB)").unwrap();
        // Far past SQLite's own 1,000-page threshold: no commit checkpoints.
        for _ in 0..1500 {
            conn.execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        let wal = crate::store::wal_path(dir.path());
        let before = std::fs::metadata(&wal).unwrap().len();
        assert!(before > 1000 * 4096, "the log grew to {before} bytes");
        let cp = Checkpointer::start(dir.path()).unwrap();
        cp.nudge();
        drop(cp);
        // Every page of the log is in the database now: a new writer starts the log over.
        let other = crate::store::open(dir.path()).unwrap();
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

//! inotify events (from [`crate::dirwatch`]) gathered into settled batches for the journal.
//!
//! The settle window opens at the first event and closes `settle` later, never sliding: a lone
//! edit waits at most `settle`; files that arrive together share a changeset. Only events that
//! mean "complete" make a path dirty: close-after-write, rename, delete, attribute change, a
//! directory created, a hard link created. A file that is created but still being written is
//! left alone until it is closed. A new directory is walked at once and once more shortly
//! after, because files written into it before its watch existed raise no event.

use crate::dirwatch::{Change, DirWatch};
use crate::journal::Batch;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tracing::{error, warn};

/// A second look at a new directory this long after it appeared.
const REWALK_AFTER: Duration = Duration::from_millis(50);

/// How long a window that closes holding one half of a rename waits for the other.
///
/// The kernel queues `IN_MOVED_FROM` and `IN_MOVED_TO` of one rename side by side, but the
/// reader thread may hand them over in two reads; when the settle window closes between the
/// two (a busy machine, a window opened by an earlier file just before), the halves land in
/// different batches and a directory rename turned into a delete and a fresh copy of every
/// file in it. Only a move out of the tree, which has no partner, pays this wait.
const RENAME_PARTNER_WAIT: Duration = Duration::from_millis(50);

pub type Events = Receiver<Change>;

/// Starts watching `root` recursively. Events queue in the returned channel until
/// [`Batcher::next_batch`] reads them, so start-up indexing can run after this without losing
/// any.
pub fn watch(root: &Path) -> anyhow::Result<(DirWatch, Events)> {
    let (tx, rx) = std::sync::mpsc::channel();
    Ok((crate::dirwatch::watch(root, tx)?, rx))
}

pub struct Batcher {
    rx: Events,
    settle: Duration,
    /// [`RENAME_PARTNER_WAIT`]; a field so a test can wait longer than a busy machine stalls.
    partner_wait: Duration,
    rewalk: Vec<(Instant, PathBuf)>,
}

impl Batcher {
    pub fn new(rx: Events, settle: Duration) -> Self {
        Self {
            rx,
            settle,
            partner_wait: RENAME_PARTNER_WAIT,
            rewalk: Vec::new(),
        }
    }

    /// Adds the next event that arrives before `deadline`; false once it has passed.
    fn add_next(&mut self, b: &mut Builder, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(ev) => {
                b.add(ev, &mut self.rewalk);
                true
            }
            Err(_) => false,
        }
    }

    /// Blocks until a batch is ready; `None` when the watcher is gone.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let mut b = Builder::default();
        // Wait for the first event, or the next due re-walk.
        let due = self.rewalk.iter().map(|(t, _)| *t).min();
        let r = match due {
            Some(t) => self
                .rx
                .recv_timeout(t.saturating_duration_since(Instant::now())),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let first = match r {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return None,
        };
        let deadline = Instant::now() + self.settle;
        if let Some(ev) = first {
            b.add(ev, &mut self.rewalk);
            while self.add_next(&mut b, deadline) {}
            let partner_deadline = Instant::now() + self.partner_wait;
            while !b.from.is_empty() && self.add_next(&mut b, partner_deadline) {}
        }
        let now = Instant::now();
        self.rewalk.retain(|(t, p)| {
            if *t <= now {
                b.batch.dirty.insert(p.clone());
                false
            } else {
                true
            }
        });
        Some(b.finish())
    }
}

#[derive(Default)]
struct Builder {
    batch: Batch,
    /// Rename halves by cookie, waiting for their partner.
    from: HashMap<u32, PathBuf>,
}

impl Builder {
    fn add(&mut self, change: Change, rewalk: &mut Vec<(Instant, PathBuf)>) {
        match change {
            Change::Dirty(p) => {
                self.batch.dirty.insert(p);
            }
            Change::NewDir(p) => {
                rewalk.push((Instant::now() + REWALK_AFTER, p.clone()));
                self.batch.dirty.insert(p);
            }
            Change::MovedFrom { cookie, path } => {
                self.from.insert(cookie, path);
            }
            Change::MovedTo { cookie, path, dir } => {
                if dir {
                    rewalk.push((Instant::now() + REWALK_AFTER, path.clone()));
                }
                match self.from.remove(&cookie) {
                    Some(from) => self.batch.moves.push((from, path)),
                    // A move into the tree.
                    None => {
                        self.batch.dirty.insert(path);
                    }
                }
            }
            Change::Overflow => {
                warn!("inotify queue overflowed: events were lost; reconciling the tree against the index");
                self.batch.rescan = true;
                self.batch.overflowed = true;
            }
            Change::WatchLimit => {
                let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                    .unwrap_or_default();
                error!(
                    limit = limit.trim(),
                    "the tree has more directories than inotify may watch: changes in the \
                     unwatched ones are missed; raise fs.inotify.max_user_watches (sysctl) and \
                     restart"
                );
            }
        }
    }

    fn finish(mut self) -> Batch {
        // A from with no partner: moved out of the tree.
        self.batch.dirty.extend(self.from.into_values());
        self.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(path: &str) -> Change {
        Change::MovedFrom {
            cookie: 7,
            path: PathBuf::from(path),
        }
    }

    fn to(path: &str) -> Change {
        Change::MovedTo {
            cookie: 7,
            path: PathBuf::from(path),
            dir: false,
        }
    }

    #[test]
    fn a_rename_split_across_the_settle_window_is_still_a_move() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut batcher = Batcher::new(rx, Duration::ZERO);
        // The partner arrives 5 ms late; the wait ends as soon as it does, so a long one
        // only keeps a stalled test thread from failing the test.
        batcher.partner_wait = Duration::from_secs(30);
        tx.send(from("/t/old")).unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            tx.send(to("/t/new")).unwrap();
            tx
        });
        let batch = batcher.next_batch().unwrap();
        let _tx = late.join().unwrap();
        assert_eq!(
            batch.moves,
            vec![(PathBuf::from("/t/old"), PathBuf::from("/t/new"))]
        );
        assert!(batch.dirty.is_empty(), "sent as delete + create: {batch:?}");
    }

    #[test]
    fn a_move_out_of_the_tree_is_a_delete() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut batcher = Batcher::new(rx, Duration::ZERO);
        tx.send(from("/t/gone")).unwrap();
        // `tx` stays open, so the batch closes by the partner wait running out.
        let batch = batcher.next_batch().unwrap();
        assert!(batch.moves.is_empty());
        assert_eq!(
            batch.dirty.into_iter().collect::<Vec<_>>(),
            vec![PathBuf::from("/t/gone")]
        );
        drop(tx);
    }
}

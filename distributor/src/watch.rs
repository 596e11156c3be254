//! inotify events (through notify) gathered into settled batches for the journal.
//!
//! The settle window opens at the first event and closes `settle` later, never sliding: a lone
//! edit waits at most `settle`; files that arrive together share a changeset. Only events that
//! mean "complete" make a path dirty: close-after-write, rename, delete, attribute change, a
//! directory created, a hard link created. A file that is created but still being written is
//! left alone until it is closed. A new directory is walked at once and once more shortly
//! after, because files written into it before its watch existed raise no event.

use crate::journal::Batch;
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{Event, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tracing::{error, warn};

/// A second look at a new directory this long after it appeared.
const REWALK_AFTER: Duration = Duration::from_millis(50);

/// How long a window that closes holding one half of a rename waits for the other.
///
/// The kernel queues `IN_MOVED_FROM` and `IN_MOVED_TO` of one rename side by side, but notify's
/// thread hands them over one at a time; when the settle window closes between the two (a busy
/// machine, a window opened by an earlier file just before), the halves land in different
/// batches and a directory rename turned into a delete and a fresh copy of every file in it.
/// Only a move out of the tree, which has no partner, pays this wait.
const RENAME_PARTNER_WAIT: Duration = Duration::from_millis(50);

pub type Events = Receiver<notify::Result<Event>>;

/// Starts watching `root` recursively. Events queue in the returned channel until
/// [`Batcher::next`] reads them, so start-up indexing can run after this without losing any.
pub fn watch(root: &Path) -> anyhow::Result<(notify::RecommendedWatcher, Events)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<Event>| {
        if wanted(&ev) {
            let _ = tx.send(ev);
        }
    })?;
    w.watch(root, RecursiveMode::Recursive).map_err(|e| {
        anyhow::anyhow!(
            "Failed to watch {}: {e}. If the tree has more directories than \
             fs.inotify.max_user_watches allows, raise it (sysctl fs.inotify.max_user_watches)",
            root.display()
        )
    })?;
    Ok((w, rx))
}

/// True for what the batcher acts on: errors, overflow, and the kinds [`Builder::add`] reads.
///
/// notify 8 watches every directory with `IN_OPEN` and `IN_MODIFY` too (its mask cannot be
/// changed), so every read of the tree (the start-up hashing, the bytes sent to mirrors, a
/// backup job, a web server over the origin) and every `write()` call raise an event. Those
/// are dropped here, in notify's thread, before the channel: queued unread during the start-up
/// index of 100,000 files they held 65 MB (heaptrack), and the batcher would then have read
/// 317,000 events for nothing.
///
/// A created file passes only when it is a hard link (more than one link: `ln`, `cp -al`,
/// `rsync --link-dest`), which raises no close-after-write because its bytes are complete
/// already under another name. An ordinary creation would only open a settle window with
/// nothing in it: the file is being written, and its close is what counts.
fn wanted(ev: &notify::Result<Event>) -> bool {
    let Ok(ev) = ev else { return true };
    if let EventKind::Create(CreateKind::File | CreateKind::Any) = ev.kind {
        use std::os::unix::fs::MetadataExt;
        return ev
            .paths
            .iter()
            .any(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.nlink() > 1));
    }
    ev.need_rescan()
        || matches!(
            ev.kind,
            EventKind::Create(CreateKind::Folder)
                | EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Remove(_)
                | EventKind::Modify(ModifyKind::Metadata(_))
                | EventKind::Modify(ModifyKind::Name(_))
        )
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
    from: HashMap<usize, PathBuf>,
}

impl Builder {
    fn add(&mut self, ev: notify::Result<Event>, rewalk: &mut Vec<(Instant, PathBuf)>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                    .unwrap_or_default();
                error!(
                    limit = limit.trim(),
                    "the tree has more directories than inotify may watch: changes in the \
                     unwatched ones are missed; raise fs.inotify.max_user_watches (sysctl) and \
                     restart"
                );
                return;
            }
            Err(e) => {
                error!(cause = %e, "watch error; reconciling the tree");
                self.batch.rescan = true;
                return;
            }
        };
        if ev.need_rescan() {
            warn!("inotify queue overflowed: events were lost; reconciling the tree against the index");
            self.batch.rescan = true;
            self.batch.overflowed = true;
            return;
        }
        let mut paths = ev.paths.into_iter();
        match ev.kind {
            EventKind::Create(CreateKind::Folder) => {
                if let Some(p) = paths.next() {
                    rewalk.push((Instant::now() + REWALK_AFTER, p.clone()));
                    self.batch.dirty.insert(p);
                }
            }
            // Only hard links get here ([`wanted`]): complete already, dirty at once.
            EventKind::Create(CreateKind::File | CreateKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Metadata(_)) => {
                self.batch.dirty.extend(paths);
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                if let (Some(p), Some(c)) = (paths.next(), ev.attrs.tracker()) {
                    self.from.insert(c, p);
                } else {
                    self.batch.dirty.extend(paths);
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                // notify follows a paired To with Both; an unpaired one is a move into the tree.
                if let Some(p) = paths.next() {
                    let paired = ev
                        .attrs
                        .tracker()
                        .is_some_and(|c| self.from.contains_key(&c));
                    if !paired {
                        if p.is_dir() {
                            rewalk.push((Instant::now() + REWALK_AFTER, p.clone()));
                        }
                        self.batch.dirty.insert(p);
                    }
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let Some(c) = ev.attrs.tracker() {
                    self.from.remove(&c);
                }
                if let (Some(f), Some(t)) = (paths.next(), paths.next()) {
                    if t.is_dir() {
                        rewalk.push((Instant::now() + REWALK_AFTER, t.clone()));
                    }
                    self.batch.moves.push((f, t));
                }
            }
            _ => {}
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

    fn rename(mode: RenameMode, paths: &[&str]) -> notify::Result<Event> {
        let ev = Event::new(EventKind::Modify(ModifyKind::Name(mode))).set_tracker(7);
        Ok(paths.iter().fold(ev, |ev, p| ev.add_path(PathBuf::from(p))))
    }

    #[test]
    fn a_rename_split_across_the_settle_window_is_still_a_move() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut batcher = Batcher::new(rx, Duration::ZERO);
        // The partner arrives 5 ms late; the wait ends as soon as it does, so a long one
        // only keeps a stalled test thread from failing the test.
        batcher.partner_wait = Duration::from_secs(30);
        tx.send(rename(RenameMode::From, &["/t/old"])).unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            tx.send(rename(RenameMode::To, &["/t/new"])).unwrap();
            tx.send(rename(RenameMode::Both, &["/t/old", "/t/new"]))
                .unwrap();
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
        tx.send(rename(RenameMode::From, &["/t/gone"])).unwrap();
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

//! A recursive inotify watch of the site tree that holds one small record per directory.
//!
//! notify 8 keeps two maps of every watched directory's full path (path → descriptor and
//! descriptor → path): 23 MB of the distributor's 51 MB heap at 100,000 directories
//! (heaptrack), where issue 2 allows 32 MB of RSS in all. Here each watched directory is its
//! watch descriptor, its parent's descriptor and its own name, kept in one byte arena: about
//! 60 bytes a directory with the names. A path is rebuilt from the parent links when an event
//! names it, a few steps for a news site's `/yyyy/mm/slug/`.
//!
//! Links instead of paths also make a directory renamed inside the tree cheap: its descriptor
//! keeps watching the same inode, so only its own record changes and everything below it
//! follows. notify removed and re-added the watches of the whole subtree.
//!
//! The watch mask is ours too: notify's fixed mask includes `IN_OPEN` and `IN_MODIFY`, so every
//! read of the tree (the distributor's own, sending bytes to mirrors) and every `write()` woke
//! its thread, only for [`crate::watch`] to drop the event. Here the kernel never queues them.
//!
//! A reader thread drains the inotify descriptor as soon as it is readable, adds watches for
//! new directories at once (files written into a directory before its watch exists raise no
//! event: the batcher walks new directories again for those), and sends [`Change`]s down a
//! channel, so a busy journal never lets the kernel's queue (`fs.inotify.max_queued_events`)
//! overflow.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};
use tracing::{debug, error, warn};

/// What the reader thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The path may differ from the index: a file closed after writing, a delete, a change of
    /// mode or times, a hard link created (its bytes are complete already, so no close comes).
    Dirty(PathBuf),
    /// A directory was created: dirty, and worth a second walk shortly (files written into it
    /// before its watch existed raised no event).
    NewDir(PathBuf),
    /// One half of a rename, paired with the other by `cookie`.
    MovedFrom { cookie: u32, path: PathBuf },
    MovedTo {
        cookie: u32,
        path: PathBuf,
        dir: bool,
    },
    /// Events were lost: the kernel's queue overflowed.
    Overflow,
    /// A directory could not be watched because the per-user limit is reached.
    WatchLimit,
}

/// What a watched directory reports.
const DIR_MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::EXCL_UNLINK);

/// A directory moved away with no `MOVED_TO` after this long left the tree: its watches go.
const MOVED_OUT_AFTER: Duration = Duration::from_millis(50);

/// Keeps the watch alive; dropping it stops the reader thread.
pub struct DirWatch {
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an eventfd this struct owns.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches every directory under `root` (already canonical) and starts the reader thread.
/// Changes made from now on are queued in `tx`, so start-up indexing can run after this
/// without losing any.
pub fn watch(root: &Path, tx: Sender<Change>) -> anyhow::Result<DirWatch> {
    let ino = Inotify::init()?;
    let mut tree = Tree::new(root.to_path_buf(), ino);
    let root_wd = tree
        .add(
            root,
            DIR_MASK | WatchMask::DELETE_SELF | WatchMask::MOVE_SELF,
        )
        .map_err(|e| watch_error(root, e))?;
    tree.dirs.insert(root_wd, Dir::ROOT);
    tree.root_wd = root_wd;
    if tree.add_subtree(root, root_wd, &tx) == Walked::Limit {
        anyhow::bail!(watch_error(
            root,
            io::Error::from_raw_os_error(libc::ENOSPC)
        ));
    }
    // SAFETY: plain syscall; the result is checked before it is wrapped.
    let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if stop < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: `stop` is a new descriptor owned by nothing else.
    let stop = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(stop) };
    let stop_fd = stop.as_raw_fd();
    let thread = std::thread::Builder::new()
        .name("inotify".into())
        .spawn(move || tree.run(stop_fd, tx))?;
    Ok(DirWatch {
        stop,
        thread: Some(thread),
    })
}

fn watch_error(root: &Path, e: io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "Failed to watch {}: {e}. If the tree has more directories than \
         fs.inotify.max_user_watches allows, raise it (sysctl fs.inotify.max_user_watches)",
        root.display()
    )
}

/// A watched directory: its parent's descriptor and its name in [`Tree::names`].
#[derive(Clone, Copy, Debug)]
struct Dir {
    parent: i32,
    start: u32,
    len: u8,
}

impl Dir {
    const ROOT: Dir = Dir {
        parent: -1,
        start: 0,
        len: 0,
    };
}

#[derive(PartialEq, Eq)]
enum Walked {
    Done,
    Limit,
}

struct Tree {
    root: PathBuf,
    root_wd: i32,
    ino: Inotify,
    dirs: HashMap<i32, Dir>,
    /// Every directory's own name, back to back; `garbage` bytes of it are no longer used.
    names: Vec<u8>,
    garbage: usize,
    /// Directories moved away, by cookie, until their `MOVED_TO` comes or they count as gone.
    moved: HashMap<u32, (i32, Instant)>,
    /// The watch limit was reported; said once.
    limit_said: bool,
}

impl Tree {
    fn new(root: PathBuf, ino: Inotify) -> Self {
        Self {
            root,
            root_wd: -1,
            ino,
            dirs: HashMap::new(),
            names: Vec::new(),
            garbage: 0,
            moved: HashMap::new(),
            limit_said: false,
        }
    }

    fn add(&mut self, path: &Path, mask: WatchMask) -> io::Result<i32> {
        self.ino
            .watches()
            .add(path, mask)
            .map(|wd| wd.get_watch_descriptor_id())
    }

    fn name(&self, d: &Dir) -> &[u8] {
        &self.names[d.start as usize..d.start as usize + d.len as usize]
    }

    /// Records `wd` as `name` under `parent`; a descriptor already known (the same inode
    /// watched again, or moved) gets its new place.
    fn set(&mut self, wd: i32, parent: i32, name: &OsStr) {
        let name = name.as_bytes();
        if let Some(old) = self.dirs.get(&wd) {
            if old.parent == parent && self.name(old) == name {
                return;
            }
            self.garbage += old.len as usize;
        }
        // NAME_MAX is 255 on every Linux file system.
        let len = name.len().min(u8::MAX as usize);
        let start = self.names.len() as u32;
        self.names.extend_from_slice(&name[..len]);
        self.dirs.insert(
            wd,
            Dir {
                parent,
                start,
                len: len as u8,
            },
        );
    }

    fn forget(&mut self, wd: i32) {
        if let Some(d) = self.dirs.remove(&wd) {
            self.garbage += d.len as usize;
        }
        if self.garbage > (1 << 20) && self.garbage > self.names.len() / 2 {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut names = Vec::with_capacity(self.names.len() - self.garbage);
        for d in self.dirs.values_mut() {
            let start = d.start as usize;
            let name = &self.names[start..start + d.len as usize];
            d.start = names.len() as u32;
            names.extend_from_slice(name);
        }
        self.names = names;
        self.garbage = 0;
    }

    /// The path of a watched directory, from the parent links.
    fn path(&self, wd: i32) -> Option<PathBuf> {
        let mut parts = Vec::new();
        let mut at = wd;
        while at != self.root_wd {
            let d = self.dirs.get(&at)?;
            parts.push(OsStr::from_bytes(self.name(d)));
            at = d.parent;
            // A loop in the links would be a bug; never spin on one.
            if parts.len() > 4096 {
                return None;
            }
        }
        let mut p = self.root.clone();
        p.extend(parts.iter().rev());
        Some(p)
    }

    /// The watched child `name` of `parent`, by a scan: only a directory moved away needs it.
    fn child(&self, parent: i32, name: &[u8]) -> Option<i32> {
        self.dirs
            .iter()
            .find(|(_, d)| d.parent == parent && self.name(d) == name)
            .map(|(wd, _)| *wd)
    }

    /// Watches every directory below `dir` (watched as `wd`).
    fn add_subtree(&mut self, dir: &Path, wd: i32, tx: &Sender<Change>) -> Walked {
        let mut parents = vec![wd];
        let mut walk = walkdir::WalkDir::new(dir)
            .follow_links(false)
            .min_depth(1)
            .into_iter();
        while let Some(entry) = walk.next() {
            let Ok(entry) = entry else { continue };
            if !entry.file_type().is_dir() {
                continue;
            }
            let depth = entry.depth();
            parents.truncate(depth);
            let Some(&parent) = parents.last() else {
                continue;
            };
            match self.add(entry.path(), DIR_MASK) {
                Ok(child) => {
                    self.set(child, parent, entry.file_name());
                    parents.push(child);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    self.say_limit(tx);
                    return Walked::Limit;
                }
                Err(e) => {
                    // Gone already, or not readable: nothing below it can be watched.
                    debug!(path = %entry.path().display(), cause = %e, "directory not watched");
                    walk.skip_current_dir();
                }
            }
        }
        Walked::Done
    }

    fn say_limit(&mut self, tx: &Sender<Change>) {
        if !self.limit_said {
            self.limit_said = true;
            let _ = tx.send(Change::WatchLimit);
        }
    }

    /// Watches a directory that appeared at `path` (created or moved in) and all below it.
    fn add_dir(&mut self, parent: i32, name: &OsStr, path: &Path, tx: &Sender<Change>) {
        match self.add(path, DIR_MASK) {
            Ok(wd) => {
                self.set(wd, parent, name);
                self.add_subtree(path, wd, tx);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => self.say_limit(tx),
            Err(e) => debug!(path = %path.display(), cause = %e, "directory not watched"),
        }
    }

    /// Stops watching `wd` and every directory below it (moved out of the tree).
    fn remove_subtree(&mut self, wd: i32) {
        let below: Vec<i32> = self
            .dirs
            .keys()
            .copied()
            .filter(|&d| {
                let mut at = d;
                for _ in 0..4096 {
                    if at == wd {
                        return true;
                    }
                    match self.dirs.get(&at) {
                        Some(x) => at = x.parent,
                        None => return false,
                    }
                }
                false
            })
            .collect();
        for d in below {
            // SAFETY: plain syscall on our own inotify descriptor.
            unsafe { libc::inotify_rm_watch(self.ino.as_raw_fd(), d) };
            self.forget(d);
        }
    }

    fn run(mut self, stop: i32, tx: Sender<Change>) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let timeout = match self.moved.values().map(|(_, t)| *t).min() {
                Some(t) => {
                    let left = (t + MOVED_OUT_AFTER).saturating_duration_since(Instant::now());
                    left.as_millis().min(i32::MAX as u128) as i32 + 1
                }
                None => -1,
            };
            let mut fds = [
                libc::pollfd {
                    fd: self.ino.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a live array of two pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                error!(cause = %io::Error::last_os_error(), "poll on inotify failed");
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            if fds[0].revents != 0 && !self.read(&mut buf, &tx) {
                return;
            }
            let now = Instant::now();
            let gone: Vec<u32> = self
                .moved
                .iter()
                .filter(|(_, (_, t))| now.duration_since(*t) >= MOVED_OUT_AFTER)
                .map(|(c, _)| *c)
                .collect();
            for c in gone {
                if let Some((wd, _)) = self.moved.remove(&c) {
                    self.remove_subtree(wd);
                }
            }
        }
    }

    /// Reads what is queued; false once nobody listens.
    fn read(&mut self, buf: &mut [u8], tx: &Sender<Change>) -> bool {
        loop {
            // The events borrow `buf` only, so each is handled straight from it.
            let events = match self.ino.read_events(buf) {
                Ok(evs) => evs,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!(cause = %e, "reading inotify failed; reconciling the tree");
                    return tx.send(Change::Overflow).is_ok();
                }
            };
            let mut any = false;
            for e in events {
                any = true;
                let wd = e.wd.get_watch_descriptor_id();
                let name = e.name.map(OsStrExt::as_bytes);
                if let Some(c) = self.event(wd, e.mask, e.cookie, name, tx) {
                    if tx.send(c).is_err() {
                        return false;
                    }
                }
            }
            if !any {
                return true;
            }
        }
    }

    /// Updates the tree for one event and says what it means for the index.
    fn event(
        &mut self,
        wd: i32,
        mask: EventMask,
        cookie: u32,
        name: Option<&[u8]>,
        tx: &Sender<Change>,
    ) -> Option<Change> {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return Some(Change::Overflow);
        }
        if mask.contains(EventMask::IGNORED) {
            // The directory was deleted (or its watch removed): its descriptor is free for reuse.
            if wd == self.root_wd {
                error!(root = %self.root.display(), "the site root is no longer watched");
            }
            self.forget(wd);
            return None;
        }
        if wd == self.root_wd && mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            error!(root = %self.root.display(), "the site root was moved or deleted");
            return Some(Change::Overflow);
        }
        let Some(dir) = self.path(wd) else {
            debug!(wd, ?mask, "event from a directory no longer watched");
            return None;
        };
        let name = OsStr::from_bytes(name?);
        let path = dir.join(name);
        let is_dir = mask.contains(EventMask::ISDIR);
        if mask.contains(EventMask::MOVED_FROM) {
            if is_dir {
                if let Some(child) = self.child(wd, name.as_bytes()) {
                    self.moved.insert(cookie, (child, Instant::now()));
                }
            }
            return Some(Change::MovedFrom { cookie, path });
        }
        if mask.contains(EventMask::MOVED_TO) {
            if is_dir {
                match self.moved.remove(&cookie) {
                    // Renamed inside the tree: the same inode, still watched; only its place changes.
                    Some((child, _)) => self.set(child, wd, name),
                    None => self.add_dir(wd, name, &path, tx),
                }
            }
            return Some(Change::MovedTo {
                cookie,
                path,
                dir: is_dir,
            });
        }
        if mask.contains(EventMask::CREATE) {
            if is_dir {
                self.add_dir(wd, name, &path, tx);
                return Some(Change::NewDir(path));
            }
            use std::os::unix::fs::MetadataExt;
            let linked =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.nlink() > 1);
            return linked.then_some(Change::Dirty(path));
        }
        if mask.intersects(EventMask::CLOSE_WRITE | EventMask::DELETE | EventMask::ATTRIB) {
            return Some(Change::Dirty(path));
        }
        warn!(wd, ?mask, "unexpected inotify event");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::mpsc::{channel, Receiver};

    /// Changes until `want` arrives (or 10 s pass, which fails the test).
    fn until(rx: &Receiver<Change>, want: impl Fn(&Change) -> bool) -> Vec<Change> {
        let mut seen = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(c) = rx.recv_timeout(Duration::from_millis(50)) {
                let done = want(&c);
                seen.push(c);
                if done {
                    return seen;
                }
            }
        }
        panic!("never saw the change; saw {seen:?}");
    }

    fn write(p: &Path) {
        fs::write(p, b"x").unwrap();
    }

    fn setup() -> (tempfile::TempDir, PathBuf, DirWatch, Receiver<Change>) {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        fs::create_dir_all(root.join("2024/05/old-slug/img")).unwrap();
        let (tx, rx) = channel();
        let w = watch(&root, tx).unwrap();
        (t, root, w, rx)
    }

    #[test]
    fn a_file_deep_in_the_tree_reports_its_full_path() {
        let (_t, root, _w, rx) = setup();
        let p = root.join("2024/05/old-slug/img/a.jpg");
        write(&p);
        until(&rx, |c| *c == Change::Dirty(p.clone()));
    }

    #[test]
    fn a_new_directory_is_watched_at_once() {
        let (_t, root, _w, rx) = setup();
        let d = root.join("2024/06");
        fs::create_dir(&d).unwrap();
        until(&rx, |c| *c == Change::NewDir(d.clone()));
        let p = d.join("index.html");
        write(&p);
        until(&rx, |c| *c == Change::Dirty(p.clone()));
    }

    #[test]
    fn a_directory_renamed_inside_the_tree_reports_paths_under_its_new_name() {
        let (_t, root, _w, rx) = setup();
        let (from, to) = (root.join("2024/05/old-slug"), root.join("2024/new-slug"));
        fs::rename(&from, &to).unwrap();
        let seen = until(&rx, |c| matches!(c, Change::MovedTo { .. }));
        let cookie = seen
            .iter()
            .find_map(|c| match c {
                Change::MovedFrom { cookie, path } if *path == from => Some(*cookie),
                _ => None,
            })
            .expect("the move's first half");
        assert!(seen.contains(&Change::MovedTo {
            cookie,
            path: to.clone(),
            dir: true
        }));
        // The subdirectory below it, watched under the old path, now reports the new one.
        let p = to.join("img/b.jpg");
        write(&p);
        until(&rx, |c| *c == Change::Dirty(p.clone()));
    }

    #[test]
    fn a_directory_moved_out_of_the_tree_is_no_longer_watched() {
        let (t, root, w, rx) = setup();
        let outside = tempfile::tempdir_in(t.path().parent().unwrap()).unwrap();
        let gone = outside.path().join("gone");
        fs::rename(root.join("2024/05/old-slug"), &gone).unwrap();
        until(&rx, |c| matches!(c, Change::MovedFrom { .. }));
        // Past the wait for a partner, the moved directory's watches are removed: writes
        // there raise nothing, while the tree still reports.
        std::thread::sleep(MOVED_OUT_AFTER * 3);
        write(&gone.join("img/c.jpg"));
        let p = root.join("2024/here.html");
        write(&p);
        let seen = until(&rx, |c| *c == Change::Dirty(p.clone()));
        assert!(
            seen.iter()
                .all(|c| !matches!(c, Change::Dirty(x) if x.ends_with("c.jpg"))),
            "a write outside the tree was reported: {seen:?}"
        );
        drop(w);
    }

    #[test]
    fn a_hard_link_counts_as_a_complete_file() {
        let (_t, root, _w, rx) = setup();
        let (a, b) = (root.join("2024/a.html"), root.join("2024/b.html"));
        write(&a);
        until(&rx, |c| *c == Change::Dirty(a.clone()));
        fs::hard_link(&a, &b).unwrap();
        until(&rx, |c| *c == Change::Dirty(b.clone()));
    }

    #[test]
    fn names_survive_compaction_and_deleted_directories_are_forgotten() {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        let mut tree = Tree::new(root.clone(), Inotify::init().unwrap());
        tree.root_wd = 1;
        tree.dirs.insert(1, Dir::ROOT);
        let long = "n".repeat(200);
        for wd in 2..20_000 {
            tree.set(wd, 1, OsStr::new(&format!("{long}{wd}")));
        }
        tree.set(20_000, 19_999, OsStr::new("deep"));
        let written = tree.names.len();
        for wd in 2..19_000 {
            tree.forget(wd);
        }
        // Without compaction the arena would still hold every name written (4 MB); the 1,001
        // names left are 0.2 MB, plus what was forgotten since the last compaction.
        assert!(tree.names.len() < written / 2, "never compacted");
        assert_eq!(tree.dirs.len(), 1 + 1000 + 1);
        assert_eq!(
            tree.path(20_000).unwrap(),
            root.join(format!("{long}19999")).join("deep")
        );
        assert_eq!(tree.path(5), None);
        tree.remove_subtree(19_999);
        assert_eq!(tree.path(20_000), None);
        assert!(tree.path(19_998).is_some());
    }
}

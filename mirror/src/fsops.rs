//! File-system steps of applying a changeset, each refusing to pass through a symlink, so a
//! hostile upstream (or a hostile file in the root) can never make the mirror write, rename or
//! delete anything outside its root.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use tamizdat_protocol::SitePath;

/// Why an op could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("'{0}' passes through a symlink; refused")]
    Symlink(SitePath),
    #[error("'{0}' does not exist on this mirror (out of step with upstream)")]
    Missing(SitePath),
    #[error("{what} '{path}': {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
}

impl FsError {
    pub fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        FsError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }

    /// The underlying I/O error, if this is one (to tell a full disk from a bad peer).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            FsError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Checks every existing ancestor of `path` is a real directory. A regular file standing where
/// a directory is needed is removed (upstream replaced it; its delete may have been compacted).
/// Returns the full path.
pub fn prepare_parent(root: &Path, path: &SitePath) -> Result<PathBuf, FsError> {
    Ancestors::default().prepare_parent(root, path)
}

/// Like [`prepare_parent`] but creates nothing: `Ok(None)` when an ancestor is missing.
pub fn existing(root: &Path, path: &SitePath) -> Result<Option<PathBuf>, FsError> {
    let found = walk(root, path, Walk::Find, &mut Vec::new())?;
    Ok(found.then(|| root.join(path.as_str())))
}

/// The ancestors the last [`Ancestors::prepare_parent`] found to be real directories (or made),
/// so that the next path, sorted next to it, checks only what it does not share: in a full
/// resync of `yyyy/mm/slug/index.html` pages that leaves one `lstat` and one `mkdir` of the
/// three levels per page. Forget them (a new value, or [`Ancestors::forget`]) after anything
/// that may remove a directory. Trusting a check made a moment earlier in the same changeset
/// adds nothing a local user who can write the root could not do anyway: upstream has no way
/// to make a symlink, only a local user can, and path-based renames always leave that user a
/// window between check and use.
#[derive(Default)]
pub struct Ancestors {
    checked: Vec<PathBuf>,
    how: Walk,
}

impl Ancestors {
    /// For a tree being filled from empty, where a directory not checked yet is most likely
    /// missing: each is made first and looked at only if it was there already, which saves
    /// an `lstat` per directory (10,000 of them in a 10k-page full resync).
    pub fn fresh() -> Self {
        Ancestors {
            checked: Vec::new(),
            how: Walk::CreateFirst,
        }
    }

    /// [`prepare_parent`], skipping the ancestors checked last time.
    pub fn prepare_parent(&mut self, root: &Path, path: &SitePath) -> Result<PathBuf, FsError> {
        walk(root, path, self.how, &mut self.checked)?;
        Ok(root.join(path.as_str()))
    }

    pub fn forget(&mut self) {
        self.checked.clear();
    }
}

/// What [`walk`] does about a missing ancestor.
#[derive(Clone, Copy, PartialEq, Default)]
enum Walk {
    /// Stops: the path does not exist.
    Find,
    /// Makes it, after finding it missing.
    #[default]
    Create,
    /// Makes it without looking first; looks only if it was there.
    CreateFirst,
}

/// Walks `path`'s ancestors under `root`, refusing symlinks. Creating ([`Walk::Create`],
/// [`Walk::CreateFirst`]), makes missing directories (replacing a file in the way); finding,
/// returns false at the first missing one.
/// `checked[i]` is an ancestor at depth `i` known to be a directory; the walk trusts the
/// leading run that matches and leaves the chain it checked there.
fn walk(
    root: &Path,
    path: &SitePath,
    how: Walk,
    checked: &mut Vec<PathBuf>,
) -> Result<bool, FsError> {
    let create = how != Walk::Find;
    let mut cur = root.to_path_buf();
    let comps: Vec<&str> = path.components().collect();
    for (depth, c) in comps[..comps.len() - 1].iter().enumerate() {
        cur.push(c);
        if checked.get(depth) == Some(&cur) {
            continue;
        }
        checked.truncate(depth);
        // A directory made here is a real one: nothing else needs checking.
        if how == Walk::CreateFirst && fs::create_dir(&cur).is_ok() {
            checked.push(cur.clone());
            continue;
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return Err(FsError::Symlink(path.clone())),
            Ok(m) if m.is_dir() => {
                checked.push(cur.clone());
                continue;
            }
            Ok(_) if !create => return Ok(false),
            Ok(_) => fs::remove_file(&cur).map_err(|e| FsError::io("remove", &cur, e))?,
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(FsError::io("stat", &cur, e))
            }
            Err(_) if !create => return Ok(false),
            Err(_) => {}
        }
        fs::create_dir(&cur).map_err(|e| FsError::io("create directory", &cur, e))?;
        checked.push(cur.clone());
    }
    checked.truncate(comps.len() - 1);
    Ok(true)
}

/// Removes whatever stands at `full` (file, symlink itself, or directory tree).
pub fn remove_any(full: &Path) -> Result<bool, FsError> {
    match fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(full)
            .map(|_| true)
            .map_err(|e| FsError::io("remove directory", full, e)),
        Ok(_) => fs::remove_file(full)
            .map(|_| true)
            .map_err(|e| FsError::io("remove", full, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FsError::io("stat", full, e)),
    }
}

/// The files a changeset replaced or deleted, held open until the publish gate is released.
///
/// The last close of a file that was renamed over or unlinked frees its blocks, and that is
/// the slow part of such a rename: on ext4 mounted with `discard` and no journal (the
/// benchmark VM's disk, as some cloud images mount theirs) each free waits for a discard,
/// 0.10-0.37 ms a file against 0.014 ms to open the old file and rename over it, freeing it
/// later (20 KB files, `benches/free-cost.py`). Held open, the old inodes are freed by
/// [`Held::close_later`] on a thread of its own, after readers were let through the gate.
#[derive(Default)]
pub struct Held(Vec<fs::File>);

impl Held {
    /// Beyond this many a changeset's old files are freed where they are replaced, so a
    /// large catch-up never nears the descriptor limit.
    const MAX: usize = 256;

    /// Opens `full` (if it is a regular file, never following a symlink) so that its inode
    /// outlives the rename or unlink that comes next. Callers check that it is a regular
    /// file first: the open itself must not be what finds out.
    pub fn hold(&mut self, full: &Path) {
        use std::os::unix::fs::OpenOptionsExt;
        if self.0.len() >= Self::MAX {
            return;
        }
        if let Ok(f) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(full)
        {
            if f.metadata().is_ok_and(|m| m.is_file()) {
                self.0.push(f);
            }
        }
    }

    /// Closes the held files on the one thread that does that for every changeset (started
    /// on first use), not on a thread per changeset.
    pub fn close_later(self) {
        use std::sync::mpsc::{channel, Sender};
        use std::sync::OnceLock;
        static CLOSER: OnceLock<Option<Sender<Vec<fs::File>>>> = OnceLock::new();
        if self.0.is_empty() {
            return;
        }
        let closer = CLOSER.get_or_init(|| {
            let (tx, rx) = channel::<Vec<fs::File>>();
            std::thread::Builder::new()
                .name("close-replaced".into())
                .spawn(move || rx.into_iter().for_each(drop))
                .ok()
                .map(|_| tx)
        });
        // Were no thread to be had, the files are closed here, as they drop.
        if let Some(tx) = closer {
            let _ = tx.send(self.0);
        }
    }
}

/// Readies `full` to be renamed over: a directory there is removed (returns true: it was a
/// directory), a regular file is held open ([`Held`]) so that the rename does not free it.
pub fn clear_for_rename(full: &Path, held: &mut Held) -> Result<bool, FsError> {
    match fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => remove_any(full).map(|_| true),
        Ok(m) if m.is_file() => {
            held.hold(full);
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Removes empty directories from `full`'s parent up to (not including) `root`.
pub fn prune_empty_parents(root: &Path, full: &Path) {
    let mut cur = full.parent();
    while let Some(d) = cur {
        if d == root || !d.starts_with(root) || fs::remove_dir(d).is_err() {
            break;
        }
        cur = d.parent();
    }
}

/// fsyncs a directory, so the renames in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| FsError::io("sync directory", dir, e))
}

/// Flushes the whole file system holding `path` in one call (cheaper than an fsync per file
/// when many files were staged together).
pub fn sync_fs(path: &Path) -> Result<(), FsError> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).map_err(|e| FsError::io("open", path, e))?;
    // SAFETY: syncfs takes a valid open descriptor and touches no memory of ours.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(FsError::io("syncfs", path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets the permission bits and the modification time (seconds since the epoch, before it
/// taken as the epoch) of the staged file at `path` (made with [`STAGED_MODE`]), relative to
/// the directory `dir` (or `rustix::fs::CWD`), by name: at most two calls instead of the four
/// of opening it, `fchmod`, `futimens` and closing it, and one where `mode` is
/// [`STAGED_MODE`] already. Does not follow a symlink for the time.
pub fn set_mode_and_mtime(
    dir: impl std::os::fd::AsFd,
    path: impl rustix::path::Arg + Copy,
    mode: u32,
    mtime: i64,
) -> io::Result<()> {
    let dir = dir.as_fd();
    if mode != STAGED_MODE {
        rustix::fs::chmodat(
            dir,
            path,
            rustix::fs::Mode::from_raw_mode(mode),
            rustix::fs::AtFlags::empty(),
        )?;
    }
    set_mtime(dir, path, mtime)
}

/// Sets the modification time (seconds since the epoch, before it taken as the epoch) of the
/// file at `path` relative to `dir`, leaving its access time alone.
fn set_mtime(
    dir: impl std::os::fd::AsFd,
    path: impl rustix::path::Arg,
    mtime: i64,
) -> io::Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, UTIME_OMIT};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime.max(0),
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(dir, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// The permission bits of every file the mirror stages (`crate::stage`), whatever the umask:
/// [`set_mode_and_mtime`] then leaves a file that is to have them as it is, and most of a
/// site's files are (a `chmod` a file was a sixth of the early publisher's calls in a full
/// resync).
pub const STAGED_MODE: u32 = 0o644;

/// Makes the file just created as `fd` have exactly [`STAGED_MODE`]: it was created with it,
/// less the umask, so this costs a call only where the umask takes some of it away.
pub fn make_staged_mode(fd: impl std::os::fd::AsFd) -> io::Result<()> {
    if umask_keeps_staged_mode(umask()) {
        return Ok(());
    }
    rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(STAGED_MODE))?;
    Ok(())
}

/// True when a file created with [`STAGED_MODE`] under `umask` has all of it (an unknown
/// umask may have taken anything).
fn umask_keeps_staged_mode(umask: Option<u32>) -> bool {
    umask.is_some_and(|u| STAGED_MODE & u == 0)
}

/// The process's umask, read once from `/proc/self/status` (`umask(2)` would have to change
/// it to read it, a race with every thread creating files); `None` where that is not there.
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Opens the directory at `path` for the `*at` calls only (`O_PATH`): they then look up the
/// names given them, not `path`'s components again.
pub fn open_dir(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp dir holding an empty `root` and an empty `outside` it must never write to.
    fn root_and_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let (root, outside) = (d.path().join("root"), d.path().join("outside"));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        (d, root, outside)
    }

    #[test]
    fn held_files_outlive_their_unlink_and_symlinks_are_not_followed() {
        use std::os::unix::fs::MetadataExt;
        let (_d, root, outside) = root_and_outside();
        let (page, secret) = (root.join("page.html"), outside.join("secret"));
        fs::write(&page, b"old page").unwrap();
        fs::write(&secret, b"secret").unwrap();
        std::os::unix::fs::symlink(&secret, root.join("link")).unwrap();
        fs::create_dir(root.join("dir")).unwrap();
        let mut held = Held::default();
        for name in ["page.html", "link", "dir", "missing"] {
            held.hold(&root.join(name));
        }
        assert_eq!(held.0.len(), 1, "only the regular file is held");
        let ino = fs::metadata(&page).unwrap().ino();
        fs::write(root.join("new"), b"new page").unwrap();
        fs::rename(root.join("new"), &page).unwrap();
        let mut old = String::new();
        io::Read::read_to_string(&mut &held.0[0], &mut old).unwrap();
        assert_eq!(old, "old page", "the replaced inode is still readable");
        assert_eq!(held.0[0].metadata().unwrap().ino(), ino);
        assert_eq!(held.0[0].metadata().unwrap().nlink(), 0);
        assert_eq!(fs::read(&page).unwrap(), b"new page");
        held.close_later();
    }

    #[test]
    fn files_closed_later_are_closed_for_every_changeset() {
        let (_d, root, _outside) = root_and_outside();
        // Descriptors of this process open on `name`'s (unlinked) inode.
        let open_on = |name: &str| {
            fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter(|t| t.to_string_lossy().contains(name))
                .count()
        };
        for changeset in 0..3 {
            let name = format!("closed-later-{changeset}");
            let f = root.join(&name);
            fs::write(&f, b"old").unwrap();
            let mut held = Held::default();
            held.hold(&f);
            fs::remove_file(&f).unwrap();
            assert_eq!(open_on(&name), 1);
            held.close_later();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while open_on(&name) > 0 {
                assert!(std::time::Instant::now() < deadline, "{name} never closed");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn holding_stops_at_its_bound() {
        let (_d, root, _outside) = root_and_outside();
        let mut held = Held::default();
        for i in 0..Held::MAX + 3 {
            let f = root.join(format!("f{i}"));
            fs::write(&f, b"x").unwrap();
            held.hold(&f);
        }
        assert_eq!(held.0.len(), Held::MAX);
    }

    #[test]
    fn ancestors_check_what_sorted_paths_do_not_share_and_forget_on_request() {
        // Looking before making a directory, and making it first (a tree being filled).
        for fresh in [false, true] {
            let (_d, root, outside) = root_and_outside();
            let p = |s: &str| SitePath::new(s).unwrap();
            let mut a = if fresh {
                Ancestors::fresh()
            } else {
                Ancestors::default()
            };
            for s in [
                "2009/04/a/index.html",
                "2009/04/b/index.html",
                "2009/05/c/index.html",
            ] {
                assert_eq!(a.prepare_parent(&root, &p(s)).unwrap(), root.join(s));
                assert!(root.join(s).parent().unwrap().is_dir(), "{s}");
            }
            // A level the last path did not share is checked: a symlink there is refused.
            std::os::unix::fs::symlink(&outside, root.join("2009/06")).unwrap();
            assert!(matches!(
                a.prepare_parent(&root, &p("2009/06/d/index.html")),
                Err(FsError::Symlink(_))
            ));
            // After `forget`, every level is checked again.
            a.prepare_parent(&root, &p("2009/05/c/index.html")).unwrap();
            fs::remove_dir_all(root.join("2009/05")).unwrap();
            std::os::unix::fs::symlink(&outside, root.join("2009/05")).unwrap();
            a.forget();
            assert!(matches!(
                a.prepare_parent(&root, &p("2009/05/e/index.html")),
                Err(FsError::Symlink(_))
            ));
            assert!(!outside.join("e").exists());
            // A file where a directory must be is replaced, at a level not shared.
            fs::write(root.join("2009/04/f"), b"x").unwrap();
            a.prepare_parent(&root, &p("2009/04/f/index.html")).unwrap();
            assert!(root.join("2009/04/f").is_dir());
        }
    }

    #[test]
    fn mode_and_mtime_are_set_by_path() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, root, _) = root_and_outside();
        let f = root.join("f");
        fs::write(&f, b"x").unwrap();
        set_mode_and_mtime(rustix::fs::CWD, &f, 0o640, 1_234_567_890).unwrap();
        let m = fs::metadata(&f).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        let mtime = m.modified().unwrap();
        assert_eq!(
            mtime
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_234_567_890
        );
        // Before the epoch is the epoch; a missing file is an error of its kind.
        set_mode_and_mtime(rustix::fs::CWD, &f, 0o644, -5).unwrap();
        assert_eq!(
            fs::metadata(&f).unwrap().modified().unwrap(),
            std::time::UNIX_EPOCH
        );
        let e = set_mode_and_mtime(rustix::fs::CWD, &root.join("missing"), 0o644, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_staged_file_has_the_staged_mode_whatever_the_umask_left() {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let (_d, root, _) = root_and_outside();
        let u = umask().expect("Linux reports the umask in /proc/self/status");
        assert_eq!(u & !0o777, 0, "umask {u:o}");
        let f = fs::File::options()
            .write(true)
            .create_new(true)
            .mode(STAGED_MODE)
            .open(root.join("staged"))
            .unwrap();
        make_staged_mode(&f).unwrap();
        let m = f.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(m, STAGED_MODE);
        // Which umasks need the chmod: those that take a bit of 0644, and one not known.
        for (u, keeps) in [(0o022, true), (0o002, true), (0o027, false), (0o077, false)] {
            assert_eq!(umask_keeps_staged_mode(Some(u)), keeps, "umask {u:o}");
        }
        assert!(!umask_keeps_staged_mode(None));
        // The mode it already has costs no chmod, and another one is set.
        set_mode_and_mtime(rustix::fs::CWD, &root.join("staged"), 0o755, 7).unwrap();
        let m = fs::metadata(root.join("staged"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, 0o755);
    }

    #[test]
    fn refuses_symlinked_ancestors_and_replaces_files() {
        let (_d, root, outside) = root_and_outside();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let p = SitePath::new("link/x.html").unwrap();
        assert!(matches!(
            prepare_parent(&root, &p),
            Err(FsError::Symlink(_))
        ));
        assert!(matches!(existing(&root, &p), Err(FsError::Symlink(_))));
        fs::write(root.join("f"), b"x").unwrap();
        let p = SitePath::new("f/g/h.html").unwrap();
        assert_eq!(prepare_parent(&root, &p).unwrap(), root.join("f/g/h.html"));
        assert!(root.join("f/g").is_dir());
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
        prune_empty_parents(&root, &root.join("f/g/h.html"));
        assert!(!root.join("f").exists());
        assert!(root.exists());
    }
}

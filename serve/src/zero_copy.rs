//! File bodies sent with `sendfile(2)`: from the page cache to the socket, never through a
//! buffer of ours.
//!
//! hyper has no sendfile; it writes a body by handing the connection's IO the very `Bytes`
//! the body yielded (its "queue" write strategy, which [`crate::server`] asks for with
//! `http1::Builder::writev(true)`). So a file chunk travels as a stand-in: a slice of
//! [`STAND_IN`], a static run of zeros that nothing reads and that costs no memory, plus a
//! [`Note`] in the connection's [`Sends`] saying which file and offset it stands for. When the
//! connection's IO is asked to write a stand-in it calls sendfile for the bytes it stands for
//! instead ([`poll_send`]).
//!
//! hyper writes a connection's body chunks in the order the body yielded them, so the notes
//! are a FIFO queue, and the front note must be the one being written: each stand-in the IO
//! meets is checked against it (its address must be where that note's unsent part starts). A
//! mismatch is an error that closes the connection; zeros never reach the wire.
//!
//! A file changed in place while it is being sent (the mirror never does that: it renames new
//! files over old ones, and an open file keeps its old bytes) differs from copying in one way:
//! the socket holds references to page cache pages, so bytes already queued may read as the
//! zeros the kernel fills cut pages with when the file is truncated, as with nginx's sendfile.
//! The response is cut short then either way (the next sendfile finds the end early), so no
//! client takes it for a whole one.
//!
//! A chunk goes this way only when the page cache holds all of it (`cachestat(2)`, Linux 6.5
//! and later), since sendfile on the runtime thread would otherwise wait for the disk and stall
//! every connection of that thread. A cold chunk, or every chunk on an older kernel, is read
//! into a buffer as before (`body.rs`).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Largest chunk one stand-in covers. hyper stops asking the body for more once it holds
/// about 400 KiB unwritten, so a response has one or two stand-ins queued at a time.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// Never written, so it stays in `.bss`: no page of it is ever touched.
static STAND_IN: [u8; CHUNK_BYTES] = [0; CHUNK_BYTES];

/// Set once `cachestat(2)` turned out missing (kernel before 6.5, or seccomp): every chunk is
/// then copied.
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

/// One chunk of a file queued for sendfile.
struct Note {
    file: Arc<File>,
    offset: u64,
    len: usize,
    sent: usize,
}

/// The chunks one connection has queued for sendfile, oldest first. Shared by that
/// connection's response bodies (which queue) and its IO (which sends).
#[derive(Clone, Default)]
pub(crate) struct Sends(Arc<Mutex<VecDeque<Note>>>);

impl Sends {
    /// A stand-in for `len` bytes (at most [`CHUNK_BYTES`]) of `file` at `offset`, if the page
    /// cache holds all of them; `None` means the caller reads them itself.
    pub(crate) fn stand_in(&self, file: &Arc<File>, offset: u64, len: usize) -> Option<Bytes> {
        debug_assert!(len > 0 && len <= CHUNK_BYTES);
        if !all_cached(file, offset, len as u64) {
            return None;
        }
        self.0.lock().push_back(Note {
            file: file.clone(),
            offset,
            len,
            sent: 0,
        });
        Some(Bytes::from_static(&STAND_IN[..len]))
    }
}

/// Whether `buf` is (part of) a stand-in rather than bytes to write.
pub(crate) fn is_stand_in(buf: &[u8]) -> bool {
    STAND_IN.as_ptr_range().contains(&buf.as_ptr()) && !buf.is_empty()
}

fn out_of_step() -> io::Error {
    io::Error::other("zero-copy bookkeeping out of step with the bytes written; connection closed")
}

/// Writes the bytes the stand-in `buf` stands for to `stream` with sendfile; like
/// `poll_write`, returns how many went out.
pub(crate) fn poll_send(
    stream: &TcpStream,
    sends: &Sends,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    let mut queue = sends.0.lock();
    let Some(note) = queue.front_mut() else {
        return Poll::Ready(Err(out_of_step()));
    };
    let unsent = note.len - note.sent;
    if buf.as_ptr() != STAND_IN[note.sent..].as_ptr() || buf.len() > unsent {
        return Poll::Ready(Err(out_of_step()));
    }
    loop {
        ready!(stream.poll_write_ready(cx))?;
        let mut at = note.offset + note.sent as u64;
        let r = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, &*note.file, Some(&mut at), buf.len()).map_err(Into::into)
        });
        match r {
            // The file is shorter than when the response was started.
            Ok(0) => return Poll::Ready(Err(crate::body::shrank())),
            Ok(n) => {
                note.sent += n;
                if note.sent == note.len {
                    queue.pop_front();
                }
                return Poll::Ready(Ok(n));
            }
            Err(e) if try_again(&e) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// Whether a write that failed with `e` is to be tried again once the socket is writable.
pub(crate) fn try_again(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// `struct cachestat_range` of `<linux/mman.h>`.
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// `struct cachestat` of `<linux/mman.h>`.
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// `cachestat` has this number on every architecture Linux numbers new calls alike for
/// (`include/uapi/asm-generic/unistd.h`, x86_64's `syscall_64.tbl`).
const SYS_CACHESTAT: libc::c_long = 451;

/// Whether every page of `len` bytes at `offset` of `file` is in the page cache. False when
/// unsure (no `cachestat`, an error): the caller then copies, which is always correct.
fn all_cached(file: &File, offset: u64, len: u64) -> bool {
    if NO_CACHESTAT.load(Ordering::Relaxed) {
        return false;
    }
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat(2) reads one `cachestat_range` and writes one `cachestat`, both
    // `repr(C)` with the kernel's layout and alive for the call; the fd is open (borrowed from
    // `file`); flags must be 0.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0 as libc::c_uint,
        )
    };
    if r != 0 {
        if matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOSYS | libc::EPERM)
        ) {
            NO_CACHESTAT.store(true, Ordering::Relaxed);
        }
        return false;
    }
    let page = rustix::param::page_size() as u64;
    let pages = (offset + len).div_ceil(page) - offset / page;
    stat.nr_cache >= pages
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_file_just_written_is_cached_and_a_range_past_its_end_is_not() {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(&vec![7u8; 3 << 20]).unwrap();
        let f = File::open(t.path()).unwrap();
        if !all_cached(&f, 0, 3 << 20) {
            assert!(
                NO_CACHESTAT.load(Ordering::Relaxed),
                "fresh pages not seen as cached, yet cachestat is there"
            );
            return;
        }
        assert!(all_cached(&f, 4097, 100_000));
        // Pages that do not exist are not in the cache.
        assert!(!all_cached(&f, (3 << 20) - 10, 1 << 20));
    }

    #[test]
    fn stand_ins_are_told_apart_from_other_bytes() {
        let f = Arc::new(File::open("/proc/self/exe").unwrap());
        let sends = Sends::default();
        let b = Bytes::from_static(&STAND_IN[..10]);
        assert!(is_stand_in(&b) && is_stand_in(&b[3..]));
        assert!(!is_stand_in(&[0u8; 10]) && !is_stand_in(&STAND_IN[..0]));
        if let Some(s) = sends.stand_in(&f, 0, 4096) {
            assert!(is_stand_in(&s));
            assert_eq!(sends.0.lock().len(), 1);
        }
    }
}

//! Response bodies: nothing, bytes already in memory, or a file range streamed in chunks.
//!
//! A file chunk is read on the runtime thread with `preadv2(RWF_NOWAIT)`, which only copies
//! what is already in the page cache and never waits for the disk. Only when that would block
//! (or the filesystem does not support it) is the chunk read on a blocking thread, and then the
//! next one is read ahead there too, since the disk is evidently cold.

use std::fs::File;
use std::future::Future as _;
use std::io::{self, IoSliceMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use rustix::io::{Errno, ReadWriteFlags};
use tokio::task::JoinHandle;

use crate::site::Site;
use crate::zero_copy::{self, Sends};

/// Bytes read per chunk when streaming. hyper asks for chunks until it holds about 400 KiB
/// unwritten, so a streaming response holds at most about four. Measured with wrk `-c64` on a
/// 5 MB file: 128 KiB, 256 KiB and 1 MiB cost about the same CPU per request; 1 MiB doubled the
/// RSS, and the mirror's RSS under that load was 50 MB at 128 KiB and 51 MB at 256 KiB (the
/// issue allows 64), so the smaller stays.
pub(crate) const CHUNK_BYTES: u64 = 128 << 10;

/// Set once `preadv2(RWF_NOWAIT)` turned out unsupported here: every chunk then goes to a
/// blocking thread.
static NO_NOWAIT: AtomicBool = AtomicBool::new(false);

/// The body of every response this crate sends.
pub struct Body(Kind);

enum Kind {
    Empty,
    Bytes(Option<Bytes>),
    File(FileStream),
}

struct FileStream {
    file: Arc<File>,
    /// Next offset to read.
    pos: u64,
    end: u64,
    /// Bytes not yet handed to hyper.
    remaining: u64,
    /// A chunk being read on a blocking thread (the disk was cold).
    pending: Option<JoinHandle<io::Result<Bytes>>>,
    /// Where chunks the page cache holds are queued for sendfile, when the connection does
    /// that, and the site whose counters note the chunks it copies instead.
    sends: Option<(Sends, Arc<Site>)>,
}

impl Body {
    pub(crate) fn empty() -> Self {
        Body(Kind::Empty)
    }

    pub(crate) fn bytes(b: Bytes) -> Self {
        if b.is_empty() {
            Body::empty()
        } else {
            Body(Kind::Bytes(Some(b)))
        }
    }

    /// `len` bytes of `file` from `start`, read with positioned reads when hyper asks for them.
    pub(crate) fn file(file: Arc<File>, start: u64, len: u64) -> Self {
        if len == 0 {
            return Body::empty();
        }
        Body(Kind::File(FileStream {
            file,
            pos: start,
            end: start + len,
            remaining: len,
            pending: None,
            sends: None,
        }))
    }

    /// Lets a file body send what the page cache holds with sendfile, through the IO of the
    /// connection that `sends` belongs to (see `zero_copy.rs`); what it copies instead is
    /// counted in `site`'s stats.
    pub(crate) fn send_files_with(&mut self, sends: &Sends, site: &Arc<Site>) {
        if let Kind::File(s) = &mut self.0 {
            s.sends = Some((sends.clone(), site.clone()));
        }
    }
}

impl FileStream {
    /// Notes a chunk read into memory where sendfile would have been used had the page cache
    /// held it.
    fn copied(&self, chunk: &Bytes) {
        if let Some((_, site)) = &self.sends {
            site.stats.copied_for_sendfile(chunk.len() as u64);
        }
    }

    fn next_len(&self) -> usize {
        (self.end - self.pos).min(CHUNK_BYTES) as usize
    }

    /// Starts reading the next chunk on a blocking thread.
    fn read_on_blocking_thread(&mut self) {
        let n = self.next_len();
        let file = self.file.clone();
        let at = self.pos;
        self.pos += n as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            read_exact_at(&file, n, at)
        }));
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if let Some(pending) = self.pending.as_mut() {
            let res = ready!(Pin::new(pending).poll(cx));
            self.pending = None;
            let chunk = match res {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
            };
            if self.pos < self.end {
                // The disk was cold for this chunk; read the next one ahead while this one is
                // written.
                self.read_on_blocking_thread();
            }
            self.copied(&chunk);
            return Poll::Ready(Some(Ok(chunk)));
        }
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        if let Some((sends, _)) = &self.sends {
            let n = (self.end - self.pos).min(zero_copy::CHUNK_BYTES as u64) as usize;
            if let Some(stand_in) = sends.stand_in(&self.file, self.pos, n) {
                self.pos += n as u64;
                return Poll::Ready(Some(Ok(stand_in)));
            }
        }
        match read_cached_at(&self.file, self.next_len(), self.pos) {
            Ok(Some(chunk)) => {
                self.pos += chunk.len() as u64;
                self.copied(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Ok(None) => {
                self.read_on_blocking_thread();
                self.poll_chunk(cx)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

pub(crate) fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "file shrank while it was being sent",
    )
}

/// Up to `n` bytes at `at`, from the page cache only: `None` when reading them would wait for
/// the disk. Never blocks.
pub(crate) fn read_cached_at(file: &File, n: usize, at: u64) -> io::Result<Option<Bytes>> {
    if NO_NOWAIT.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let mut buf = vec![0u8; n];
    loop {
        let r = rustix::io::preadv2(
            file,
            &mut [IoSliceMut::new(&mut buf)],
            at,
            ReadWriteFlags::NOWAIT,
        );
        return match r {
            Ok(0) => Err(shrank()),
            Ok(k) => {
                buf.truncate(k);
                Ok(Some(Bytes::from(buf)))
            }
            Err(Errno::AGAIN) => Ok(None),
            Err(Errno::INTR) => continue,
            // No preadv2 or no RWF_NOWAIT for this kernel or filesystem.
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                NO_NOWAIT.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        };
    }
}

/// Exactly `n` bytes at `at`, waiting for the disk if need be: for blocking threads.
fn read_exact_at(file: &File, n: usize, at: u64) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(n);
    while buf.len() < n {
        let off = at + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), off) {
            Ok(0) => return Err(shrank()),
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Bytes::from(buf))
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Empty => Poll::Ready(None),
            Kind::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::File(s) => match ready!(s.poll_chunk(cx)) {
                Some(Ok(chunk)) => {
                    s.remaining -= chunk.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Some(Err(e)) => Poll::Ready(Some(Err(e))),
                None => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Bytes(b) => b.is_none(),
            Kind::File(s) => s.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::File(s) => SizeHint::with_exact(s.remaining),
        }
    }
}

impl Drop for FileStream {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use hyper::body::Body as _;

    use super::*;

    const C: u64 = CHUNK_BYTES;
    /// Lengths around the chunk size, and offsets to start from.
    const INTERESTING_LENS: [u64; 7] = [0, 1, C - 1, C, C + 1, 2 * C + 1, 5 * C / 2];
    const STARTS: [u64; 3] = [0, 1, C - 1];

    fn data(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        t.flush().unwrap();
        let f = Arc::new(File::open(t.path()).unwrap());
        (t, f)
    }

    /// The body as cold disk would send it: every chunk read on a blocking thread.
    fn cold(file: Arc<File>, start: u64, len: u64) -> Body {
        let mut b = Body::file(file, start, len);
        if let Kind::File(s) = &mut b.0 {
            s.read_on_blocking_thread();
        }
        b
    }

    async fn next(b: &mut Body) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| Pin::new(&mut *b).poll_frame(cx))
            .await
            .map(|r| r.map(|f| f.into_data().unwrap()))
    }

    /// Everything the body yields; checks the size hint and `is_end_stream` on the way.
    async fn drain(mut b: Body) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while !b.is_end_stream() {
            let left = b.size_hint().exact().unwrap();
            let chunk = next(&mut b)
                .await
                .expect("no end before the size hint says")?;
            assert!(!chunk.is_empty() && chunk.len() as u64 <= C);
            assert_eq!(b.size_hint().exact(), Some(left - chunk.len() as u64));
            out.extend_from_slice(&chunk);
        }
        assert!(next(&mut b).await.is_none());
        Ok(out)
    }

    #[tokio::test]
    async fn streams_exactly_the_range_from_cache_and_from_cold_disk() {
        for len in INTERESTING_LENS {
            for start in STARTS {
                let all = data(start + len + 3);
                let (_t, f) = file_of(&all);
                let want = &all[start as usize..(start + len) as usize];
                let warm = drain(Body::file(f.clone(), start, len)).await.unwrap();
                assert!(warm == want, "warm, len {len} from {start}");
                if len > 0 {
                    let cold = drain(cold(f, start, len)).await.unwrap();
                    assert!(cold == want, "cold, len {len} from {start}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_file_that_shrinks_mid_stream_is_an_error_not_a_short_body() {
        for make in [Body::file as fn(Arc<File>, u64, u64) -> Body, cold] {
            let all = data(3 * C);
            let (t, f) = file_of(&all);
            let mut b = make(f, 0, 3 * C);
            let first = next(&mut b).await.unwrap().unwrap();
            assert_eq!(&first[..], &all[..C as usize]);
            t.as_file().set_len(C).unwrap();
            // A read already under way on a blocking thread may still see the old length.
            let mut seen = first.len() as u64;
            let err = loop {
                match next(&mut b).await {
                    Some(Ok(c)) => seen += c.len() as u64,
                    Some(Err(e)) => break e,
                    None => panic!("ended after {seen} bytes without an error"),
                }
            };
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            assert!(seen < 3 * C);
        }
    }
}

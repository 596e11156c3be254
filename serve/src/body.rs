//! Response bodies: nothing, bytes already in memory, or a file range streamed in chunks.

use std::fs::File;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::task::JoinHandle;

/// Bytes read from disk per chunk when streaming; one chunk is read ahead while the previous
/// one is written, so a streaming response holds at most two.
pub(crate) const CHUNK_BYTES: u64 = 128 << 10;

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
    pending: Option<JoinHandle<io::Result<Bytes>>>,
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

    /// `len` bytes of `file` from `start`, read with positioned reads on blocking threads.
    pub(crate) fn file(file: Arc<File>, start: u64, len: u64) -> Self {
        if len == 0 {
            return Body::empty();
        }
        let mut s = FileStream {
            file,
            pos: start,
            end: start + len,
            remaining: len,
            pending: None,
        };
        s.read_ahead();
        Body(Kind::File(s))
    }
}

impl FileStream {
    fn read_ahead(&mut self) {
        if self.pos >= self.end {
            return;
        }
        let n = (self.end - self.pos).min(CHUNK_BYTES) as usize;
        let file = self.file.clone();
        let at = self.pos;
        self.pos += n as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            read_exact_at(&file, n, at)
        }));
    }
}

fn read_exact_at(file: &File, n: usize, at: u64) -> io::Result<Bytes> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while it was being sent",
                ))
            }
            Ok(k) => filled += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
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
            Kind::File(s) => {
                let Some(pending) = s.pending.as_mut() else {
                    return Poll::Ready(None);
                };
                let res = ready!(Pin::new(pending).poll(cx));
                s.pending = None;
                let chunk = match res {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
                };
                s.remaining -= chunk.len() as u64;
                s.read_ahead();
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
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

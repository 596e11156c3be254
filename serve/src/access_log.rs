//! Access log in the combined format, written by one background thread so that requests
//! never wait on the disk:
//!
//! ```text
//! 203.0.113.7 - - [22/Nov/2026:01:35:00 +0000] "GET /news/ HTTP/1.1" 200 10240 "-" "curl/8.5"
//! ```
//!
//! The byte count is the response's `Content-Length` (0 for HEAD and 304). The client address
//! comes from `X-Forwarded-For` only when the peer is a trusted proxy: the right-most address
//! in it that is not itself a trusted proxy. Times are UTC. When the writer falls behind by
//! more than [`QUEUE_LINES`] lines, further lines are dropped and counted, never buffered
//! without bound.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONTENT_LENGTH, REFERER, USER_AGENT};
use http::{HeaderMap, Request, Response, Version};
use ipnet::IpNet;

use crate::options::AccessLogTarget;

/// Lines queued for the writer thread before new ones are dropped.
pub const QUEUE_LINES: usize = 16_384;

#[derive(Clone)]
pub(crate) struct AccessLog {
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens the target and starts the writer thread; `None` for [`AccessLogTarget::Off`].
    pub(crate) fn open(target: &AccessLogTarget) -> io::Result<Option<AccessLog>> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot open access log {}: {e}", path.display()),
                        )
                    })?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let d = dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out, d))?;
        Ok(Some(AccessLog { tx, dropped }))
    }

    pub(crate) fn record<B, R>(
        &self,
        req: &Request<B>,
        resp: &Response<R>,
        peer: SocketAddr,
        trusted: &[IpNet],
    ) {
        let client = client_addr(peer.ip(), req.headers(), trusted);
        let bytes = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0");
        let bytes = if req.method() == http::Method::HEAD {
            "0"
        } else {
            bytes
        };
        let version = match req.version() {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_11 => "HTTP/1.1",
            Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/?",
        };
        let mut line = String::with_capacity(160);
        let _ = write!(line, "{client} - - [");
        with_date(|d| line.push_str(d));
        line.push_str("] \"");
        line.push_str(req.method().as_str());
        line.push(' ');
        escape_into(&mut line, req.uri().to_string().as_bytes());
        let _ = write!(line, " {version}\" {} {bytes} \"", resp.status().as_u16());
        header_into(&mut line, req.headers(), REFERER);
        line.push_str("\" \"");
        header_into(&mut line, req.headers(), USER_AGENT);
        line.push_str("\"\n");
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn writer(rx: Receiver<String>, out: Box<dyn Write + Send>, dropped: Arc<AtomicU64>) {
    let mut out = BufWriter::with_capacity(64 << 10, out);
    let mut reported = 0;
    while let Ok(line) = rx.recv() {
        let mut ok = out.write_all(line.as_bytes()).is_ok();
        while let Ok(line) = rx.try_recv() {
            ok &= out.write_all(line.as_bytes()).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            tracing::warn!("cannot write the access log");
        }
        let d = dropped.load(Ordering::Relaxed);
        if d != reported {
            tracing::warn!(
                lines = d - reported,
                "access log lines dropped: writer behind"
            );
            reported = d;
        }
    }
}

/// The client's address: the peer, or when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` that is not a trusted proxy.
pub(crate) fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for v in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(v) = v.to_str() else { return client };
        for item in v.rsplit(',') {
            let Ok(ip) = item.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip.to_canonical();
            if !is_trusted(&client) {
                return client;
            }
        }
    }
    client
}

fn header_into(line: &mut String, headers: &HeaderMap, name: http::header::HeaderName) {
    match headers.get(name) {
        Some(v) => escape_into(line, v.as_bytes()),
        None => line.push('-'),
    }
}

/// nginx-style escaping: `"`, `\` and bytes outside printable ASCII become `\xHH`.
fn escape_into(line: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(line, "\\x{b:02X}");
        } else {
            line.push(b as char);
        }
    }
}

/// `22/Nov/2026:01:35:00 +0000`, formatted once per second per thread.
fn with_date(f: impl FnOnce(&str)) {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != now {
            c.1 = format_clf_date(now);
            c.0 = now;
        }
        f(&c.1)
    })
}

fn format_clf_date(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant's algorithm), proleptic Gregorian, UTC.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_clf_date(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(format_clf_date(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(format_clf_date(1_795_311_300), "22/Nov/2026:01:35:00 +0000");
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_addr(proxy, &h, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_addr(stranger, &h, &trusted), stranger);
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_addr(proxy, &h, &trusted), proxy);
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        escape_into(&mut s, b"a\"b\\c\x01\xff");
        assert_eq!(s, "a\\x22b\\x5Cc\\x01\\xFF");
    }
}

//! Connection limits, timeouts, graceful shutdown and the access log.

mod common;

use std::time::Duration;

use common::*;
use tamizdat_serve::{AccessLogTarget, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes; returns what it sent.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    within(s.read_to_end(&mut data)).await.ok();
    data
}

#[tokio::test]
async fn slowloris_is_dropped() {
    let opts = ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let s = start(opts).await;
    s.put("index.html", b"home");
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    // Never finish the header: the server must hang up on its own (TIMEOUT bounds the wait).
    let got = read_until_closed(&mut c).await;
    assert!(!got.windows(4).any(|w| w == b"home"));
    // Others are still served.
    assert_eq!(s.get("/").await.body, b"home");
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let opts = ServeOptions {
        idle_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_secs(3600),
        ..ServeOptions::default()
    };
    let s = start(opts).await;
    s.put("a.txt", b"a");
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // One keep-alive response, then silence: the server closes the connection.
    let got = read_until_closed(&mut c).await;
    let r = parse(&got);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"a"[..]));
}

#[tokio::test]
async fn max_connections_holds_the_next_one_back() {
    let opts = ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    };
    let s = start(opts).await;
    s.put("a.txt", b"a");
    // First connection: a keep-alive request, answered, connection left open.
    let mut first = TcpStream::connect(s.addr).await.unwrap();
    first
        .write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = within(first.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Second connection: the kernel accepts it, the server does not serve it yet.
    let second = {
        let addr = s.addr;
        tokio::spawn(async move {
            raw_request(
                addr,
                b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "served past max_connections");
    drop(first);
    let r = within(second).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_responses() {
    let opts = ServeOptions {
        hot_cache_max_file: 1024,
        ..ServeOptions::default()
    };
    let mut s = start(opts).await;
    let big: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 253) as u8).collect();
    s.put("big.bin", &big);
    s.put("idle.txt", b"i");
    // An idle keep-alive connection, which shutdown closes.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /idle.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    within(idle.read(&mut buf)).await.unwrap();
    // A download in flight: read only its first bytes before shutdown starts.
    let mut dl = TcpStream::connect(s.addr).await.unwrap();
    dl.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 4096];
    let n = within(dl.read(&mut got)).await.unwrap();
    got.truncate(n);

    let addr = s.addr;
    let stopping = tokio::spawn(async move {
        s.stop().await;
        s
    });
    let mut rest = Vec::new();
    within(dl.read_to_end(&mut rest)).await.unwrap();
    got.extend(rest);
    let r = parse(&got);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());
    assert!(r.body == big);
    assert_eq!(read_until_closed(&mut idle).await, b"");
    let _s = within(stopping).await.unwrap();
    // The listener is gone.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn access_log_combined_format_and_trusted_proxies() {
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("access.log");
    let opts = ServeOptions {
        access_log: AccessLogTarget::File(log.clone()),
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..ServeOptions::default()
    };
    let s = start(opts).await;
    s.put("a.txt", b"hello");
    s.req(
        "GET",
        "/a.txt",
        &[
            ("X-Forwarded-For", "198.51.100.4, 203.0.113.9"),
            ("User-Agent", "t\"est"),
            ("Referer", "http://r/"),
        ],
    )
    .await;
    s.req("GET", "/missing", &[]).await;

    let log2 = logdir.path().join("access2.log");
    let untrusted = ServeOptions {
        access_log: AccessLogTarget::File(log2.clone()),
        ..ServeOptions::default()
    };
    let s2 = start(untrusted).await;
    s2.put("a.txt", b"hello");
    s2.req("HEAD", "/a.txt", &[("X-Forwarded-For", "203.0.113.9")])
        .await;

    let read = |p: std::path::PathBuf, lines: usize| async move {
        within(async {
            loop {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if text.lines().count() >= lines {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    };
    let text = read(log, 2).await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("203.0.113.9 - - ["), "{}", lines[0]);
    assert!(
        lines[0].ends_with("\"GET /a.txt HTTP/1.1\" 200 5 \"http://r/\" \"t\\x22est\""),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("127.0.0.1 - - ["), "{}", lines[1]);
    assert!(
        lines[1].contains("\"GET /missing HTTP/1.1\" 404 "),
        "{}",
        lines[1]
    );
    let text = read(log2, 1).await;
    assert!(text.starts_with("127.0.0.1 - - ["), "{text}");
    assert!(
        text.contains("\"HEAD /a.txt HTTP/1.1\" 200 0 \"-\" \"-\""),
        "{text}"
    );
}

/// `spawn_threads` with `n` threads over a site holding `a.txt` = "threads".
struct Threaded {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    threads: tamizdat_serve::Threads,
}

fn spawn_threaded(n: usize) -> Threaded {
    let dir = tempfile::tempdir().unwrap();
    put(&dir.path().join("site"), "a.txt", b"threads");
    let site = tamizdat_serve::Site::new(dir.path().join("site"), ServeOptions::default());
    let health = std::sync::Arc::new(FakeHealth::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let threads = tamizdat_serve::spawn_threads(listener, site, health, n, stop_rx).unwrap();
    Threaded {
        _dir: dir,
        addr,
        stop,
        threads,
    }
}

impl Threaded {
    /// Signals shutdown and waits (at most [`TIMEOUT`]) for every thread to stop cleanly.
    fn shut_down(self) {
        self.stop.send(true).unwrap();
        let threads = self.threads;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || done_tx.send(threads.join()));
        done_rx
            .recv_timeout(TIMEOUT)
            .expect("threads did not stop")
            .unwrap();
    }
}

/// Keep-alive connections opened one after another end up spread over the threads, each
/// answered: the thread that accepts hands a connection to the one serving the fewest.
#[test]
fn spawn_threads_spreads_connections_evenly() {
    use std::io::{Read, Write};
    let t = spawn_threaded(3);
    let mut open = Vec::new();
    for i in 0..9 {
        let mut c = std::net::TcpStream::connect(t.addr).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"threads") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "connection {i} closed before its answer: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 "), "{got:?}");
        open.push(c);
    }
    assert_eq!(t.threads.connections(), vec![3, 3, 3]);
    drop(open);
    t.shut_down();
}

#[test]
fn spawn_threads_serves_and_shuts_down() {
    let t = spawn_threaded(2);
    let addr = t.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..20 {
            let r = raw_request(
                addr,
                b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            assert_eq!((r.status, r.body.as_slice()), (200, &b"threads"[..]));
        }
    });
    t.shut_down();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

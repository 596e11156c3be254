//! In-process server on 127.0.0.1:0 and a raw HTTP/1.1 client (requests are sent as exact
//! bytes, so hostile targets reach the server unnormalised).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tamizdat_serve::{Health, HealthReport, ServeOptions, Site};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every await in a test is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f).await.expect("timed out")
}

/// A health source the test can steer.
#[derive(Default)]
pub struct FakeHealth {
    pub applied: AtomicU64,
    pub head: AtomicU64,
    pub lag_ms: AtomicU64,
    pub connected: AtomicBool,
}

impl Health for FakeHealth {
    fn health(&self) -> HealthReport {
        HealthReport {
            applied_seq: self.applied.load(Ordering::SeqCst),
            head_seq: self.head.load(Ordering::SeqCst),
            lag_seconds: self.lag_ms.load(Ordering::SeqCst) as f64 / 1000.0,
            connected: self.connected.load(Ordering::SeqCst),
        }
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub site: Arc<Site>,
    pub health: Arc<FakeHealth>,
    /// The parent of the root: holds `site/` (the root) and files outside it.
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("site")
    }

    /// Writes `data` at `rel` under the root through a temp file and a rename.
    pub fn put(&self, rel: &str, data: &[u8]) {
        put(&self.root(), rel, data);
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            within(t).await.expect("run panicked").expect("run failed");
        }
    }

    pub async fn get(&self, target: &str) -> Resp {
        self.req("GET", target, &[]).await
    }

    pub async fn req(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        let mut raw =
            format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        raw_request(self.addr, raw.as_bytes()).await
    }
}

pub fn put(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp-put");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

pub async fn start(opts: ServeOptions) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    start_in(dir, opts).await
}

pub async fn start_in(dir: tempfile::TempDir, opts: ServeOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let site = Site::new(dir.path().join("site"), opts);
    let health = Arc::new(FakeHealth::default());
    health.connected.store(true, Ordering::SeqCst);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(tamizdat_serve::run(
        listener,
        site.clone(),
        health.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        site,
        health,
        dir,
        stop: Some(tx),
        task: Some(task),
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// Everything the server sent, headers included.
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Sends `raw` and reads until the server closes the connection.
pub async fn raw_request(addr: SocketAddr, raw: &[u8]) -> Resp {
    within(async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut data = Vec::new();
        let _ = s.read_to_end(&mut data).await;
        parse(&data)
    })
    .await
}

pub fn parse(data: &[u8]) -> Resp {
    let split = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(data)));
    let head = std::str::from_utf8(&data[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HashMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    Resp {
        status,
        headers,
        body: data[split + 4..].to_vec(),
        raw: data.to_vec(),
    }
}

pub fn blake3_etag(data: &[u8]) -> String {
    format!("\"{}\"", blake3::hash(data).to_hex())
}

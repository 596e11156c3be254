//! Test harness: starts the real `tamizdat-producer` binary on a loopback port with its own
//! temp dirs, talks HTTP/1.1 to it over a plain socket, and kills it on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub const TOKEN: &str = "test-token-0123456789";
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Debug builds compress slowly; 100 queued publishes can take a while to drain.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tamizdat-producer")
}

/// A running producer; killed (and reaped) on drop.
pub struct Producer {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stdout: Arc<Mutex<String>>,
}

impl Producer {
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts `serve` with the given extra flags.
    pub fn start(extra: &[&str]) -> Producer {
        Self::start_in(tempfile::tempdir().unwrap(), extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Producer {
        Self::start_with_env(dir, extra, &[])
    }

    /// Starts `serve` in `dir` with extra flags and environment variables.
    pub fn start_with_env(
        dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Producer {
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let mut child = Command::new(bin())
            .envs(env.iter().copied())
            .arg("serve")
            .args(site_args(dir.path()))
            .args(["--listen", "127.0.0.1:0", "--token-file"])
            .arg(&token_file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).unwrap(),
            ))
            .spawn()
            .expect("start tamizdat-producer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let printed = Arc::new(Mutex::new(String::new()));
        let keep = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(a.parse::<SocketAddr>().unwrap());
                }
                let mut keep = keep.lock().unwrap();
                keep.push_str(&line);
                keep.push('\n');
            }
        });
        let addr = match rx.recv_timeout(TIMEOUT) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("producer did not report its address; stderr:\n{log}");
            }
        };
        Producer {
            child,
            addr,
            dir,
            stdout: printed,
        }
    }

    /// Everything the server printed so far: stdout, then the stderr log.
    pub fn output(&self) -> String {
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap();
        format!("{stdout}{stderr}")
    }

    pub fn request(
        &self,
        method: &str,
        target: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Response {
        request(self.addr, method, target, token, body)
    }

    pub fn publish(&self, doc: &serde_json::Value) -> Response {
        self.request(
            "POST",
            "/v1/publish",
            Some(TOKEN),
            doc.to_string().as_bytes(),
        )
    }

    pub fn unpublish(&self, slug: &str) -> Response {
        self.request("DELETE", &format!("/v1/publish/{slug}"), Some(TOKEN), b"")
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.out().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.out().join(rel).exists()
    }

    /// Stops the server and gives back its directory (to restart on the same state).
    /// Kills the server once the variants of what it published are in place.
    pub fn stop(mut self) -> tempfile::TempDir {
        settle(&self.out());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--out DIR/out --state DIR/state`.
pub fn site_args(dir: &Path) -> Vec<String> {
    vec![
        "--out".into(),
        dir.join("out").display().to_string(),
        "--state".into(),
        dir.join("state").display().to_string(),
        "--site-url".into(),
        "http://news.example".into(),
    ]
}

/// Runs a CLI command on the site in `dir`.
pub fn cli(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).args(site_args(dir));
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child)
}

/// Waits for `child`, reading its pipes meanwhile (a child that fills a pipe would otherwise
/// block forever), and kills it after [`TIMEOUT`].
fn wait_output(mut child: Child) -> Output {
    fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    }
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Output {
                status,
                stdout: stdout.join().unwrap(),
                stderr: stderr.join().unwrap(),
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Response {
    pub status: u16,
    /// Status line and headers.
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Response { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + size]);
        b = &b[line_end + 4 + size..];
    }
}

/// Path (relative to `root`) to modification time, for every file.
pub fn snapshot(root: &Path) -> std::collections::BTreeMap<String, (SystemTime, u64)> {
    let mut m = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            // A temporary file can go between listing and looking (the variants worker).
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                use std::os::unix::fs::MetadataExt;
                m.insert(rel, (md.modified().unwrap(), md.ino()));
            }
        }
    }
    m
}

/// Waits until no temporary file is left and, if the site has precompressed variants, every
/// page has all three: variants follow a publish's answer (README, Durability).
pub fn settle(root: &Path) {
    eventually("every page's variants in place", || {
        let s = snapshot(root);
        let name = |k: &String| k.rsplit('/').next().unwrap().to_owned();
        let variants = ["br", "zst", "gz"];
        let any = s
            .keys()
            .any(|k| variants.iter().any(|v| k.ends_with(&format!(".{v}"))));
        s.keys().all(|k| !name(k).starts_with(".tmp-"))
            && (!any
                || s.keys()
                    .filter(|k| {
                        [".html", ".xml", ".atom", ".css"]
                            .iter()
                            .any(|e| k.ends_with(e))
                    })
                    .all(|k| variants.iter().all(|v| s.contains_key(&format!("{k}.{v}")))))
    });
}

/// [`snapshot`] once the tree has settled.
pub fn settled_snapshot(root: &Path) -> std::collections::BTreeMap<String, (SystemTime, u64)> {
    settle(root);
    snapshot(root)
}

/// Polls `f` until it holds or the timeout passes.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for: {what}");
}

pub fn article(slug: &str, title: &str, tags: &[&str], date: &str) -> serde_json::Value {
    serde_json::json!({
        "slug": slug, "title": title, "body": format!("Body of *{title}*."),
        "tags": tags, "published_at": date
    })
}

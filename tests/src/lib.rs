//! Test harness: starts the real `tamizdat-distributor` and `tamizdat-mirror` binaries on
//! loopback (port 0, the bound port read back from their output), each in its own temp
//! directory with its logs, and kills every process it started when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// How long any wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding the workspace's binaries (next to this test executable), built on
/// demand when a test is run alone.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        static BUILD: std::sync::Once = std::sync::Once::new();
        BUILD.call_once(|| {
            let st = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-p",
                    "tamizdat-distributor",
                    "-p",
                    "tamizdat-mirror",
                    "-p",
                    "tamizdat-producer",
                    "--bins",
                ])
                .status()
                .expect("cargo build");
            assert!(st.success(), "building the binaries failed");
        });
    }
    assert!(path.exists(), "no binary at {}", path.display());
    path
}

/// A running child process: killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
            lines: rx,
        }
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest.
    pub fn line(&self, prefix: &str) -> String {
        let end = Instant::now() + TIMEOUT;
        while Instant::now() < end {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "{} never printed '{prefix}'; log:\n{}",
            self.name,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child we own.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (SIGKILL after the timeout).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on a child we own.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A distributor over `root`, its state in `dir/NAME-state`.
pub struct Distributor {
    pub proc: Proc,
    pub root: PathBuf,
    pub state: PathBuf,
    pub stream: SocketAddr,
    pub admin: SocketAddr,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Distributor {
    pub fn start(dir: &Path, root: &Path, extra: &[&str]) -> Distributor {
        Self::start_with_state(dir, root, &dir.join("dist-state"), extra)
    }

    /// Like [`Distributor::start`], with the state in `state`.
    pub fn start_with_state(dir: &Path, root: &Path, state: &Path, extra: &[&str]) -> Distributor {
        let state = state.to_owned();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (proc, stream, admin) = Self::spawn(dir, root, &state, "127.0.0.1:0", &extra);
        Distributor {
            proc,
            root: root.to_owned(),
            state,
            stream,
            admin,
            dir: dir.to_owned(),
            extra,
        }
    }

    fn spawn(
        dir: &Path,
        root: &Path,
        state: &Path,
        listen: &str,
        extra: &[String],
    ) -> (Proc, SocketAddr, SocketAddr) {
        let proc = Proc::spawn(
            "distributor",
            dir,
            Command::new(bin("tamizdat-distributor"))
                .arg("serve")
                .arg("--root")
                .arg(root)
                .arg("--state")
                .arg(state)
                .args(["--listen", listen, "--admin", "127.0.0.1:0"])
                .args(extra),
        );
        let stream = proc.line("stream listening on").parse().expect("addr");
        let admin = proc.line("admin listening on").parse().expect("addr");
        (proc, stream, admin)
    }

    /// Stops (SIGTERM) and starts again on the same stream port.
    pub fn restart(&mut self) {
        self.proc.stop();
        let (proc, stream, admin) = Self::spawn(
            &self.dir,
            &self.root,
            &self.state,
            &self.stream.to_string(),
            &self.extra,
        );
        self.proc = proc;
        self.stream = stream;
        self.admin = admin;
    }

    pub fn add_mirror(&self, name: &str) -> String {
        let out = self.cli(&["mirror", "add", name]);
        assert!(out.status.success(), "mirror add failed: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Runs a subcommand of the distributor binary with `--state`.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("tamizdat-distributor"))
            .args(args)
            .arg("--state")
            .arg(&self.state)
            .output()
            .expect("run distributor cli")
    }

    pub fn lag(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("tamizdat-distributor"))
            .arg("lag")
            .arg("--admin")
            .arg(format!("http://{}", self.admin))
            .args(args)
            .output()
            .expect("run lag")
    }

    pub fn status(&self) -> Value {
        let (code, _, body) = http_get(self.admin, "/v1/status");
        assert_eq!(code, 200, "status: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("status JSON")
    }

    pub fn mirror_status(&self, name: &str) -> Value {
        self.status()["mirrors"]
            .as_array()
            .expect("mirrors")
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no mirror {name} in status"))
    }

    /// One unlabelled sample of the admin `/metrics`, `tamizdat_` prefix left out.
    pub fn metric(&self, name: &str) -> u64 {
        self.scrape().value(&format!("tamizdat_{name}"), &[]) as u64
    }

    /// The admin `/metrics`, parsed.
    pub fn scrape(&self) -> Metrics {
        scrape(self.admin, "/metrics")
    }
}

/// A mirror, its root and state under `dir/NAME-*`.
pub struct Mirror {
    pub name: String,
    pub proc: Proc,
    pub root: PathBuf,
    pub state: PathBuf,
    pub http: SocketAddr,
    /// `--metrics` listener, when the mirror was started with `--metrics 127.0.0.1:0`.
    pub metrics: Option<SocketAddr>,
    token: String,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Mirror {
    pub fn start(dir: &Path, name: &str, token: &str, extra: &[&str]) -> Mirror {
        Self::start_at(dir, name, token, &dir.join(format!("{name}-root")), extra)
    }

    /// Like [`Mirror::start`], letting `setup` adjust the command (limits, environment).
    pub fn start_with(
        dir: &Path,
        name: &str,
        token: &str,
        extra: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Mirror {
        let root = dir.join(format!("{name}-root"));
        Self::launch(dir, name, token, &root, extra, setup)
    }

    /// Like [`Mirror::start`], with the served tree at `root`.
    pub fn start_at(dir: &Path, name: &str, token: &str, root: &Path, extra: &[&str]) -> Mirror {
        Self::launch(dir, name, token, root, extra, |_| {})
    }

    fn launch(
        dir: &Path,
        name: &str,
        token: &str,
        root: &Path,
        extra: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Mirror {
        let root = root.to_path_buf();
        let state = dir.join(format!("{name}-state"));
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut cmd = Self::command(token, &root, &state, "127.0.0.1:0", &extra);
        setup(&mut cmd);
        let proc = Proc::spawn(name, dir, &mut cmd);
        let http = proc.line("http listening on").parse().expect("addr");
        let metrics = Self::metrics_addr(&proc, &extra);
        Mirror {
            name: name.to_owned(),
            proc,
            root,
            state,
            http,
            metrics,
            token: token.to_owned(),
            dir: dir.to_owned(),
            extra,
        }
    }

    fn spawn(
        dir: &Path,
        name: &str,
        token: &str,
        root: &Path,
        state: &Path,
        listen: &str,
        extra: &[String],
    ) -> (Proc, SocketAddr) {
        let proc = Proc::spawn(
            name,
            dir,
            &mut Self::command(token, root, state, listen, extra),
        );
        let http = proc.line("http listening on").parse().expect("addr");
        (proc, http)
    }

    fn metrics_addr(proc: &Proc, extra: &[String]) -> Option<SocketAddr> {
        extra
            .iter()
            .any(|a| a == "--metrics")
            .then(|| proc.line("metrics listening on").parse().expect("addr"))
    }

    /// Scrapes the mirror's `/metrics` (it must have been started with `--metrics`).
    pub fn scrape(&self) -> Metrics {
        scrape(
            self.metrics.expect("mirror started without --metrics"),
            "/metrics",
        )
    }

    fn command(token: &str, root: &Path, state: &Path, listen: &str, extra: &[String]) -> Command {
        let mut cmd = Command::new(bin("tamizdat-mirror"));
        cmd.arg("run")
            .args(["--join", token, "--listen", listen])
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(state)
            .args(extra);
        cmd
    }

    /// Starts the mirror again (after a kill), on the same HTTP port.
    pub fn restart(&mut self) {
        self.proc.kill();
        let (proc, http) = Self::spawn(
            &self.dir,
            &self.name,
            &self.token,
            &self.root,
            &self.state,
            &self.http.to_string(),
            &self.extra,
        );
        self.metrics = Self::metrics_addr(&proc, &self.extra);
        self.proc = proc;
        self.http = http;
    }

    /// GET a site path (URL-encoded here).
    pub fn get(&self, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        http_get(self.http, &format!("/{}", encode_path(path)))
    }

    pub fn health(&self) -> Value {
        let (_, _, body) = http_get(self.http, "/.well-known/tamizdat/health");
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    }
}

/// Percent-encodes a site path for a request target.
pub fn encode_path(p: &str) -> String {
    let mut out = String::new();
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A plain HTTP/1.1 GET with `Connection: close`: status, headers, body.
pub fn http_get(addr: SocketAddr, target: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http(addr, "GET", target, &[])
}

/// The value of header `name` (lower case) in a response's headers.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One HTTP/1.1 request with extra headers and `Connection: close`: status, headers, body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end from {addr}{target}"));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (code, headers, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 4 + n..];
    }
}

/// path → blake3 of every file under `root`, skipping the mirror's own top-level `.tamizdat*`.
pub fn digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            !(e.depth() == 1 && e.file_name().to_string_lossy().starts_with(".tamizdat"))
        })
        .filter_map(|e| e.ok())
    {
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            out.insert(rel, blake3::hash(&bytes).to_hex().to_string());
        }
    }
    out
}

/// Waits until every mirror's tree equals `src`'s; panics with the difference otherwise.
pub fn converge(src: &Path, mirrors: &[&Mirror], timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        let want = digest(src);
        let mut bad = None;
        for m in mirrors {
            let got = digest(&m.root);
            if got != want {
                bad = Some((m, got));
                break;
            }
        }
        let Some((m, got)) = bad else { return };
        if Instant::now() > end {
            let missing: Vec<_> = want
                .keys()
                .filter(|k| got.get(*k) != want.get(*k))
                .take(5)
                .collect();
            let extra: Vec<_> = got
                .keys()
                .filter(|k| !want.contains_key(*k))
                .take(5)
                .collect();
            panic!(
                "{} did not converge: differing/missing {missing:?}, extra {extra:?}\nmirror log tail:\n{}",
                m.name,
                tail(&m.proc.log_text(), 3000)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Polls `f` until it returns true; panics with `what` after [`TIMEOUT`].
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + TIMEOUT;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Writes a file the way a CMS publishes: temp file in the same directory, then rename.
pub fn write_atomic(path: &Path, data: &[u8]) {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(
        ".tmp-{}{}",
        path.file_name().unwrap().to_string_lossy(),
        rand::random::<u32>()
    ));
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A page of HTML-like text, `n` bytes, different for each `seed`.
pub fn page(seed: u64, n: usize) -> Vec<u8> {
    let words = [
        "mirror",
        "press",
        "freedom",
        "report",
        "volunteer",
        "newsroom",
        "protest",
        "archive",
    ];
    let mut out = format!("<!doctype html><title>{seed}</title><p>").into_bytes();
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    while out.len() < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(x >> 60) as usize % words.len()].as_bytes());
        out.push(b' ');
    }
    out.truncate(n);
    out
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: every sample, and the `# TYPE` of every family.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
    pub text: String,
}

impl Metrics {
    /// Parses the Prometheus / OpenMetrics text format (what our endpoints write): comments,
    /// `name value` and `name{k="v",...} value`, with `\\`, `\"` and `\n` escapes in label
    /// values. Panics on a line it cannot read, so a malformed exposition fails the test.
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics {
            text: text.to_owned(),
            ..Metrics::default()
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                m.types.insert(name.to_owned(), kind.to_owned());
            } else if !(line.starts_with('#') || line.trim().is_empty()) {
                m.samples
                    .push(parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}")));
            }
        }
        m
    }

    /// The sample `name` whose labels include all of `labels`, if any.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Like [`Metrics::get`], panicking with the whole scrape when the sample is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let b = line.as_bytes();
    let mut i = name_end;
    let mut labels = BTreeMap::new();
    if b[i] == b'{' {
        i += 1;
        loop {
            if b.get(i)? == &b'}' {
                i += 1;
                break;
            }
            let eq = i + line[i..].find("=\"")?;
            let key = line[i..eq].to_owned();
            i = eq + 2;
            let mut value = String::new();
            loop {
                match *b.get(i)? {
                    b'\\' => {
                        value.push(match *b.get(i + 1)? {
                            b'n' => '\n',
                            c => c as char,
                        });
                        i += 2;
                    }
                    b'"' => break,
                    _ => {
                        let c = line[i..].chars().next()?;
                        value.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            i += 1;
            if b.get(i) == Some(&b',') {
                i += 1;
            }
            labels.insert(key, value);
        }
    }
    let value = match line[i..].split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// GETs `path` from `addr` and parses it as a Prometheus exposition (status must be 200).
pub fn scrape(addr: SocketAddr, path: &str) -> Metrics {
    let (code, _, body) = http_get(addr, path);
    let text = String::from_utf8(body).expect("metrics are UTF-8");
    assert_eq!(code, 200, "{addr}{path}: {text}");
    Metrics::parse(&text)
}

/// True when the server closed the connection (end of stream or reset) before [`TIMEOUT`].
pub fn dropped(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Reads files from a mirror's tree, from disk directly, over and over on a thread, and keeps
/// every read that is not one of the versions allowed for that path (a torn file).
pub struct TornWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<(String, usize)>)>,
}

impl TornWatch {
    /// Watches each `(path under root, allowed versions)`; a missing file is not torn.
    pub fn start(root: &Path, files: Vec<(String, Vec<Vec<u8>>)>) -> TornWatch {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (flag, root) = (stop.clone(), root.to_path_buf());
        let thread = std::thread::spawn(move || {
            let (mut reads, mut torn) = (0u64, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                for (rel, ok) in &files {
                    if let Ok(b) = std::fs::read(root.join(rel)) {
                        reads += 1;
                        if !ok.contains(&b) {
                            torn.push((rel.clone(), b.len()));
                        }
                    }
                }
            }
            (reads, torn)
        });
        TornWatch { stop, thread }
    }

    /// Stops reading; panics if nothing was ever read or anything torn was.
    pub fn assert_none_torn(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (reads, torn) = self.thread.join().expect("reader thread");
        assert!(reads > 0, "the reader never found a file");
        assert!(
            torn.is_empty(),
            "torn files seen: {:?}",
            &torn[..torn.len().min(5)]
        );
    }
}

/// SIGKILLs and restarts `m` up to `times` times, at moments spread over its work: the n-th
/// kill comes `first + n * step` after the previous start.
pub fn kill_repeatedly(m: &mut Mirror, times: u64, first: Duration, step: Duration) {
    let start = Instant::now();
    for n in 0..times {
        if start.elapsed() > TIMEOUT {
            break;
        }
        std::thread::sleep(first + step * n as u32);
        m.proc.kill();
        m.restart();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let m = Metrics::parse(
            "# HELP a_total x\n# TYPE a counter\na_total 3\n\
             b{mirror=\"m\\\"1\",status=\"200\"} 2.5\nc_bucket{le=\"+Inf\"} 4\n# EOF\n",
        );
        assert_eq!(m.types["a"], "counter");
        assert_eq!(m.value("a_total", &[]), 3.0);
        assert_eq!(m.value("b", &[("mirror", "m\"1"), ("status", "200")]), 2.5);
        assert_eq!(m.value("c_bucket", &[("le", "+Inf")]), 4.0);
        assert_eq!(m.get("b", &[("mirror", "m2")]), None);
    }

    #[test]
    #[should_panic(expected = "bad sample line")]
    fn a_malformed_line_fails() {
        Metrics::parse("a{b=\"1\" 2\n");
    }
}

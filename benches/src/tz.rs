//! The systems under test, started on loopback: tamizdat's distributor and mirrors, rsync
//! daemons, lsyncd, nginx.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::procs::{free_port, http_get, wait_port, Proc};

pub const START_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Dist {
    pub proc: Proc,
    pub bin: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub dir: PathBuf,
    pub stream: SocketAddr,
    pub admin: SocketAddr,
    /// Wall time from spawn to the admin API answering.
    pub ready: Duration,
}

impl Dist {
    pub fn start(bin: &Path, dir: &Path, root: &Path) -> Result<Dist> {
        let state = dir.join("dist-state");
        Self::spawn(bin, dir, root, &state, "127.0.0.1:0")
    }

    fn spawn(bin: &Path, dir: &Path, root: &Path, state: &Path, listen: &str) -> Result<Dist> {
        let t0 = Instant::now();
        let proc = Proc::spawn(
            "distributor",
            dir,
            Command::new(bin.join("tamizdat-distributor"))
                .arg("serve")
                .arg("--root")
                .arg(root)
                .arg("--state")
                .arg(state)
                .args(["--listen", listen, "--admin", "127.0.0.1:0"]),
        )?;
        let stream: SocketAddr = proc.line("stream listening on", START_TIMEOUT)?.parse()?;
        let admin: SocketAddr = proc.line("admin listening on", START_TIMEOUT)?.parse()?;
        let d = Dist {
            proc,
            bin: bin.to_owned(),
            root: root.to_owned(),
            state: state.to_owned(),
            dir: dir.to_owned(),
            stream,
            admin,
            ready: Duration::ZERO,
        };
        let end = Instant::now() + START_TIMEOUT;
        while d.status().is_err() {
            if Instant::now() > end {
                bail!("distributor admin API never answered");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Dist {
            ready: t0.elapsed(),
            ..d
        })
    }

    /// Stops (SIGTERM) and starts again on the same stream port and state.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.stop();
        let listen = self.stream.to_string();
        let mut last = None;
        for _ in 0..50 {
            match Self::spawn(&self.bin, &self.dir, &self.root, &self.state, &listen) {
                Ok(d) => {
                    *self = d;
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last.unwrap())
    }

    /// Enrols a mirror; returns its join token.
    pub fn add_mirror(&self, name: &str) -> Result<String> {
        self.mirror_command("add", name)
    }

    pub fn revoke_mirror(&self, name: &str) -> Result<()> {
        self.mirror_command("revoke", name).map(drop)
    }

    /// `tamizdat-distributor mirror VERB NAME` on this distributor's state; its stdout.
    fn mirror_command(&self, verb: &str, name: &str) -> Result<String> {
        let out = Command::new(self.bin.join("tamizdat-distributor"))
            .args(["mirror", verb, name, "--state"])
            .arg(&self.state)
            .output()?;
        if !out.status.success() {
            bail!(
                "mirror {verb} {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    pub fn status(&self) -> Result<Value> {
        let r = http_get(self.admin, "/v1/status")?;
        if r.status != 200 {
            bail!("status {}", r.status);
        }
        Ok(serde_json::from_slice(&r.body)?)
    }

    pub fn head(&self) -> Result<u64> {
        Ok(self.status()?["head_seq"].as_u64().unwrap_or(0))
    }

    pub fn mirror(&self, name: &str) -> Result<Value> {
        let s = self.status()?;
        s["mirrors"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["name"] == name).cloned())
            .with_context(|| format!("no mirror {name} in status"))
    }

    /// Waits until every named mirror is connected and has acked the head (head > 0).
    pub fn wait_synced(&self, names: &[String], timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(s) = self.status() {
                let head = s["head_seq"].as_u64().unwrap_or(0);
                let ok = head > 0
                    && names.iter().all(|n| {
                        s["mirrors"].as_array().is_some_and(|a| {
                            a.iter().any(|m| {
                                m["name"] == n.as_str()
                                    && m["connected"].as_bool().unwrap_or(true)
                                    && m["acked_seq"].as_u64().unwrap_or(0) >= head
                            })
                        })
                    });
                if ok {
                    return Ok(());
                }
                if Instant::now() > end {
                    bail!("mirrors {names:?} not synced after {timeout:?}; status: {s}");
                }
            } else if Instant::now() > end {
                bail!("distributor status unavailable");
            }
            // tight at first (short waits), then gentle: the status request costs the
            // distributor CPU while it is busy syncing
            let waited = timeout.saturating_sub(end.saturating_duration_since(Instant::now()));
            let nap = if waited < Duration::from_millis(300) {
                2
            } else {
                20
            };
            std::thread::sleep(Duration::from_millis(nap));
        }
    }
}

pub struct Mirror {
    pub proc: Proc,
    pub name: String,
    pub bin: PathBuf,
    pub token: String,
    pub root: PathBuf,
    pub state: PathBuf,
    pub dir: PathBuf,
    pub http: SocketAddr,
}

impl Mirror {
    pub fn start(bin: &Path, dir: &Path, name: &str, token: &str, root: &Path) -> Result<Mirror> {
        let state = dir.join(format!("{name}-state"));
        Self::spawn(bin, dir, name, token, root, &state, "127.0.0.1:0")
    }

    fn spawn(
        bin: &Path,
        dir: &Path,
        name: &str,
        token: &str,
        root: &Path,
        state: &Path,
        listen: &str,
    ) -> Result<Mirror> {
        let proc = Proc::spawn(
            name,
            dir,
            Command::new(bin.join("tamizdat-mirror"))
                .arg("run")
                .args(["--join", token, "--listen", listen])
                .arg("--root")
                .arg(root)
                .arg("--state")
                .arg(state),
        )?;
        let http: SocketAddr = proc.line("http listening on", START_TIMEOUT)?.parse()?;
        Ok(Mirror {
            proc,
            name: name.to_owned(),
            bin: bin.to_owned(),
            token: token.to_owned(),
            root: root.to_owned(),
            state: state.to_owned(),
            dir: dir.to_owned(),
            http,
        })
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts again with the same root, state and HTTP port.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.stop();
        let listen = self.http.to_string();
        *self = Self::spawn(
            &self.bin,
            &self.dir,
            &self.name,
            &self.token,
            &self.root,
            &self.state,
            &listen,
        )?;
        Ok(())
    }
}

/// An rsync daemon on loopback serving `modules` (name, path) read-write.
pub struct RsyncD {
    pub proc: Proc,
    pub port: u16,
}

impl RsyncD {
    pub fn start(rsync: &Path, dir: &Path, modules: &[(String, PathBuf)]) -> Result<RsyncD> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut conf = format!(
            "use chroot = no\nreverse lookup = no\nuid = root\ngid = root\nlog file = {d}/rsyncd.log\n\
             socket options = TCP_NODELAY\nlisten backlog = 128\nmax connections = 0\n",
            d = dir.display()
        );
        for (name, path) in modules {
            std::fs::create_dir_all(path)?;
            conf.push_str(&format!(
                "[{name}]\npath = {}\nread only = no\n",
                path.display()
            ));
        }
        let cf = dir.join("rsyncd.conf");
        std::fs::write(&cf, conf)?;
        let proc = Proc::spawn(
            "rsyncd",
            dir,
            Command::new(rsync)
                .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
                .arg(format!("--port={port}"))
                .arg(format!("--config={}", cf.display())),
        )?;
        wait_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        )?;
        Ok(RsyncD { proc, port })
    }

    pub fn url(&self, module: &str) -> String {
        format!("rsync://127.0.0.1:{}/{module}/", self.port)
    }
}

/// What one `rsync -a --delete --stats` run did.
pub struct RsyncRun {
    pub wall: Duration,
    /// A `sync` right after it: writing back what rsync left dirty (it never fsyncs). Taken
    /// so that the next scenario does not pay for it: the mirror flushes with `syncfs`, which
    /// waits for every dirty page on the file system, rsync's too.
    pub writeback: Duration,
    pub bytes: u64,
    pub transferred: u64,
}

/// `rsync -a --delete --stats SRC/ URL`, timed, then `sync`, timed apart.
pub fn rsync_run(rsync: &Path, src: &Path, url: &str) -> Result<RsyncRun> {
    let t0 = Instant::now();
    let out = Command::new(rsync)
        .args(["-a", "--delete", "--stats", "--sockopts=TCP_NODELAY"])
        .arg(format!("{}/", src.display()))
        .arg(url)
        .output()?;
    let wall = t0.elapsed();
    let t1 = Instant::now();
    crate::flush_disk();
    let writeback = t1.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "rsync failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            text
        );
    }
    let num = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().next().unwrap_or("0").replace(',', ""))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(RsyncRun {
        wall,
        writeback,
        bytes: num("Total bytes sent:") + num("Total bytes received:"),
        transferred: num("Number of regular files transferred:"),
    })
}

/// lsyncd with one `sync { default.rsync, delay = 0 }` block per rsync daemon module.
pub struct Lsyncd {
    pub proc: Proc,
}

impl Lsyncd {
    pub fn start(lsyncd: &Path, dir: &Path, src: &Path, urls: &[String]) -> Result<Lsyncd> {
        let log = dir.join("lsyncd.file.log");
        let mut conf = format!(
            "settings {{\n  logfile = \"{}\",\n  statusFile = \"{}/lsyncd.status\",\n  nodaemon = true,\n  insist = true,\n}}\n",
            log.display(),
            dir.display()
        );
        for u in urls {
            conf.push_str(&format!(
                "sync {{\n  default.rsync,\n  source = \"{}\",\n  target = \"{u}\",\n  delay = 0,\n  exclude = {{ \".tmp-*\" }},\n  rsync = {{ archive = true, _extra = {{ \"--sockopts=TCP_NODELAY\" }} }},\n}}\n",
                src.display()
            ));
        }
        let cf = dir.join("lsyncd.conf.lua");
        std::fs::write(&cf, conf)?;
        let proc = Proc::spawn("lsyncd", dir, Command::new(lsyncd).arg(&cf))?;
        let end = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let done = text
                .lines()
                .filter(|l| l.contains("Startup of") && l.contains("finished"))
                .count();
            if done >= urls.len() {
                break;
            }
            if Instant::now() > end {
                bail!("lsyncd startup did not finish; log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Lsyncd { proc })
    }
}

/// nginx, 2 workers, sendfile, access log off, serving `root`.
pub struct Nginx {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Nginx {
    pub fn start(nginx: &Path, dir: &Path, root: &Path) -> Result<Nginx> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let d = dir.display();
        let conf = format!(
            "worker_processes 2;\ndaemon off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\nhttp {{\n  include /etc/nginx/mime.types;\n\
             default_type application/octet-stream;\n  sendfile on;\n  tcp_nopush on;\n  access_log off;\n\
             keepalive_requests 1000000;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
             fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
             server {{\n    listen 127.0.0.1:{port};\n    root {};\n  }}\n}}\n",
            root.display()
        );
        let cf = dir.join("nginx.conf");
        std::fs::write(&cf, conf)?;
        let proc = Proc::spawn(
            "nginx",
            dir,
            Command::new(nginx)
                .arg("-c")
                .arg(&cf)
                .arg("-e")
                .arg(dir.join("error.log")),
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_port(addr, Duration::from_secs(10))?;
        Ok(Nginx { proc, addr })
    }
}

/// `cp -al SRC DST`: a copy made of hard links (the anchors and seeded mirrors replace files by
/// rename, so the source is never written through them).
pub fn hardlink_copy(src: &Path, dst: &Path) -> Result<()> {
    let st = Command::new("cp").arg("-al").arg(src).arg(dst).status()?;
    if !st.success() {
        bail!("cp -al {} {} failed", src.display(), dst.display());
    }
    Ok(())
}

/// Finds a program on PATH (and in /usr/sbin, /sbin, where nginx lives).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

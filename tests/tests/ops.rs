//! What an operator does and sees: enrol, revoke, lag exit codes, metrics, the status page,
//! and a mirror whose disk fills up.

use std::fs;
use std::io::Write;
use std::time::Duration;
use tamizdat_tests::*;

#[test]
fn revoke_drops_a_connected_mirror_and_lag_reports_stale_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"front page");
    let d = Distributor::start(tmp.path(), &src, &["--ping-secs", "0.5"]);
    let (t1, t2) = (d.add_mirror("m1"), d.add_mirror("m2"));
    let m1 = Mirror::start(tmp.path(), "m1", &t1, &["--max-backoff", "0.3"]);
    let mut m2 = Mirror::start(tmp.path(), "m2", &t2, &[]);
    converge(&src, &[&m1, &m2], Duration::from_secs(30));
    assert!(d.lag(&["--max-lag", "5"]).status.success());

    // Metrics (more in the next test) and the status page.
    let metrics = d.scrape();
    assert_eq!(metrics.types["tamizdat_changesets"], "counter");
    assert_eq!(
        metrics.value("tamizdat_mirror_connected", &[("mirror", "m1")]),
        1.0
    );
    let (code, _, page) = http_get(d.admin, "/");
    let page = String::from_utf8(page).unwrap();
    assert!(
        code == 200 && page.contains("m1") && page.contains("m2"),
        "{page}"
    );

    // A stopped mirror falls behind: lag exits 1 and names it.
    m2.proc.kill();
    for i in 0..3 {
        write_atomic(&src.join(format!("stale{i}.html")), b"x");
    }
    converge(&src, &[&m1], Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    let out = d.lag(&["--max-lag", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("m2"));
    // The table: a header and one row per mirror, m2 offline and behind, m1 live at the head.
    let table = String::from_utf8(out.stdout).unwrap();
    let head = d.status()["head_seq"].as_u64().unwrap();
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["MIRROR", "STATE", "ACKED/HEAD", "LAG", "LAG(s)", "SEEN(s)"]
    );
    let (r1, r2) = (row("m1"), row("m2"));
    assert_eq!(
        (r1[1].as_str(), r1[2].clone(), r1[3].as_str()),
        ("live", format!("{head}/{head}"), "0"),
        "{table}"
    );
    assert_eq!(r2[1], "offline", "{table}");
    assert!(r2[3].parse::<u64>().unwrap() >= 1, "{table}");
    assert_ne!(r2[2], format!("{head}/{head}"), "{table}");
    // Without --max-lag the verdict is not asked for: exit 0 even with m2 behind.
    assert_eq!(d.lag(&[]).status.code(), Some(0));
    // --watch redraws in place until interrupted, then exits with the last verdict.
    let watch = lag_watch(&d, &["--max-lag", "1", "--interval", "0.2"], 2);
    assert_eq!(watch.0, Some(1), "{}", watch.1);
    assert!(watch.1.matches("\x1b[H\x1b[2J").count() >= 2, "{}", watch.1);
    assert!(
        watch.1.contains("offline") && watch.1.contains("over 1 s: m2"),
        "{}",
        watch.1
    );
    let watch = lag_watch(&d, &["--json", "--interval", "0.2"], 2);
    assert_eq!(watch.0, Some(0));
    let docs: Vec<Value> = watch
        .1
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        docs.len() >= 2
            && docs
                .iter()
                .all(|v| v["mirrors"].as_array().unwrap().len() == 2)
    );
    // Bad input is refused by the command line, not half-obeyed.
    assert_eq!(
        d.lag(&["--watch", "--interval", "0"]).status.code(),
        Some(2)
    );
    // An unreachable distributor: exit 2, in both modes.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let out = std::process::Command::new(bin("tamizdat-distributor"))
        .args(["lag", "--admin", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("error"));
    let json = d.lag(&["--json"]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let m2s = v["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m2")
        .unwrap();
    assert_eq!(m2s["connected"], false);
    let behind = v["head_seq"].as_u64().unwrap() - m2s["acked_seq"].as_u64().unwrap();
    assert!(behind >= 1);
    assert_eq!(m2s["lag_changes"], behind);

    // Revocation drops m1 at once and keeps it out.
    assert!(d.cli(&["mirror", "revoke", "m1"]).status.success());
    wait_for("m1 to be dropped", || {
        d.mirror_status("m1")["connected"] == false
    });
    write_atomic(&src.join("after-revoke.html"), b"m1 must not get this");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!m1.root.join("after-revoke.html").exists());
    assert!(m1.proc.log_text().contains("Unauthorized"));
    assert_eq!(d.mirror_status("m1")["state"], "revoked");
}

/// Runs `lag --watch ARGS` until it has printed `redraws` screens (or JSON lines), then sends
/// SIGINT; returns its exit code and output.
fn lag_watch(d: &Distributor, args: &[&str], redraws: usize) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(bin("tamizdat-distributor"))
        .args(["lag", "--watch", "--admin", &format!("http://{}", d.admin)])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let json = args.contains(&"--json");
    let seen = |t: &str| {
        if json {
            t.matches('\n').count()
        } else {
            t.matches("\x1b[H\x1b[2J").count()
        }
    };
    // One more than asked, so the last asked-for screen is complete.
    wait_for("lag --watch to redraw", || {
        while let Ok(b) = rx.try_recv() {
            text.push_str(&String::from_utf8_lossy(&b));
        }
        seen(&text) > redraws
    });
    // SAFETY: kill(2) on a child we own.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    while let Ok(b) = rx.recv_timeout(Duration::from_secs(5)) {
        text.push_str(&String::from_utf8_lossy(&b));
    }
    (status.code(), text)
}

#[test]
fn metrics_are_scraped_from_both_daemons_and_move() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    // Incompressible, so byte counters have a floor.
    let noise: Vec<u8> = (0..5000).map(|_| rand::random::<u8>()).collect();
    write_atomic(&src.join("index.html"), &noise);
    let d = Distributor::start(tmp.path(), &src, &["--log-format", "json"]);
    let t = d.add_mirror("m1");
    let m = Mirror::start(tmp.path(), "m1", &t, &["--metrics", "127.0.0.1:0"]);
    converge(&src, &[&m], Duration::from_secs(30));
    let head = d.status()["head_seq"].as_u64().unwrap();
    wait_for("the mirror to ack the head", || {
        d.scrape()
            .get("tamizdat_mirror_acked_seq", &[("mirror", "m1")])
            == Some(head as f64)
    });

    let dm = d.scrape();
    assert_eq!(dm.value("tamizdat_head_seq", &[]), head as f64);
    assert!(dm.value("tamizdat_changesets_total", &[]) >= 1.0);
    assert!(dm.value("tamizdat_hashed_bytes_total", &[]) >= 5000.0);
    assert!(dm.value("tamizdat_mirror_bytes_sent_total", &[("mirror", "m1")]) >= 5000.0);
    assert_eq!(
        dm.value("tamizdat_mirror_lag_changes", &[("mirror", "m1")]),
        0.0
    );
    assert_eq!(
        dm.value("tamizdat_mirror_connections_total", &[("mirror", "m1")]),
        1.0
    );
    assert!(dm.get("tamizdat_live_queue_depth", &[]).is_some());
    assert_eq!(dm.types["tamizdat_mirror_lag_seconds"], "gauge");

    // The mirror's figures: applied = the distributor's head, bytes in, an apply histogram.
    let mm = m.scrape();
    assert_eq!(mm.value("tamizdat_mirror_applied_seq", &[]), head as f64);
    assert_eq!(mm.value("tamizdat_mirror_connected", &[]), 1.0);
    assert!(mm.value("tamizdat_mirror_received_bytes_total", &[]) >= 5000.0);
    let applied = mm.value("tamizdat_mirror_apply_seconds_count", &[]);
    assert!(applied >= 1.0, "{}", mm.text);
    assert_eq!(
        mm.value("tamizdat_mirror_apply_seconds_bucket", &[("le", "+Inf")]),
        applied
    );

    // Requests move the HTTP figures: three for a page (the third from the hot cache, which
    // takes a page on its second miss), a 404.
    for _ in 0..3 {
        assert_eq!(m.get("index.html").0, 200);
    }
    assert_eq!(m.get("missing.html").0, 404);
    let after = m.scrape();
    let ok = |x: &Metrics| {
        x.get("tamizdat_mirror_http_responses_total", &[("status", "200")])
            .unwrap_or(0.0)
    };
    assert_eq!(ok(&after) - ok(&mm), 3.0, "{}", after.text);
    assert!(after.value("tamizdat_mirror_http_responses_total", &[("status", "404")]) >= 1.0);
    assert!(
        after.value("tamizdat_mirror_http_response_body_bytes_total", &[])
            - mm.value("tamizdat_mirror_http_response_body_bytes_total", &[])
            >= 10_000.0
    );
    assert!(after.value("tamizdat_mirror_http_hot_cache_hits_total", &[]) >= 1.0);

    // An edit: both sides move to the new head.
    write_atomic(&src.join("index.html"), &page(2, 7000));
    write_atomic(&src.join("new.html"), b"new");
    converge(&src, &[&m], Duration::from_secs(30));
    wait_for(
        "the mirror's applied sequence to reach the new head",
        || {
            let h = d.scrape().value("tamizdat_head_seq", &[]);
            h > head as f64 && m.scrape().get("tamizdat_mirror_applied_seq", &[]) == Some(h)
        },
    );
    assert!(m.scrape().value("tamizdat_mirror_apply_seconds_count", &[]) > applied);
    assert!(
        d.scrape().value("tamizdat_changesets_total", &[])
            > dm.value("tamizdat_changesets_total", &[])
    );

    // --log-format json: every log line is one JSON object with structured fields.
    let log = d.proc.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "mirror connected"
                && l["fields"]["mirror"] == "m1"
                && l["level"] == "INFO"),
        "{log}"
    );

    // Bad input is answered cleanly.
    let ma = m.metrics.unwrap();
    assert_eq!(http_get(ma, "/").0, 404);
    assert_eq!(http_get(ma, "/metrics/../x").0, 404);
    assert_eq!(http(ma, "POST", "/metrics", &[]).0, 405);
    assert_eq!(http_get(d.admin, "/?max_lag=abc").0, 400);
    assert_eq!(http_get(d.admin, "/?max_lag=-1").0, 400);
    assert_eq!(http(d.admin, "POST", "/metrics", &[]).0, 405);
}

#[test]
fn a_full_disk_keeps_the_old_version_does_not_ack_and_recovers() {
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("TAMIZDAT_SKIP_ROOT_TESTS").is_some(),
            "this test mounts a small tmpfs and needs root; set TAMIZDAT_SKIP_ROOT_TESTS=1 to skip it"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"old front page");
    for i in 0..20u64 {
        write_atomic(&src.join(format!("p/{i}.html")), &page(i, 50_000));
    }
    let root = tmp.path().join("small-disk");
    fs::create_dir_all(&root).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(root.clone());

    let d = Distributor::start(tmp.path(), &src, &[]);
    let t = d.add_mirror("m1");
    let m = Mirror::start_at(tmp.path(), "m1", &t, &root, &["--max-backoff", "0.3"]);
    converge(&src, &[&m], Duration::from_secs(30));
    let head = d.status()["head_seq"].clone();
    wait_for("the mirror to ack the head", || {
        d.mirror_status("m1")["acked_seq"] == head
    });
    let version = d.mirror_status("m1")["version"].clone();
    assert_eq!(
        version.as_str(),
        Some(concat!("tamizdat-mirror/", env!("CARGO_PKG_VERSION"))),
        "the status names what the mirror runs"
    );

    // Fill the disk to the last byte (in a name the mirror never serves).
    let filler = root.join(".tamizdat-filler");
    {
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![7u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let small = [7u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
    let acked = d.mirror_status("m1")["acked_seq"].as_u64().unwrap();
    write_atomic(&src.join("index.html"), &page(999, 200_000));
    wait_for("the mirror to report a full disk", || {
        m.proc.log_text().contains("disk full")
    });
    let (code, _, body) = m.get("index.html");
    assert_eq!((code, body.as_slice()), (200, &b"old front page"[..]));
    assert_eq!(
        d.mirror_status("m1")["acked_seq"],
        acked,
        "acked a changeset it could not apply; mirror log:\n{}",
        tail(&m.proc.log_text(), 4000)
    );
    wait_for("the distributor to show the mirror's error", || {
        d.mirror_status("m1")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("disk full"))
    });

    // Space comes back: the mirror finishes by itself.
    fs::remove_file(&filler).unwrap();
    converge(&src, &[&m], Duration::from_secs(30));
    let (_, _, body) = m.get("index.html");
    assert_eq!(body, page(999, 200_000));
}

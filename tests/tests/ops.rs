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

    // Metrics and the status page.
    let (code, _, metrics) = http_get(d.admin, "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("# TYPE tamizdat_changesets_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tamizdat_mirror_connected{mirror=\"m1\"} 1"),
        "{metrics}"
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

//! A mirror that was away catches up with only what changed, and a distributor restart is
//! survived without re-hashing anything.

use std::fs;
use std::time::Duration;
use tamizdat_tests::*;

#[test]
fn killed_mirror_catches_up_with_only_the_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    for i in 0..600u64 {
        write_atomic(
            &src.join(format!("{}/story-{i}.html", i % 20)),
            &page(i, 8_000),
        );
    }
    let d = Distributor::start(tmp.path(), &src, &[]);
    let (t1, t2) = (d.add_mirror("m1"), d.add_mirror("m2"));
    let m1 = Mirror::start(tmp.path(), "m1", &t1, &[]);
    let mut m2 = Mirror::start(tmp.path(), "m2", &t2, &[]);
    converge(&src, &[&m1, &m2], Duration::from_secs(60));

    m2.proc.kill();
    // 500 changes: 300 edits, 100 deletes, 99 new files, and a directory renamed.
    let mut changed_bytes = 0u64;
    for i in 0..300u64 {
        let body = page(10_000 + i, 3_000);
        changed_bytes += body.len() as u64;
        write_atomic(&src.join(format!("{}/story-{i}.html", i % 20)), &body);
    }
    for i in 300..400u64 {
        fs::remove_file(src.join(format!("{}/story-{i}.html", i % 20))).unwrap();
    }
    for i in 0..99u64 {
        let body = page(20_000 + i, 3_000);
        changed_bytes += body.len() as u64;
        write_atomic(&src.join(format!("new/{i}.html")), &body);
    }
    fs::rename(src.join("19"), src.join("nineteen")).unwrap();
    converge(&src, &[&m1], Duration::from_secs(60));

    m2.restart();
    converge(&src, &[&m1, &m2], Duration::from_secs(60));
    // Only the new bytes travelled (compressed, so fewer): not the 600-file tree, and not the
    // renamed directory's files, which the mirror already held.
    let sent = d.mirror_status("m2")["blob_bytes_sent"].as_u64().unwrap();
    assert!(sent > 0, "nothing sent?");
    assert!(
        sent <= changed_bytes + 64 * 1024,
        "catch-up sent {sent} bytes of content for {changed_bytes} bytes of changes"
    );
    wait_for("the restarted mirror to log a catch-up", || {
        m2.proc.log_text().contains("CatchUp")
    });
}

#[test]
fn distributor_restart_rehashes_nothing_and_mirrors_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    for i in 0..300u64 {
        write_atomic(&src.join(format!("s/{i}.html")), &page(i, 5_000));
    }
    let mut d = Distributor::start(tmp.path(), &src, &[]);
    let t = d.add_mirror("m1");
    let m1 = Mirror::start(tmp.path(), "m1", &t, &[]);
    converge(&src, &[&m1], Duration::from_secs(60));
    assert!(d.metric("hashed_bytes_total") >= 300 * 5_000);

    d.restart();
    assert_eq!(
        d.metric("hashed_bytes_total"),
        0,
        "the restart re-hashed unchanged files"
    );
    wait_for("the mirror to reconnect", || {
        d.mirror_status("m1")["connected"] == true
    });
    write_atomic(&src.join("after-restart.html"), b"after the restart");
    converge(&src, &[&m1], Duration::from_secs(30));
    // A change made while the distributor was down is picked up at start-up, and only it is
    // hashed.
    d.proc.stop();
    write_atomic(
        &src.join("while-down.html"),
        b"made while the distributor was down",
    );
    d.restart();
    assert_eq!(d.metric("hashed_bytes_total"), 35);
    converge(&src, &[&m1], Duration::from_secs(30));
}

#[test]
fn a_new_mirror_keeps_what_it_already_holds_and_removes_extras() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    for i in 0..100u64 {
        write_atomic(&src.join(format!("d{}/{i}.html", i % 7)), &page(i, 10_000));
    }
    // The volunteer seeded the root by hand: half the files right, a few stale, one extra.
    let root = tmp.path().join("seeded");
    let mut expected = 0u64;
    for i in 0..100u64 {
        let rel = format!("d{}/{i}.html", i % 7);
        let dst = root.join(&rel);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        if i % 2 == 0 {
            fs::copy(src.join(&rel), &dst).unwrap();
        } else {
            expected += 10_000;
            if i % 5 == 0 {
                fs::write(&dst, b"stale copy").unwrap();
            }
        }
    }
    fs::write(root.join("d1/not-on-the-site.html"), b"extra").unwrap();
    let d = Distributor::start(tmp.path(), &src, &[]);
    let t = d.add_mirror("m1");
    let m = Mirror::start_at(tmp.path(), "m1", &t, &root, &[]);
    converge(&src, &[&m], Duration::from_secs(60));
    let sent = d.mirror_status("m1")["blob_bytes_sent"].as_u64().unwrap();
    assert!(sent > 0);
    assert!(
        sent <= expected,
        "sent {sent} bytes; only {expected} were missing or different"
    );
}

#[test]
fn a_changeset_too_big_to_stream_inline_arrives_by_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"home");
    let d = Distributor::start(tmp.path(), &src, &["--max-inline-ops", "50"]);
    let t = d.add_mirror("m1");
    let m = Mirror::start(tmp.path(), "m1", &t, &[]);
    converge(&src, &[&m], Duration::from_secs(30));
    // A whole directory of 300 files moved in at once: one changeset of 300 ops.
    let outside = tmp.path().join("outside");
    for i in 0..300u64 {
        let p = outside.join(format!("archive/{}/{i}.html", i % 10));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, page(i, 1_000)).unwrap();
    }
    fs::rename(outside.join("archive"), src.join("archive")).unwrap();
    converge(&src, &[&m], Duration::from_secs(30));
    // The mirror logs the catch-up once it has recorded it, just after the renames.
    wait_for("the mirror to log a catch-up", || {
        m.proc.log_text().contains("CatchUp")
    });
}

#[test]
fn a_full_resync_of_more_files_than_the_open_file_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    for i in 0..600u64 {
        let p = src.join(format!("{}/{i}.html", i % 10));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, page(i, 500)).unwrap();
    }
    let d = Distributor::start(tmp.path(), &src, &[]);
    let t = d.add_mirror("m1");
    // The mirror may hold at most 256 files open: it must never keep one per staged file.
    let m = Mirror::start_with(tmp.path(), "m1", &t, &[], |c| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit in the child before exec touches only the child.
        unsafe {
            c.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    converge(&src, &[&m], Duration::from_secs(60));
    assert!(!m.proc.log_text().contains("Too many open files"));
}

/// A full resync's bytes are compressed by default while the link is not shown to be fast
/// (a small site never leaves the distributor's warm-up), and `--resync-compression never`
/// sends them raw: an operator's choice for a distributor short of CPU.
#[test]
fn resync_compression_follows_the_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    let mut raw = 0u64;
    for i in 0..200u64 {
        let body = page(i, 8_000);
        raw += body.len() as u64;
        write_atomic(&src.join(format!("{}/story-{i}.html", i % 10)), &body);
    }
    let mut sent = Vec::new();
    for (n, extra) in [
        ("auto", vec![]),
        ("never", vec!["--resync-compression", "never"]),
    ] {
        let dir = tmp.path().join(n);
        fs::create_dir_all(&dir).unwrap();
        let d = Distributor::start(&dir, &src, &extra);
        let t = d.add_mirror("m1");
        let m = Mirror::start(&dir, "m1", &t, &[]);
        converge(&src, &[&m], Duration::from_secs(60));
        sent.push(d.mirror_status("m1")["blob_bytes_sent"].as_u64().unwrap());
    }
    assert!(
        sent[0] < raw * 3 / 4,
        "auto sent {} content bytes for {raw} bytes of HTML: not compressed",
        sent[0]
    );
    assert!(
        sent[1] >= raw,
        "never sent {} content bytes for {raw} bytes: compressed anyway",
        sent[1]
    );
}

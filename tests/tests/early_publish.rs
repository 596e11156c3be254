//! A full resync into an empty mirror renames its files into place as their bytes arrive, not
//! all at the end; a mirror that already holds files waits for the whole manifest, so its
//! deletes still come first; and a mirror killed again and again during its first resync
//! never serves a torn file and converges.

use std::fs;
use std::path::Path;
use std::time::Duration;
use tamizdat_tests::*;

const FILES: u64 = 800;

fn content(i: u64) -> Vec<u8> {
    page(7_000 + i, 6_000 + (i as usize * 37) % 9_000)
}

/// A site of `FILES` pages in a few directories, and ten copies under other names (the same
/// bytes at two paths travel once and are placed twice).
fn site(src: &Path) {
    for i in 0..FILES {
        write_atomic(&src.join(format!("d{}/{i}.html", i % 7)), &content(i));
    }
    for i in 0..10 {
        write_atomic(&src.join(format!("copies/{i}.html")), &content(i));
    }
}

const METRICS: [&str; 2] = ["--metrics", "127.0.0.1:0"];

fn published_early(m: &Mirror) -> f64 {
    m.scrape()
        .value("tamizdat_mirror_files_published_early_total", &[])
}

/// Waits until the mirror has applied the distributor's head sequence (the resync's end).
fn wait_for_head(m: &Mirror, d: &Distributor) {
    wait_for("the resync's sequence applied", || {
        m.health()["applied_seq"] == d.status()["head_seq"]
    });
}

#[test]
fn empty_mirror_publishes_a_full_resync_as_it_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    site(&src);
    let d = Distributor::start(tmp.path(), &src, &[]);

    let t = d.add_mirror("fresh");
    let m = Mirror::start(tmp.path(), "fresh", &t, &METRICS);
    converge(&src, &[&m], Duration::from_secs(60));
    wait_for_head(&m, &d);
    let early = published_early(&m);
    // Batches of an eighth of the manifest: all but the files of the last one or two went
    // ahead of the end, never more files than the manifest has.
    assert!(early >= (FILES / 8) as f64, "published early: {early}");
    assert!(early <= (FILES + 10) as f64, "published early: {early}");
    assert_eq!(m.get("d3/3.html").2, content(3));
    assert_eq!(m.get("copies/4.html").2, content(4));

    // A root that already holds a file is not fresh: the resync publishes at its end, and
    // removes what the origin does not have.
    let t = d.add_mirror("seeded");
    let root = tmp.path().join("seeded-root");
    fs::create_dir_all(root.join("d1")).unwrap();
    fs::write(root.join("d1/stale.html"), b"not on the origin").unwrap();
    fs::write(root.join("old.txt"), b"x").unwrap();
    let s = Mirror::start_at(tmp.path(), "seeded", &t, &root, &METRICS);
    converge(&src, &[&s], Duration::from_secs(60));
    assert_eq!(published_early(&s), 0.0);
    assert!(!root.join("d1/stale.html").exists());
    assert!(!root.join("old.txt").exists());
}

#[test]
fn repeated_sigkill_during_a_first_resync_never_tears_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    site(&src);
    let d = Distributor::start(tmp.path(), &src, &[]);
    let t = d.add_mirror("m1");
    let mut m = Mirror::start(tmp.path(), "m1", &t, &[]);

    // Readers check every file they find, from disk directly, is complete.
    let watch = TornWatch::start(
        &m.root,
        (0..FILES)
            .map(|i| (format!("d{}/{i}.html", i % 7), vec![content(i)]))
            .collect(),
    );
    kill_repeatedly(
        &mut m,
        8,
        Duration::from_millis(10),
        Duration::from_millis(23),
    );
    converge(&src, &[&m], Duration::from_secs(60));
    watch.assert_none_torn();
    wait_for_head(&m, &d);
    assert_eq!(m.get("copies/9.html").2, content(9));
}

/// The mode bits a mirror gives a file: `0644` plus the execute bits the origin's file has,
/// and no other (`mode & 0755 | 0644`), whichever way the file arrived (published early, at
/// the resync's end, or by a live change).
#[test]
fn files_keep_their_executable_bit_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    site(&src);
    let set = |rel: &str, mode: u32| {
        fs::set_permissions(src.join(rel), fs::Permissions::from_mode(mode)).unwrap()
    };
    set("d1/1.html", 0o755);
    set("d2/2.html", 0o600);
    set("d3/3.html", 0o775);
    let d = Distributor::start(tmp.path(), &src, &[]);
    let t = d.add_mirror("fresh");
    let m = Mirror::start(tmp.path(), "fresh", &t, &METRICS);
    converge(&src, &[&m], Duration::from_secs(60));
    wait_for_head(&m, &d);
    assert!(published_early(&m) > 0.0);
    let mode = |rel: &str| fs::metadata(m.root.join(rel)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("d1/1.html"), 0o755);
    assert_eq!(mode("d2/2.html"), 0o644);
    assert_eq!(mode("d3/3.html"), 0o755);
    assert_eq!(mode("d4/4.html"), 0o644);

    // A live change: a new executable file (its mode set before it is renamed into place:
    // a `chmod` alone is no change the distributor sends) and a plain one.
    fs::create_dir_all(src.join("live")).unwrap();
    let tmp_file = src.join("live/.tmp-run");
    fs::write(&tmp_file, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&tmp_file, fs::Permissions::from_mode(0o700)).unwrap();
    fs::rename(&tmp_file, src.join("live/run.sh")).unwrap();
    write_atomic(&src.join("live/page.html"), b"<p>new</p>");
    converge(&src, &[&m], Duration::from_secs(60));
    wait_for("the live files' modes", || {
        m.root.join("live/run.sh").exists()
            && m.root.join("live/page.html").exists()
            && mode("live/run.sh") == 0o744
    });
    assert_eq!(mode("live/page.html"), 0o644);
}

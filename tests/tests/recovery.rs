//! The origin is lost (machine seized, state gone): a mirror's copy is promoted to a new
//! origin with `tamizdat-distributor promote`, the mirrors are enrolled again with new join
//! tokens, and they follow the new origin, fetching only what differs.

use std::process::Command;
use std::time::Duration;
use tamizdat_tests::*;

const FILES: usize = 60;
const FILE_BYTES: usize = 20_000;

/// Incompressible bytes, so byte counters tell files sent from files kept.
fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..FILE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_mirror_is_promoted_to_origin_and_the_others_follow_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    for i in 0..FILES {
        write_atomic(&src.join(format!("a/{i}.bin")), &noise(i as u64));
    }
    write_atomic(&src.join("index.html"), b"front page");
    let mut d = Distributor::start(tmp.path(), &src, &[]);
    let (t1, t2) = (d.add_mirror("m1"), d.add_mirror("m2"));
    let mut m1 = Mirror::start(tmp.path(), "m1", &t1, &["--max-backoff", "0.3"]);
    let mut m2 = Mirror::start(tmp.path(), "m2", &t2, &["--max-backoff", "0.3"]);
    converge(&src, &[&m1, &m2], Duration::from_secs(60));
    let site_bytes = (FILES * FILE_BYTES) as u64;

    // The origin is gone: process, tree and state.
    d.proc.kill();
    std::fs::remove_dir_all(&src).unwrap();
    std::fs::remove_dir_all(&d.state).unwrap();

    // Promote m1's copy (m1 stopped, so the copy is one published version).
    m1.proc.stop();
    let (new_root, new_state) = (tmp.path().join("new-site"), tmp.path().join("new-state"));
    let promote = |from: &std::path::Path, root: &std::path::Path, state: &std::path::Path| {
        Command::new(bin("tamizdat-distributor"))
            .arg("promote")
            .arg("--from-mirror-root")
            .arg(from)
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(state)
            .output()
            .unwrap()
    };
    let out = promote(&m1.root, &new_root, &new_state);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("copied {} files", FILES + 1)));
    assert!(
        !new_root.join(".tamizdat").exists(),
        "the mirror's staging was copied"
    );
    assert_eq!(digest(&new_root), digest(&m1.root));
    // Never over an existing origin.
    let again = promote(&m1.root, &new_root, &tmp.path().join("other-state"));
    assert_eq!(again.status.code(), Some(2), "{again:?}");

    let d2 = Distributor::start_with_state(tmp.path(), &new_root, &new_state, &[]);
    assert_ne!(d2.status()["site"], serde_json::Value::Null);
    // The newsroom carries on from the new origin before the mirrors are back.
    write_atomic(&new_root.join("a/0.bin"), &noise(1000));
    write_atomic(&new_root.join("after.html"), &noise(1001));
    let changed = 2 * FILE_BYTES as u64;

    // Both mirrors are enrolled again with new tokens and follow the new origin.
    let (n1, n2) = (d2.add_mirror("m1"), d2.add_mirror("m2"));
    m2.proc.stop();
    let m2 = Mirror::start(tmp.path(), "m2", &n2, &[]);
    let m1 = {
        drop(m1);
        Mirror::start(tmp.path(), "m1", &n1, &[])
    };
    converge(&new_root, &[&m1, &m2], Duration::from_secs(60));
    let (code, _, body) = m2.get("after.html");
    assert_eq!((code, body), (200, noise(1001)));
    let head = d2.status()["head_seq"].clone();
    for name in ["m1", "m2"] {
        wait_for("the mirror to ack the new head", || {
            d2.mirror_status(name)["acked_seq"] == head
        });
        let st = d2.mirror_status(name);
        let blobs = st["blob_bytes_sent"].as_u64().unwrap();
        // Only the two changed files' bytes (plus framing), never the site's 1.2 MB again.
        assert!(
            blobs <= changed + changed / 2,
            "{name} was sent {blobs} content bytes; the changes were {changed}, the site {site_bytes}: {st}"
        );
    }
}

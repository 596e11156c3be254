//! Trust the newsroom's key, not the network: with the real binaries, a mirror follows a key
//! rotation on its own, and refuses an impostor that holds its secret but not the site key,
//! and a distributor of another site.

use std::time::Duration;
use tamizdat_tests::*;

const SETTLE: Duration = Duration::from_secs(30);

#[test]
fn a_mirror_follows_a_key_rotation_without_re_enrolment() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"first edition");
    let mut d = Distributor::start(tmp.path(), &src, &[]);
    let token = d.add_mirror("m1");
    let mut m = Mirror::start(tmp.path(), "m1", &token, &["--max-backoff", "0.2"]);
    converge(&src, &[&m], SETTLE);

    d.proc.stop();
    let out = d.cli(&["rotate-key"]);
    assert!(out.status.success(), "rotate-key: {out:?}");
    d.restart();
    write_atomic(
        &src.join("index.html"),
        b"second edition, under the new key",
    );
    converge(&src, &[&m], SETTLE);
    let log = m.proc.log_text();
    assert!(
        log.contains("followed the site's signed key rotation"),
        "{}",
        tail(&log, 3000)
    );

    // The new key is pinned: a restarted mirror trusts it directly, and a second rotation
    // is followed from there.
    m.restart();
    d.proc.stop();
    assert!(d.cli(&["rotate-key"]).status.success());
    d.restart();
    write_atomic(&src.join("news.html"), b"third edition");
    converge(&src, &[&m], SETTLE);
    let keygen = d.cli(&["keygen"]);
    assert!(!keygen.status.success(), "keygen over an existing key");
}

#[test]
fn a_mirror_refuses_an_impostor_and_another_site() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"the real front page");
    write_atomic(&src.join("about/index.html"), b"about us");
    let mut a = Distributor::start(tmp.path(), &src, &[]);
    let token = a.add_mirror("m1");
    let mut m = Mirror::start(tmp.path(), "m1", &token, &[]);
    converge(&src, &[&m], SETTLE);
    let served = digest(&m.root);
    m.proc.kill();
    a.proc.stop();

    // The impostor: a copy of the origin's state (so it knows m1's secret and the sequence)
    // without its key, over a forged tree.
    let b_dir = tmp.path().join("b");
    let b_src = b_dir.join("site");
    write_atomic(&b_src.join("index.html"), b"forged front page");
    write_atomic(&b_src.join("about/index.html"), b"about us");
    copy_state_without_key(&a.state, &b_dir.join("dist-state"));
    let b = Distributor::start(&b_dir, &b_src, &[]);
    let upstream = format!("ws://{}", b.stream);
    let m2 = Mirror::start(
        tmp.path(),
        "m1",
        &token,
        &["--upstream", &upstream, "--max-backoff", "0.2"],
    );
    wait_for("the mirror to refuse the impostor's key", || {
        m2.proc.log_text().contains("upstream presents site key")
    });
    assert_eq!(digest(&m2.root), served, "the impostor changed the tree");
    let (code, _, body) = m2.get("index.html");
    assert_eq!((code, body.as_slice()), (200, &b"the real front page"[..]));
    drop(m2);

    // Another site that knows the mirror's secret: its own key and site id.
    let c_dir = tmp.path().join("c");
    let c_src = c_dir.join("site");
    write_atomic(&c_src.join("index.html"), b"another site");
    let c_state = c_dir.join("dist-state");
    copy_state_without_key(&a.state, &c_state);
    rusqlite::Connection::open(c_state.join("index.db"))
        .unwrap()
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'site'",
            [&[0x5a_u8; 16][..]],
        )
        .unwrap();
    let c = Distributor::start(&c_dir, &c_src, &[]);
    let upstream = format!("ws://{}", c.stream);
    let m3 = Mirror::start(
        tmp.path(),
        "m1",
        &token,
        &["--upstream", &upstream, "--max-backoff", "0.2"],
    );
    wait_for("the mirror to refuse another site", || {
        m3.proc
            .log_text()
            .contains("another site than the join token names")
    });
    assert_eq!(digest(&m3.root), served, "another site changed the tree");
    drop(m3);

    // The real origin is still followed by the same mirror.
    a.restart();
    let m4 = Mirror::start(tmp.path(), "m1", &token, &[]);
    write_atomic(&src.join("index.html"), b"the real front page, corrected");
    converge(&src, &[&m4], SETTLE);
}

/// Copies a distributor's state directory, leaving out the site key and its rotations.
fn copy_state_without_key(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.contains("key") {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

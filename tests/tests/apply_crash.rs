//! A mirror SIGKILLed again and again while it applies a 200-file changeset never serves a
//! torn file, and converges.

use std::fs;
use std::time::Duration;
use tamizdat_tests::*;

#[test]
fn repeated_sigkill_mid_apply_never_tears_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    let n = 200u64;
    let old = |i: u64| page(i, 20_000 + i as usize * 131);
    let new = |i: u64| page(100_000 + i, 30_000 + i as usize * 57);
    for i in 0..n {
        write_atomic(&src.join(format!("p/{i}.html")), &old(i));
    }
    let d = Distributor::start(tmp.path(), &src, &[]);
    let t = d.add_mirror("m1");
    let mut m = Mirror::start(tmp.path(), "m1", &t, &[]);
    converge(&src, &[&m], Duration::from_secs(60));

    // The whole new version arrives as one burst, so it travels as one or a few changesets.
    let staging = tmp.path().join("staging");
    for i in 0..n {
        let p = staging.join(format!("{i}.html"));
        fs::create_dir_all(&staging).unwrap();
        fs::write(&p, new(i)).unwrap();
    }
    for i in 0..n {
        fs::rename(
            staging.join(format!("{i}.html")),
            src.join(format!("p/{i}.html")),
        )
        .unwrap();
    }

    // Readers check every file they read, from disk directly, is a complete old or new version.
    let watch = TornWatch::start(
        &m.root,
        (0..n)
            .map(|i| (format!("p/{i}.html"), vec![old(i), new(i)]))
            .collect(),
    );
    // Kill it at varied moments while it fetches and applies.
    kill_repeatedly(
        &mut m,
        8,
        Duration::from_millis(5),
        Duration::from_millis(17),
    );
    converge(&src, &[&m], Duration::from_secs(60));
    watch.assert_none_torn();
    // Served over HTTP too, with the new bytes.
    let (code, _, body) = m.get("p/7.html");
    assert_eq!((code, body), (200, new(7)));
}

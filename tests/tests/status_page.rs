//! The admin status page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/install-test-deps`) loads `GET /` from a live distributor, finds every mirror listed and
//! fresh, and, after one mirror is stopped, finds it marked stale.
//!
//! Without Chromium the test fails, unless `TAMIZDAT_SKIP_BROWSER_TESTS=1` says to skip it.
//! `TAMIZDAT_SCREENSHOT=FILE` saves a screenshot of the page (docs/img/status-page.png is one).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tamizdat_tests::*;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|f| f.is_file())
            })
        })
}

/// Runs headless Chromium on `url` with `what` (`--dump-dom` or `--screenshot=FILE`).
fn browse(browser: &Path, profile: &Path, url: &str, what: &str) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,360",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("DOM is UTF-8")
}

/// The `<tr>` of `mirror` in the rendered DOM.
fn row<'a>(dom: &'a str, mirror: &str) -> &'a str {
    let start = dom
        .find(&format!("data-mirror=\"{mirror}\""))
        .unwrap_or_else(|| panic!("{mirror} not listed:\n{dom}"));
    let start = dom[..start].rfind("<tr").unwrap();
    let end = start + dom[start..].find("</tr>").unwrap();
    &dom[start..end]
}

#[test]
fn status_page_lists_mirrors_and_shows_a_stopped_one_stale() {
    let Some(browser) = chromium() else {
        if std::env::var("TAMIZDAT_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
            eprintln!(
                "\n!!! SKIPPED status_page test: no chromium on PATH (TAMIZDAT_SKIP_BROWSER_TESTS=1)\n"
            );
            return;
        }
        panic!(
            "this test needs headless Chromium: run .ci/install-test-deps (Debian's chromium), \
             or set TAMIZDAT_SKIP_BROWSER_TESTS=1 to skip it"
        );
    };
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("chromium-profile");
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"front page");
    let d = Distributor::start(tmp.path(), &src, &["--ping-secs", "0.5"]);
    let names = ["berlin-1", "tbilisi-2", "riga-3"];
    let mut mirrors: Vec<Mirror> = names
        .iter()
        .map(|n| Mirror::start(tmp.path(), n, &d.add_mirror(n), &[]))
        .collect();
    converge(
        &src,
        &mirrors.iter().collect::<Vec<_>>(),
        Duration::from_secs(30),
    );
    let head = d.status()["head_seq"].clone();
    wait_for("every mirror to ack the head", || {
        names
            .iter()
            .all(|n| d.mirror_status(n)["acked_seq"] == head)
    });
    let url = format!("http://{}/?max_lag=5", d.admin);

    let dom = browse(&browser, &profile, &url, "--dump-dom");
    assert!(dom.contains("<h1>tamizdat distributor</h1>"), "{dom}");
    for n in names {
        let r = row(&dom, n);
        assert!(r.contains(">fresh<") && r.contains("<svg"), "{n}: {r}");
        assert!(r.contains("127.0.0.1:"), "{n} without its address: {r}");
        assert!(
            r.contains(">tamizdat-mirror/"),
            "{n} without its version: {r}"
        );
    }
    assert!(dom.contains("3 fresh, 0 stale"), "{dom}");

    // Stop one mirror and publish: the page shows it stale, offline and behind.
    mirrors[1].proc.stop();
    write_atomic(&src.join("news.html"), b"breaking");
    converge(&src, &[&mirrors[0], &mirrors[2]], Duration::from_secs(30));
    wait_for("the distributor to see tbilisi-2 gone", || {
        d.mirror_status("tbilisi-2")["connected"] == false
    });
    let dom = browse(&browser, &profile, &url, "--dump-dom");
    let r = row(&dom, "tbilisi-2");
    assert!(r.contains(">stale<") && r.contains(">offline<"), "{r}");
    assert!(row(&dom, "berlin-1").contains(">fresh<"));
    assert!(dom.contains("2 fresh, 1 stale"), "{dom}");
    // The page refreshes on its own.
    assert!(dom.contains("http-equiv=\"refresh\""), "{dom}");

    let shot = tmp.path().join("status-page.png");
    browse(
        &browser,
        &profile,
        &url,
        &format!("--screenshot={}", shot.display()),
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(keep) = std::env::var_os("TAMIZDAT_SCREENSHOT") {
        std::fs::copy(&shot, &keep).expect("save screenshot");
    }
}

//! Hostile request targets, sent as raw bytes: each must get 400 or 404 and no byte of a
//! secret placed outside the root or in the mirror's `.tamizdat` state.

mod common;

use std::os::unix::fs::symlink;

use common::*;
use tamizdat_serve::ServeOptions;

const OUTSIDE: &[u8] = b"OUTSIDE-SECRET-7f3a";
const STATE: &[u8] = b"STATE-SECRET-91bc";

#[tokio::test]
async fn hostile_targets_get_400_or_404_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    // Outside the root: a file and a directory next to it.
    std::fs::write(dir.path().join("secret.txt"), OUTSIDE).unwrap();
    std::fs::create_dir(dir.path().join("site-other")).unwrap();
    std::fs::write(dir.path().join("site-other/secret.txt"), OUTSIDE).unwrap();
    // The root: a page, the mirror's state, dotfiles, symlinks leading out and into state.
    put(&root, "index.html", b"home");
    put(&root, "news/index.html", b"news");
    put(&root, ".tamizdat/state", STATE);
    put(&root, ".tamizdat/staging/news/index.html", STATE);
    put(&root, ".tamizdat-tmp/state", STATE);
    put(&root, ".git/config", STATE);
    put(&root, ".env", STATE);
    symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
    symlink(dir.path(), root.join("escape")).unwrap();
    symlink("../site-other", root.join("sibling")).unwrap();
    symlink("/etc", root.join("etc")).unwrap();
    symlink(".tamizdat/state", root.join("state-link")).unwrap();
    symlink(".tamizdat", root.join("state-dir")).unwrap();
    symlink(
        root.join(".tamizdat/state"),
        root.join("news/abs-state-link"),
    )
    .unwrap();
    // Symlinks that stay inside the root are followed.
    symlink("news", root.join("latest")).unwrap();
    // A FIFO would block a naive server's open or read forever.
    let fifo = std::process::Command::new("mkfifo")
        .arg(root.join("pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let s = start_in(dir, ServeOptions::default()).await;

    let long = format!("/{}", "a".repeat(5000));
    let targets: Vec<&[u8]> = vec![
        b"/../secret.txt",
        b"/../../../../etc/passwd",
        b"/news/../../secret.txt",
        b"/%2e%2e/secret.txt",
        b"/%2E%2E/secret.txt",
        b"/.%2e/secret.txt",
        b"/%2e./secret.txt",
        b"/..%2fsecret.txt",
        b"/%2e%2e%2fsecret.txt",
        b"/news/%2e%2e/%2e%2e/secret.txt",
        b"/%2E%2E%2F%2E%2E%2Fetc/passwd",
        b"/%252e%252e/secret.txt",
        b"/%252e%252e%252fsecret.txt",
        b"/%25%32%65%25%32%65/secret.txt",
        b"/..\\secret.txt",
        b"/news\\..\\..\\secret.txt",
        b"/%5c..%5csecret.txt",
        b"/..%5csecret.txt",
        b"/..%255csecret.txt",
        b"/%00/../secret.txt",
        b"/news/index.html%00.txt",
        b"/secret.txt%00",
        b"/%c0%ae%c0%ae/secret.txt",
        b"/%c0%ae%c0%ae%c0%afsecret.txt",
        b"/%e0%80%ae%e0%80%ae/secret.txt",
        b"/%c1%9c..%c1%9csecret.txt",
        b"/%u002e%u002e/secret.txt",
        b"/%zz/secret.txt",
        b"http://127.0.0.1/../secret.txt",
        b"http://localhost/%2e%2e/%2e%2e/etc/passwd",
        b"//../secret.txt",
        b"//etc/passwd",
        b"/./../secret.txt",
        b"/news/./../../secret.txt",
        b"/...//secret.txt",
        b"/..;/secret.txt",
        b"/link.txt",
        b"/escape/secret.txt",
        b"/escape/site-other/secret.txt",
        b"/sibling/secret.txt",
        b"/etc/passwd",
        b"/etc/hostname",
        b"/.tamizdat/state",
        b"/.tamizdat/staging/news/index.html",
        b"/.tamizdat-tmp/state",
        b"/%2etamizdat/state",
        b"/.tamizdat%2fstate",
        b"/news/../.tamizdat/state",
        b"/.well-known/../.tamizdat/state",
        b"/.well-known/.tamizdat/state",
        b"/state-link",
        b"/state-dir/state",
        b"/news/abs-state-link",
        b"/pipe",
        b"/.git/config",
        b"/.env",
        b"/%2eenv",
        b"/news/..%00/secret.txt",
        b"/news%0d%0aX-Injected:%20yes/",
        long.as_bytes(),
        b"*",
    ];
    assert!(targets.len() >= 40);
    let mut failures = Vec::new();
    for t in &targets {
        let mut raw = b"GET ".to_vec();
        raw.extend_from_slice(t);
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let r = raw_request(s.addr, &raw).await;
        let leaked =
            contains(&r.raw, OUTSIDE) || contains(&r.raw, STATE) || contains(&r.raw, b"root:");
        if !(r.status == 400 || r.status == 404) || leaked || r.h("x-injected").is_some() {
            failures.push(format!(
                "{} -> {} leaked={leaked}",
                String::from_utf8_lossy(t),
                r.status
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "hostile targets not refused: {failures:#?}"
    );

    // Bytes httparse itself refuses never reach us; the connection still gets a 400.
    for t in [&b"/a\x00b"[..], b"/\xc0\xae\xc0\xae/secret.txt", b"/a b"] {
        let mut raw = b"GET ".to_vec();
        raw.extend_from_slice(t);
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let r = raw_request(s.addr, &raw).await;
        assert!(!contains(&r.raw, OUTSIDE) && !contains(&r.raw, STATE));
        if !r.raw.is_empty() {
            assert!(r.status == 400 || r.status == 404, "{t:?} -> {}", r.status);
        }
    }

    // The ordinary pages still work beside all that, also through an inside symlink.
    assert_eq!(s.get("/news/").await.body, b"news");
    assert_eq!(s.get("/latest/").await.body, b"news");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

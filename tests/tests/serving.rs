//! The mirror's HTTP side, through the real binaries: validators, ranges, encodings, HEAD,
//! the 404 page, redirects, a fresh ETag right after an update, and the health endpoint
//! following the distributor down and back up.

use std::time::Duration;
use tamizdat_tests::*;

#[test]
fn a_running_mirror_serves_like_a_web_server() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    let html = page(1, 10_000);
    write_atomic(&src.join("news/index.html"), &html);
    write_atomic(
        &src.join("news/index.html.gz"),
        b"gzip bytes (opaque to the server)",
    );
    write_atomic(&src.join("404.html"), b"<h1>Not here</h1>");
    let video: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    write_atomic(&src.join("media/clip.bin"), &video);
    let d = Distributor::start(tmp.path(), &src, &[]);
    let t = d.add_mirror("m1");
    let m = Mirror::start(tmp.path(), "m1", &t, &[]);
    converge(&src, &[&m], Duration::from_secs(30));
    let a = m.http;

    let (code, h, body) = http_get(a, "/news/");
    assert_eq!((code, &body), (200, &html));
    let etag = header(&h, "etag").unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", blake3::hash(&html).to_hex()));
    let modified = header(&h, "last-modified").unwrap().to_owned();
    assert!(header(&h, "content-type").unwrap().starts_with("text/html"));

    // 304 on both validators; HEAD is GET without the body.
    assert_eq!(http(a, "GET", "/news/", &[("If-None-Match", &etag)]).0, 304);
    assert_eq!(
        http(a, "GET", "/news/", &[("If-Modified-Since", &modified)]).0,
        304
    );
    let (code, hh, body) = http(a, "HEAD", "/news/", &[]);
    assert_eq!((code, body.len()), (200, 0));
    assert_eq!(header(&hh, "etag"), Some(etag.as_str()));
    assert_eq!(
        header(&hh, "content-length"),
        Some(html.len().to_string().as_str())
    );

    // Ranges: 206, 416, and If-Range.
    let (code, h, body) = http(a, "GET", "/media/clip.bin", &[("Range", "bytes=1000-1999")]);
    assert_eq!((code, body.as_slice()), (206, &video[1000..2000]));
    assert_eq!(header(&h, "content-range"), Some("bytes 1000-1999/300000"));
    assert_eq!(
        http(a, "GET", "/media/clip.bin", &[("Range", "bytes=400000-")]).0,
        416
    );
    let (code, _, body) = http(
        a,
        "GET",
        "/media/clip.bin",
        &[("Range", "bytes=0-9"), ("If-Range", "\"stale\"")],
    );
    assert_eq!((code, body.len()), (200, video.len()));

    // The precompressed variant, when asked for, with Vary.
    let (code, h, body) = http(a, "GET", "/news/", &[("Accept-Encoding", "gzip")]);
    assert_eq!(
        (code, body.as_slice()),
        (200, &b"gzip bytes (opaque to the server)"[..])
    );
    assert_eq!(header(&h, "content-encoding"), Some("gzip"));
    assert!(header(&h, "vary")
        .unwrap()
        .to_ascii_lowercase()
        .contains("accept-encoding"));

    // The site's own 404 page, and the redirect to a directory's slash.
    let (code, _, body) = http_get(a, "/no/such/page");
    assert_eq!((code, body.as_slice()), (404, &b"<h1>Not here</h1>"[..]));
    let (code, h, _) = http_get(a, "/news");
    assert_eq!((code, header(&h, "location")), (301, Some("/news/")));

    // An update is served at once with its new ETag.
    let new = page(2, 12_000);
    write_atomic(&src.join("news/index.html"), &new);
    wait_for("the new page", || http_get(a, "/news/").2 == new);
    let (_, h, _) = http_get(a, "/news/");
    assert_eq!(
        header(&h, "etag").unwrap(),
        format!("\"{}\"", blake3::hash(&new).to_hex())
    );
}

#[test]
fn health_follows_the_distributor_down_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"home");
    let mut d = Distributor::start(tmp.path(), &src, &["--ping-secs", "0.5"]);
    let t = d.add_mirror("m1");
    let m = Mirror::start(
        tmp.path(),
        "m1",
        &t,
        &["--max-lag", "1", "--max-backoff", "0.3"],
    );
    converge(&src, &[&m], Duration::from_secs(30));
    let status = || http_get(m.http, "/.well-known/tamizdat/health").0;
    wait_for("health 200", || status() == 200);
    assert_eq!(m.health()["connected"], true);

    d.proc.stop();
    wait_for("health 503 with the distributor stopped", || {
        status() == 503
    });
    assert_eq!(m.health()["connected"], false);
    // Readers still get the site.
    assert_eq!(m.get("index.html").2, b"home");

    d.restart();
    wait_for("health 200 after reconnecting", || status() == 200);
    write_atomic(&src.join("index.html"), b"home, updated");
    converge(&src, &[&m], Duration::from_secs(30));
    let h = m.health();
    assert_eq!(h["applied_seq"], h["head_seq"]);
}

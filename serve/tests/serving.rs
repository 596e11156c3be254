//! Header behaviour against a running server: validators, ranges, encodings, directories,
//! 404 page, Cache-Control, HEAD, health.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use tamizdat_serve::{CacheControlRules, ServeOptions};

fn page() -> Vec<u8> {
    let mut p = b"<html><body>".to_vec();
    p.extend(b"hello mirror ".repeat(800));
    p.extend(b"</body></html>");
    p
}

#[tokio::test]
async fn get_head_types_and_validators() {
    let s = start(ServeOptions::default()).await;
    let page = page();
    s.put("news/page.html", &page);
    s.put("style.css", b"body{}");

    let r = s.get("/news/page.html").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, page);
    assert_eq!(r.h("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.h("content-length"), Some(page.len().to_string().as_str()));
    assert_eq!(r.h("etag"), Some(blake3_etag(&page).as_str()));
    assert_eq!(r.h("accept-ranges"), Some("bytes"));
    assert!(r.h("vary").is_none(), "no variants, no Vary");
    assert!(r.h("content-encoding").is_none());
    let lm = r.h("last-modified").expect("Last-Modified").to_owned();
    let etag = r.h("etag").unwrap().to_owned();
    assert_eq!(
        s.get("/style.css").await.h("content-type"),
        Some("text/css; charset=utf-8")
    );

    let h = s.req("HEAD", "/news/page.html", &[]).await;
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    for name in [
        "etag",
        "last-modified",
        "content-type",
        "content-length",
        "cache-control",
    ] {
        assert_eq!(h.h(name), r.h(name), "{name} differs between HEAD and GET");
    }

    let inm = s
        .req("GET", "/news/page.html", &[("If-None-Match", &etag)])
        .await;
    assert_eq!(inm.status, 304);
    assert!(inm.body.is_empty());
    assert_eq!(inm.h("etag"), Some(etag.as_str()));
    let list = format!("\"nope\", W/{etag}");
    assert_eq!(
        s.req("GET", "/news/page.html", &[("If-None-Match", &list)])
            .await
            .status,
        304
    );
    assert_eq!(
        s.req("GET", "/news/page.html", &[("If-None-Match", "\"other\"")])
            .await
            .status,
        200
    );
    assert_eq!(
        s.req("GET", "/news/page.html", &[("If-Modified-Since", &lm)])
            .await
            .status,
        304
    );
    let old = "Mon, 01 Jan 2001 00:00:00 GMT";
    assert_eq!(
        s.req("GET", "/news/page.html", &[("If-Modified-Since", old)])
            .await
            .status,
        200
    );
    // If-None-Match wins over If-Modified-Since.
    let both = [
        ("If-None-Match", "\"other\""),
        ("If-Modified-Since", lm.as_str()),
    ];
    assert_eq!(s.req("GET", "/news/page.html", &both).await.status, 200);
    assert_eq!(
        s.req("GET", "/news/page.html", &[("If-Match", "\"other\"")])
            .await
            .status,
        412
    );
    assert_eq!(
        s.req("GET", "/news/page.html", &[("If-Match", &etag)])
            .await
            .status,
        200
    );
    assert_eq!(s.req("POST", "/news/page.html", &[]).await.status, 405);
}

#[tokio::test]
async fn directories_redirects_and_404_page() {
    let s = start(ServeOptions::default()).await;
    s.put("index.html", b"home");
    s.put("news/index.html", b"news index");
    s.put("empty/a.txt", b"a");
    s.put("tags/ünïcode tag 97/index.html", b"tag");

    assert_eq!(s.get("/").await.body, b"home");
    assert_eq!(s.get("/news/").await.body, b"news index");
    let r = s.get("/news?x=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.h("location"), Some("/news/?x=1"));
    let r = s.get("/tags/%C3%BCn%C3%AFcode%20tag%2097").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.h("location"), Some("/tags/%C3%BCn%C3%AFcode%20tag%2097/"));
    assert_eq!(
        s.get("/tags/%C3%BCn%C3%AFcode%20tag%2097/").await.body,
        b"tag"
    );
    // A path that merges to `//host`-like form must not redirect off-site.
    std::fs::create_dir_all(s.root().join("evil.example")).unwrap();
    assert_eq!(
        s.get("//evil.example").await.h("location"),
        Some("/evil.example/")
    );

    // No listing, no site 404 page yet: plain 404.
    let r = s.get("/empty/").await;
    assert_eq!(r.status, 404);
    assert!(!String::from_utf8_lossy(&r.body).contains("a.txt"));
    assert_eq!(s.get("/no/such/page.html").await.status, 404);

    s.put("404.html", b"<h1>not here</h1>");
    let r = s.get("/no/such/page.html").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"<h1>not here</h1>");
    assert_eq!(r.h("content-type"), Some("text/html; charset=utf-8"));
    let r = s.get("/.tamizdat/state").await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (404, b"<h1>not here</h1>".as_slice())
    );
    let r = s.req("HEAD", "/missing", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());

    s.put(".well-known/security.txt", b"Contact: x");
    assert_eq!(s.get("/.well-known/security.txt").await.status, 200);
}

#[tokio::test]
async fn ranges_and_if_range() {
    let opts = ServeOptions {
        hot_cache_max_file: 64 << 10,
        ..ServeOptions::default()
    };
    let s = start(opts).await;
    let small: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let video: Vec<u8> = (0..(5 << 20)).map(|i: u32| (i * 7 % 251) as u8).collect();
    s.put("small.bin", &small);
    s.put("media/clip.bin", &video);

    for (path, data) in [("/small.bin", &small), ("/media/clip.bin", &video)] {
        let len = data.len();
        let full = s.get(path).await;
        assert_eq!(full.body, *data, "{path}");
        let etag = full.h("etag").unwrap().to_owned();
        assert_eq!(etag, blake3_etag(data));

        let r = s.req("GET", path, &[("Range", "bytes=1000-1999")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, data[1000..2000]);
        assert_eq!(
            r.h("content-range"),
            Some(format!("bytes 1000-1999/{len}").as_str())
        );
        assert_eq!(r.h("content-length"), Some("1000"));

        let r = s.req("GET", path, &[("Range", "bytes=-100")]).await;
        assert_eq!((r.status, &r.body[..]), (206, &data[len - 100..]));
        let r = s.req("GET", path, &[("Range", "bytes=9000-")]).await;
        assert_eq!((r.status, &r.body[..]), (206, &data[9000..]));

        let r = s
            .req("GET", path, &[("Range", &format!("bytes={}-", len + 10))])
            .await;
        assert_eq!(r.status, 416);
        assert_eq!(
            r.h("content-range"),
            Some(format!("bytes */{len}").as_str())
        );

        // Several ranges: the whole file (RFC 9110 lets a server ignore Range).
        let r = s.req("GET", path, &[("Range", "bytes=0-1,5-6")]).await;
        assert_eq!((r.status, r.body.len()), (200, len));

        let ok = [("Range", "bytes=0-9"), ("If-Range", etag.as_str())];
        let r = s.req("GET", path, &ok).await;
        assert_eq!((r.status, &r.body[..]), (206, &data[..10]));
        let stale = [("Range", "bytes=0-9"), ("If-Range", "\"stale\"")];
        let r = s.req("GET", path, &stale).await;
        assert_eq!((r.status, r.body.len()), (200, len));
        let lm = full.h("last-modified").unwrap();
        let by_date = [("Range", "bytes=0-9"), ("If-Range", lm)];
        assert_eq!(s.req("GET", path, &by_date).await.status, 206);

        let h = s.req("HEAD", path, &[("Range", "bytes=0-9")]).await;
        assert_eq!((h.status, h.body.len()), (206, 0));
    }
}

#[tokio::test]
async fn precompressed_variants() {
    let s = start(ServeOptions::default()).await;
    s.put("page.html", b"plain");
    s.put("page.html.br", b"brotli bytes");
    s.put("page.html.zst", b"zstd bytes");
    s.put("page.html.gz", b"gzip bytes");
    s.put("only-gz.js", b"js");
    s.put("only-gz.js.gz", b"gz js");

    let cases: &[(&str, &str, Option<&str>, &[u8])] = &[
        ("/page.html", "", None, b"plain"),
        ("/page.html", "gzip", Some("gzip"), b"gzip bytes"),
        ("/page.html", "br", Some("br"), b"brotli bytes"),
        ("/page.html", "zstd", Some("zstd"), b"zstd bytes"),
        (
            "/page.html",
            "gzip, deflate, br, zstd",
            Some("br"),
            b"brotli bytes",
        ),
        ("/page.html", "gzip, br;q=0.5", Some("gzip"), b"gzip bytes"),
        (
            "/page.html",
            "br;q=0, zstd;q=0.1",
            Some("zstd"),
            b"zstd bytes",
        ),
        ("/page.html", "identity", None, b"plain"),
        ("/page.html", "deflate", None, b"plain"),
        ("/page.html", "*", Some("br"), b"brotli bytes"),
        ("/only-gz.js", "br, zstd", None, b"js"),
        ("/only-gz.js", "br, gzip", Some("gzip"), b"gz js"),
    ];
    for &(path, ae, enc, body) in cases {
        let headers: Vec<(&str, &str)> = if ae.is_empty() {
            vec![]
        } else {
            vec![("Accept-Encoding", ae)]
        };
        let r = s.req("GET", path, &headers).await;
        assert_eq!(r.status, 200, "{path} {ae}");
        assert_eq!(r.h("content-encoding"), enc, "{path} {ae}");
        assert_eq!(r.body, body, "{path} {ae}");
        assert_eq!(r.h("vary"), Some("accept-encoding"), "{path} {ae}");
        assert_eq!(r.h("etag"), Some(blake3_etag(body).as_str()), "{path} {ae}");
        let ct = if path.ends_with(".html") {
            "text/html; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(r.h("content-type"), Some(ct), "{path} {ae}");
    }
    // The variant asked for by its own name is a plain gzip file, never Content-Encoded.
    let r = s.get("/page.html.gz").await;
    assert_eq!((r.status, r.h("content-encoding")), (200, None));
    // A 304 for the variant's ETag, ranges over the encoded bytes.
    let etag = blake3_etag(b"gzip bytes");
    let r = s
        .req(
            "GET",
            "/page.html",
            &[("Accept-Encoding", "gzip"), ("If-None-Match", &etag)],
        )
        .await;
    assert_eq!((r.status, r.h("vary")), (304, Some("accept-encoding")));
    let r = s
        .req(
            "GET",
            "/page.html",
            &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-3")],
        )
        .await;
    assert_eq!(
        (r.status, &r.body[..], r.h("content-encoding")),
        (206, &b"gzip"[..], Some("gzip"))
    );
}

#[tokio::test]
async fn cache_control_rules() {
    let opts = ServeOptions {
        cache_control: CacheControlRules::new([("private/**", "private, no-store")]).unwrap(),
        ..ServeOptions::default()
    };
    let s = start(opts).await;
    for p in [
        "a.html",
        "feed.xml",
        "b.jpg",
        "app.0123abcd.css",
        "app.css",
        "private/x.html",
        "d/index.html",
    ] {
        s.put(p, b"x");
    }
    let cc = |r: Resp| r.h("cache-control").map(str::to_owned);
    let short = Some("public, max-age=60, must-revalidate".to_owned());
    assert_eq!(cc(s.get("/a.html").await), short);
    assert_eq!(cc(s.get("/d/").await), short);
    assert_eq!(cc(s.get("/feed.xml").await), short);
    assert_eq!(
        cc(s.get("/b.jpg").await).as_deref(),
        Some("public, max-age=604800")
    );
    assert_eq!(
        cc(s.get("/app.0123abcd.css").await).as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        cc(s.get("/app.css").await).as_deref(),
        Some("public, max-age=300")
    );
    assert_eq!(
        cc(s.get("/private/x.html").await).as_deref(),
        Some("private, no-store")
    );
}

#[tokio::test]
async fn health_endpoint_flips() {
    let s = start(ServeOptions::default()).await;
    s.health.applied.store(41, Ordering::SeqCst);
    s.health.head.store(42, Ordering::SeqCst);
    s.health.lag_ms.store(1500, Ordering::SeqCst);
    let r = s.get("/.well-known/tamizdat/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), Some("application/json"));
    assert_eq!(r.h("cache-control"), Some("no-store"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["applied_seq"], 41);
    assert_eq!(v["head_seq"], 42);
    assert_eq!(v["lag_seconds"], 1.5);
    assert_eq!(v["connected"], true);

    s.health.lag_ms.store(61_000, Ordering::SeqCst);
    assert_eq!(s.get("/.well-known/tamizdat/health").await.status, 503);
    s.health.lag_ms.store(60_000, Ordering::SeqCst);
    assert_eq!(s.get("/.well-known/tamizdat/health").await.status, 200);
    s.health.connected.store(false, Ordering::SeqCst);
    let r = s.get("/.well-known/tamizdat/health").await;
    assert_eq!(r.status, 503);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["connected"], false);
    let h = s.req("HEAD", "/.well-known/tamizdat/health", &[]).await;
    assert_eq!((h.status, h.body.len()), (503, 0));
    s.health.connected.store(true, Ordering::SeqCst);
    assert_eq!(s.get("/.well-known/tamizdat/health").await.status, 200);

    // A first sync: nothing applied yet, connected, the news only just heard of.
    s.health.applied.store(0, Ordering::SeqCst);
    s.health.lag_ms.store(0, Ordering::SeqCst);
    assert_eq!(s.get("/.well-known/tamizdat/health").await.status, 503);
    s.health.applied.store(42, Ordering::SeqCst);
    assert_eq!(s.get("/.well-known/tamizdat/health").await.status, 200);
}

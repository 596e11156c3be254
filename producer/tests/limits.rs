//! The hook's limits and hostile input, against the real binary: each limit is tested at the
//! limit (accepted) and one past it (refused with a clear answer), and the server keeps
//! serving afterwards.

mod common;
use common::*;
use serde_json::json;

/// A valid document padded with trailing whitespace (still valid JSON) to exactly `len` bytes.
fn padded(slug: &str, len: usize) -> Vec<u8> {
    let mut b = article(slug, "Padded", &[], "2009-04-01")
        .to_string()
        .into_bytes();
    assert!(b.len() <= len);
    b.resize(len, b' ');
    b
}

fn errors(r: &Response) -> Vec<(String, String)> {
    r.json()["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {}", String::from_utf8_lossy(&r.body)))
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn request_body_at_the_limit_is_read_and_one_byte_more_is_413() {
    let p = Producer::start(&["--max-request-bytes", "2000"]);
    let r = p.request("POST", "/v1/publish", Some(TOKEN), &padded("at", 2000));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = p.request("POST", "/v1/publish", Some(TOKEN), &padded("past", 2001));
    assert_eq!(r.status, 413);
    assert_eq!(
        errors(&r),
        [(
            "request".to_string(),
            "body is over the limit of 2000 bytes".to_string()
        )]
    );
    assert!(p.exists("2009/04/at/index.html") && !p.exists("2009/04/past"));
    // A body without Content-Length (chunked) is cut off at the limit too.
    let chunked = |len: usize| {
        let body = padded("chunked", len);
        let mut raw = format!("{:x}\r\n", body.len()).into_bytes();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        raw_request(
            &p,
            "POST /v1/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
            &raw,
        )
    };
    assert_eq!(chunked(2001).status, 413);
    assert!(!p.exists("2009/04/chunked"));
    assert_eq!(chunked(2000).status, 200);
}

/// Sends `start` (request line and headers of our choosing) plus the usual ones, then `raw`.
fn raw_request(p: &Producer, start: &str, raw: &[u8]) -> Response {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&p.addr, TIMEOUT).unwrap();
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let head = format!(
        "{start}Host: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&got[..split]).to_string();
    Response {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        head,
        body: got[split + 4..].to_vec(),
    }
}

#[test]
fn the_default_request_limit_follows_the_body_limit() {
    // 2 × 1000 + 256 KiB: a body at its own limit, even fully escaped, fits.
    let p = Producer::start(&["--max-body-bytes", "1000"]);
    let mut doc = article("at", "At the limit", &[], "2009-04-01");
    doc["body"] = json!("\"".repeat(1000));
    let r = p.publish(&doc);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    doc["slug"] = json!("past");
    doc["body"] = json!("x".repeat(1001));
    let r = p.publish(&doc);
    assert_eq!(r.status, 400);
    assert_eq!(errors(&r)[0].0, "body");
    let limit = 2 * 1000 + 256 * 1024;
    let r = p.request("POST", "/v1/publish", Some(TOKEN), &padded("big", limit));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = p.request(
        "POST",
        "/v1/publish",
        Some(TOKEN),
        &padded("big", limit + 1),
    );
    assert_eq!(r.status, 413);
}

#[test]
fn media_upload_at_the_limit_is_stored_and_one_byte_more_is_413() {
    let p = Producer::start(&["--max-media-bytes", "1000"]);
    let r = p.request("POST", "/v1/media?path=at.bin", Some(TOKEN), &[7; 1000]);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = p.request("POST", "/v1/media?path=past.bin", Some(TOKEN), &[7; 1001]);
    assert_eq!(r.status, 413);
    assert_eq!(errors(&r)[0].1, "is over the limit of 1000 bytes");
    assert_eq!(
        std::fs::read(p.out().join("media/at.bin")).unwrap().len(),
        1000
    );
    assert!(!p.exists("media/past.bin"));
    // Names: at the limit stored (with room for its temporary file), one byte more refused.
    let name = format!("{}.bin", "n".repeat(196));
    let r = p.request(
        "POST",
        &format!("/v1/media?path=d/{name}"),
        Some(TOKEN),
        b"x",
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = p.request(
        "POST",
        &format!("/v1/media?path=d/n{name}"),
        Some(TOKEN),
        b"x",
    );
    assert_eq!(r.status, 400);
    assert_eq!(errors(&r)[0].1, "has a component over 200 bytes");
}

#[test]
fn a_tag_whose_slug_cannot_be_a_file_name_is_refused_and_the_site_keeps_working() {
    let p = Producer::start(&[]);
    // 50 four-byte letters: a 200-byte slug, the most a tag directory may take.
    let at = "\u{10400}".repeat(50);
    let r = p.publish(&article("at", "At", &[&at], "2009-04-01"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(p.exists(&format!("tags/{}/index.html", "\u{10428}".repeat(50))));
    // 100 of them is within the 100-character tag limit, but a 400-byte directory name.
    let past = "\u{10400}".repeat(100);
    let r = p.publish(&article("past", "Past", &["ok", &past], "2009-04-01"));
    assert_eq!(r.status, 400);
    let e = errors(&r);
    assert_eq!(e[0].0, "tags[1]", "{e:?}");
    assert!(e[0].1.contains("400 bytes, at most 200"), "{e:?}");
    let r = p.publish(&article("after", "After", &["ok"], "2009-04-02"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn publishes_past_the_burst_get_429_with_retry_after() {
    // One publish per 1,000 s after a burst of 3: the fourth request cannot find a refilled
    // bucket however slowly this machine runs the first three, so nothing here is timed.
    let p = Producer::start(&["--max-publishes-per-sec", "0.001", "--publish-burst", "3"]);
    for i in 0..3 {
        let r = p.publish(&article(&format!("s{i}"), "Story", &[], "2009-04-01"));
        assert_eq!(r.status, 200, "publish {i}");
    }
    let r = p.publish(&article("s3", "Story", &[], "2009-04-01"));
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&wait), "Retry-After: {wait}");
    assert!(r.json()["error"].as_str().unwrap().contains("retry after"));
    assert!(!p.exists("2009/04/s3"));
    // Unpublishing counts too; a wrong token is refused before it can use the bucket up.
    assert_eq!(p.unpublish("s0").status, 429);
    let doc = article("s4", "S", &[], "2009-04-01").to_string();
    let r = p.request("POST", "/v1/publish", Some("wrong"), doc.as_bytes());
    assert_eq!(r.status, 401);
    // Uploads have their own limit, not this one.
    let r = p.request("POST", "/v1/media?path=a.bin", Some(TOKEN), b"x");
    assert_eq!(r.status, 201);
}

#[test]
fn publishes_at_the_default_rate_are_accepted() {
    // The default: 50 a second with a burst of 50. Refills only add to the bucket, so 50 in a
    // row always pass, whatever the timing.
    let p = Producer::start(&[]);
    for i in 0..50 {
        // A document with a bad field is cheap to answer and still counts.
        let r = p.publish(&json!({ "slug": format!("s{i}"), "title": "" }));
        assert_eq!(r.status, 400, "publish {i}");
    }
}

#[test]
fn a_rate_that_is_not_a_positive_number_is_refused_at_start() {
    for bad in ["0", "-1", "NaN", "inf", "fast"] {
        let dir = tempfile::tempdir().unwrap();
        let out = cli(
            dir.path(),
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                &format!("--max-publishes-per-sec={bad}"),
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a positive number"), "{bad}: {err}");
    }
}

#[test]
fn tokens_never_reach_the_logs() {
    const WRONG: &str = "wrong-token-zq81x";
    let p = Producer::start_with_env(
        tempfile::tempdir().unwrap(),
        &["--max-publishes-per-sec", "0.001", "--publish-burst", "2"],
        &[("RUST_LOG", "trace"), ("TAMIZDAT_LOG_FORMAT", "json")],
    );
    let doc = article("a", "A", &[], "2009-04-01").to_string();
    for token in [Some(WRONG), None, Some(TOKEN)] {
        p.request("POST", "/v1/publish", token, doc.as_bytes());
        p.request("POST", "/v1/publish", token, b"{not json");
        p.request("DELETE", "/v1/publish/nothing", token, b"");
        p.request("POST", "/v1/media?path=../x", token, b"x");
    }
    assert_eq!(
        p.request("POST", "/v1/publish", Some(TOKEN), doc.as_bytes())
            .status,
        429
    );
    let log = p.output();
    // The run did log: requests, the publish, the rate limit.
    assert!(
        log.contains("published") && log.contains("rate limit"),
        "{log}"
    );
    assert!(!log.contains(WRONG), "the wrong token was logged:\n{log}");
    assert!(!log.contains(TOKEN), "the token was logged:\n{log}");
}

#[test]
fn hostile_json_gets_400_and_the_server_keeps_serving() {
    let p = Producer::start(&[]);
    let deep_array = "[".repeat(100_000);
    let deep_extra = format!(
        r#"{{"slug":"d","title":"D","extra":{}1{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    let tags: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
    let many_tags = json!({"slug": "t", "title": "T", "tags": tags}).to_string();
    let long_tag = json!({"slug": "t", "title": "T", "tags": ["x".repeat(100_000)]}).to_string();
    let huge_number = r#"{"slug":"n","title":"N","extra":{"n":1e999999}}"#;
    let mut bad_utf8 = br#"{"slug":"u","title":"caf"#.to_vec();
    bad_utf8.extend_from_slice(b"\xff\xfe\"}");
    let nul = r#"{"slug":"u","title":"a\u0000b"}"#;
    let cases: [(&str, &[u8], &str); 7] = [
        ("deep array", deep_array.as_bytes(), "document"),
        ("deep extra", deep_extra.as_bytes(), "document"),
        ("100,000 tags", many_tags.as_bytes(), "tags"),
        ("100,000-character tag", long_tag.as_bytes(), "tags[0]"),
        ("huge number", huge_number.as_bytes(), "document"),
        ("invalid UTF-8", &bad_utf8, "document"),
        ("NUL in title", nul.as_bytes(), "title"),
    ];
    for (what, body, field) in cases {
        let r = p.request("POST", "/v1/publish", Some(TOKEN), body);
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let errors = errors(&r);
        assert_eq!(errors[0].0, field, "{what}: {errors:?}");
        assert!(!errors[0].1.is_empty());
    }
    let r = p.publish(&article("after", "Still here", &[], "2009-04-01"));
    assert_eq!(r.status, 200);
    assert!(!std::fs::read_to_string(p.dir.path().join("stderr.log"))
        .unwrap()
        .contains("panicked"));
}

#[test]
fn hostile_files_get_a_clear_error_from_publish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big_front_matter = format!(
        "+++\ntitle = \"T\"\n{}+++\nBody\n",
        "k = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\n".repeat(10_000)
    );
    let laughs = {
        let mut y = String::from("---\na0: &a0 [\"lol\"]\n");
        for i in 1..30 {
            let prev = format!("*a{}", i - 1);
            y += &format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 9].join(","));
        }
        y + "title: T\n---\nBody\n"
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "big.md",
            big_front_matter.into_bytes(),
            "front matter is over the limit",
        ),
        (
            "huge.md",
            format!("+++\ntitle = \"T\"\n+++\n{}", "x".repeat(3 << 20)).into_bytes(),
            "over the limit of",
        ),
        (
            "deep.md",
            format!("+++\na = {}\n+++\n", "[".repeat(100_000)).into_bytes(),
            "TOML front matter",
        ),
        (
            "deep-yaml.md",
            format!("---\na: {}\n---\n", "[".repeat(100_000)).into_bytes(),
            "YAML front matter nests '[' and '{' deeper than 128 levels",
        ),
        ("laughs.md", laughs.into_bytes(), "YAML front matter"),
        (
            "bad-utf8.md",
            b"+++\ntitle = \"caf\xff\"\n+++\n".to_vec(),
            "not valid UTF-8",
        ),
        (
            "bad-utf8.json",
            b"{\"title\": \"\xff\"}".to_vec(),
            "not valid UTF-8",
        ),
        (
            "deep.json",
            "[".repeat(100_000).into_bytes(),
            "not valid JSON",
        ),
    ];
    for (name, bytes, want) in cases {
        let file = d.join(name);
        std::fs::write(&file, bytes).unwrap();
        let out = cli(d, &["publish", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{name}: {err}"
        );
        assert!(err.len() < 2048, "{name}: {} bytes of error", err.len());
    }
    // A document over the tag limit is a bad document: exit 2, one line per field.
    let tags: Vec<String> = (0..10_000).map(|i| format!("\"t{i}\"")).collect();
    let file = d.join("tags.md");
    let text = format!("+++\ntitle = \"T\"\ntags = [{}]\n+++\n", tags.join(","));
    std::fs::write(&file, text).unwrap();
    let out = cli(d, &["publish", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tags: must have at most 50 entries"), "{err}");
    assert!(!d.join("out/2009").exists());
}

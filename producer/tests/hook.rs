//! The HTTP hook, against the real binary.

mod common;
use common::*;
use serde_json::json;

#[test]
fn publish_renders_article_and_every_listing() {
    let p = Producer::start(&[]);
    let r = p.publish(&article(
        "kettle",
        "Police kettle protesters",
        &["G20", "London"],
        "2009-04-01T12:00:00Z",
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report = r.json();
    assert_eq!(report["url"], "http://news.example/2009/04/kettle/");
    let written: Vec<&str> = report["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for f in [
        "2009/04/kettle/index.html",
        "index.html",
        "archive/index.html",
        "archive/page/1/index.html",
        "tags/g20/index.html",
        "tags/g20/page/1/index.html",
        "tags/g20/feed.atom",
        "tags/london/index.html",
        "feed.atom",
        "sitemaps/articles-1.xml",
        "sitemap.xml",
    ] {
        assert!(written.contains(&f), "{f} not in {written:?}");
        assert!(p.exists(f), "{f} missing");
        // The hook answers once the variants are in place too (README, Durability).
        for v in [".br", ".zst", ".gz"] {
            assert!(p.exists(&format!("{f}{v}")), "{f}{v} missing at the answer");
        }
    }
    assert!(report["precompressing"].as_u64().unwrap() >= 11, "{report}");
    let page = p.read("2009/04/kettle/index.html");
    assert!(
        page.contains("Police kettle protesters")
            && page.contains("<em>Police kettle protesters</em>")
    );
    assert!(page.contains("href=\"/tags/g20/\""));
    for f in [
        "index.html",
        "archive/index.html",
        "tags/g20/index.html",
        "feed.atom",
        "tags/london/feed.atom",
    ] {
        assert!(p.read(f).contains("Police kettle protesters"), "{f}");
    }
    assert!(p
        .read("sitemaps/articles-1.xml")
        .contains("http://news.example/2009/04/kettle/"));
    assert!(p
        .read("sitemap.xml")
        .contains("http://news.example/sitemaps/articles-1.xml"));
    assert!(p
        .read("sitemaps/pages.xml")
        .contains("http://news.example/tags/g20/"));
    assert!(p.exists("404.html") && p.exists("assets/style.css"));
    // No temporary files left behind.
    assert!(settled_snapshot(&p.out()).keys().all(|k| !k
        .rsplit('/')
        .next()
        .unwrap()
        .starts_with(".tmp-")));
}

#[test]
fn feeds_and_sitemaps_are_well_formed_xml() {
    let p = Producer::start(&[]);
    let mut doc = article(
        "amp",
        "Tom & Jerry <b>\"quoted\"</b>",
        &["a&b"],
        "2009-04-01",
    );
    doc["body"] = json!("<p>Caf\u{e9} & co</p>\u{1}<script>x()</script>");
    doc["format"] = json!("html");
    doc["authors"] = json!(["A <b>Writer</b>"]);
    assert_eq!(p.publish(&doc).status, 200);
    for f in [
        "feed.atom",
        "tags/a-b/feed.atom",
        "sitemap.xml",
        "sitemaps/pages.xml",
        "sitemaps/articles-1.xml",
    ] {
        let text = p.read(f);
        let xml = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{f}: {e}\n{text}"));
        assert!(!xml.root_element().tag_name().name().is_empty());
    }
    let feed = p.read("feed.atom");
    let xml = roxmltree::Document::parse(&feed).unwrap();
    let title = xml
        .descendants()
        .find(|n| n.has_tag_name("entry"))
        .unwrap()
        .children()
        .find(|n| n.has_tag_name("title"))
        .unwrap()
        .text()
        .unwrap()
        .to_string();
    assert_eq!(title, "Tom & Jerry <b>\"quoted\"</b>");
    assert_eq!(
        xml.root_element().tag_name().namespace(),
        Some("http://www.w3.org/2005/Atom")
    );
}

#[test]
fn changing_tags_rewrites_old_and_new_tag_pages() {
    let p = Producer::start(&[]);
    assert_eq!(
        p.publish(&article("a", "Alpha story", &["old"], "2009-04-01"))
            .status,
        200
    );
    assert_eq!(
        p.publish(&article("b", "Beta story", &["old"], "2009-04-02"))
            .status,
        200
    );
    assert!(p.read("tags/old/index.html").contains("Alpha story"));
    let r = p.publish(&article("a", "Alpha story", &["new"], "2009-04-01"));
    assert_eq!(r.status, 200);
    assert!(!p.read("tags/old/index.html").contains("Alpha story"));
    assert!(!p.read("tags/old/feed.atom").contains("Alpha story"));
    assert!(p.read("tags/old/index.html").contains("Beta story"));
    assert!(p.read("tags/new/index.html").contains("Alpha story"));
    assert!(p.read("tags/new/feed.atom").contains("Alpha story"));
    // A tag left with no articles disappears entirely.
    assert_eq!(
        p.publish(&article("a", "Alpha story", &["other"], "2009-04-01"))
            .status,
        200
    );
    assert!(!p.exists("tags/new"), "empty tag directory left behind");
    assert!(!p.read("sitemaps/pages.xml").contains("/tags/new/"));
}

#[test]
fn unpublish_removes_the_article_and_every_listing_of_it() {
    let p = Producer::start(&[]);
    assert_eq!(
        p.publish(&article("stay", "Staying story", &["t"], "2009-04-01"))
            .status,
        200
    );
    assert_eq!(
        p.publish(&article("go", "Going story", &["t", "solo"], "2009-04-02"))
            .status,
        200
    );
    let r = p.unpublish("go");
    assert_eq!(r.status, 200);
    let removed = r.json()["removed"].clone();
    assert!(
        removed
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "2009/04/go/index.html"),
        "{removed}"
    );
    assert!(!p.exists("2009/04/go"), "article directory left behind");
    for f in [
        "index.html",
        "archive/index.html",
        "archive/page/1/index.html",
        "tags/t/index.html",
        "tags/t/page/1/index.html",
        "tags/t/feed.atom",
        "feed.atom",
        "sitemaps/articles-1.xml",
    ] {
        let text = p.read(f);
        assert!(
            !text.contains("Going story") && !text.contains("/2009/04/go/"),
            "{f} still lists it"
        );
        assert!(
            f.ends_with(".xml") || text.contains("Staying story") || f.ends_with("articles-1.xml"),
            "{f}"
        );
    }
    assert!(!p.exists("tags/solo"));
    assert_eq!(p.unpublish("go").status, 404);
}

#[test]
fn a_second_identical_publish_writes_nothing() {
    let p = Producer::start(&[]);
    let doc = article("same", "Same story", &["x", "y"], "2009-04-01T10:00:00Z");
    assert_eq!(p.publish(&doc).status, 200);
    let before = snapshot(&p.out());
    let r = p.publish(&doc);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["written"], json!([]), "{}", r.json());
    assert_eq!(r.json()["precompressing"], json!(0), "{}", r.json());
    assert!(!r.json()["unchanged"].as_array().unwrap().is_empty());
    assert_eq!(snapshot(&p.out()), before);
    // Without a date the first publish fixes it, and a repeat still writes nothing.
    let undated = json!({"slug": "undated", "title": "No date", "body": "x"});
    assert_eq!(p.publish(&undated).status, 200);
    let before = snapshot(&p.out());
    assert_eq!(p.publish(&undated).json()["written"], json!([]));
    assert_eq!(snapshot(&p.out()), before);
}

#[test]
fn missing_or_wrong_token_is_401() {
    let p = Producer::start(&[]);
    let doc = article("x", "X", &[], "2009-04-01").to_string();
    assert_eq!(
        p.request("POST", "/v1/publish", None, doc.as_bytes())
            .status,
        401
    );
    assert_eq!(
        p.request("POST", "/v1/publish", Some("nope"), doc.as_bytes())
            .status,
        401
    );
    assert_eq!(p.request("DELETE", "/v1/publish/x", None, b"").status, 401);
    assert_eq!(
        p.request("POST", "/v1/media?path=a.jpg", None, b"abc")
            .status,
        401
    );
    assert!(!p.exists("2009"));
}

#[test]
fn bad_documents_get_400_with_one_message_per_field() {
    let p = Producer::start(&["--max-body-bytes", "1000"]);
    let r = p.publish(&json!({
        "slug": "a/b", "body": "x".repeat(1001), "format": "rtf",
        "published_at": "yesterday", "updated_at": "2009-13-45", "tags": ["ok", 7], "kind": "poem"
    }));
    assert_eq!(r.status, 400);
    let errors = r.json()["errors"].as_array().unwrap().clone();
    let mut fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "body",
            "format",
            "kind",
            "published_at",
            "slug",
            "tags[1]",
            "title",
            "updated_at"
        ],
        "{errors:?}"
    );
    assert!(errors
        .iter()
        .all(|e| !e["message"].as_str().unwrap().is_empty()));
    assert_eq!(
        p.request("POST", "/v1/publish", Some(TOKEN), b"{not json")
            .status,
        400
    );
    assert_eq!(
        p.request("POST", "/v1/publish", Some(TOKEN), b"[1,2]")
            .status,
        400
    );
    // Nothing was written by any of them.
    assert!(!p.exists("2009") && !p.exists("tags"));
}

#[test]
fn hostile_slugs_are_rejected() {
    let p = Producer::start(&[]);
    let long = "x".repeat(300);
    for slug in [
        "../x",
        "a/b",
        "",
        long.as_str(),
        "tab\there",
        "nl\nx",
        "..",
        ".env",
        "a\\b",
        "nul\0",
    ] {
        let r = p.publish(&article(slug, "T", &[], "2009-04-01"));
        assert_eq!(r.status, 400, "slug {slug:?}");
        assert_eq!(r.json()["errors"][0]["field"], "slug");
    }
    assert_eq!(
        p.request("DELETE", "/v1/publish/..%2Fx", Some(TOKEN), b"")
            .status,
        400
    );
    for page_slug in ["tags", "404.html", "2009", "sitemap.xml"] {
        let r = p.publish(&json!({"slug": page_slug, "title": "T", "kind": "page"}));
        assert_eq!(r.status, 400, "page slug {page_slug}");
    }
    let names: Vec<_> = snapshot(&p.out()).into_keys().collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("..") && !n.starts_with("x")),
        "{names:?}"
    );
}

#[test]
fn scripts_never_reach_a_page_unescaped() {
    let p = Producer::start(&[]);
    let r = p.publish(&json!({
        "slug": "xss", "title": "<script>alert('t')</script>",
        "body": "<script>alert('b')</script><img src=x onerror=alert(1)><a href=\"javascript:alert(2)\">l</a>",
        "summary": "<script>alert('s')</script>", "tags": ["<b>tag</b>"], "authors": ["<script>a()</script>"],
        "extra": {"note": "<script>alert('e')</script>"}, "published_at": "2009-05-01"
    }));
    assert_eq!(r.status, 200);
    let r = p.publish(&json!({"slug": "xss-html", "title": "H", "format": "html",
        "body": "<p onclick=\"alert(3)\">x</p><iframe src=\"//evil\"></iframe>", "published_at": "2009-05-02"}));
    assert_eq!(r.status, 200);
    for (name, _) in snapshot(&p.out()) {
        if [".html", ".atom", ".xml"].iter().any(|e| name.ends_with(e)) {
            let text = p.read(&name);
            for bad in [
                "<script>a",
                "onerror",
                "onclick",
                "javascript:",
                "<iframe",
                "<b>tag",
            ] {
                assert!(!text.contains(bad), "{name} contains {bad}");
            }
        }
    }
    assert!(p.read("2009/05/xss/index.html").contains("&lt;script&gt;"));
    assert!(p.exists("tags/b-tag-b/index.html"));
}

#[test]
fn trusted_mode_keeps_body_html_but_still_escapes_fields() {
    let p = Producer::start(&["--no-sanitize"]);
    let r = p.publish(
        &json!({"slug": "embed", "title": "<script>t()</script>", "format": "html",
        "body": "<iframe src=\"https://video.example/1\"></iframe>", "published_at": "2009-05-02"}),
    );
    assert_eq!(r.status, 200);
    let page = p.read("2009/05/embed/index.html");
    assert!(page.contains("<iframe src=\"https://video.example/1\">"));
    assert!(!page.contains("<script>t()"));
}

#[test]
fn concurrent_publishes_all_land_and_listings_agree() {
    // 100 at once is past the default burst of 50 (tests/limits.rs covers that).
    let p = Producer::start(&["--publish-burst", "100"]);
    std::thread::scope(|s| {
        for i in 0..100 {
            let p = &p;
            s.spawn(move || {
                let tags: &[&str] = if i % 2 == 0 {
                    &["even", "all"]
                } else {
                    &["odd", "all"]
                };
                let doc = article(
                    &format!("c{i:03}"),
                    &format!("Concurrent {i:03}"),
                    tags,
                    &format!("2010-01-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
                );
                let r = p.publish(&doc);
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            });
        }
    });
    let count_in = |prefix: &str, pages: u64| -> Vec<String> {
        let mut seen = Vec::new();
        for n in 1..=pages {
            let text = p.read(&format!("{prefix}page/{n}/index.html"));
            for part in text.split("Concurrent ").skip(1) {
                let t = &part[..3];
                if !seen.iter().any(|s| s == t) || !text.contains(&format!("Concurrent {t}</a>")) {
                    seen.push(t.to_string());
                }
            }
        }
        seen.sort();
        seen
    };
    let all = count_in("archive/", 5);
    assert_eq!(all.len(), 100, "{all:?}");
    assert!(!p.exists("archive/page/6"));
    assert_eq!(count_in("tags/all/", 5).len(), 100);
    let even = count_in("tags/even/", 3);
    assert_eq!(even.len(), 50);
    assert!(even.iter().all(|n| n.parse::<u32>().unwrap() % 2 == 0));
    assert!(!p.exists("tags/even/page/4"));
    let feed = roxmltree::Document::parse(&p.read("feed.atom"))
        .unwrap()
        .descendants()
        .filter(|n| n.has_tag_name("entry"))
        .count();
    assert_eq!(feed, 20);
    // Every file is complete: the sitemap lists all 100.
    assert_eq!(
        p.read("sitemaps/articles-1.xml").matches("<url>").count(),
        100
    );
}

/// Publishes "Story 0" to "Story 44" (slugs s0..s44), oldest first, all tagged `t`.
fn forty_five_stories(p: &Producer) {
    for i in 0..45 {
        let r = p.publish(&article(
            &format!("s{i}"),
            &format!("Story {i}"),
            &["t"],
            &format!("2011-02-{:02}T00:{:02}:00Z", 1 + i / 2, i),
        ));
        assert_eq!(r.status, 200);
    }
}

#[test]
fn a_new_article_rewrites_a_bounded_set_of_pages() {
    let p = Producer::start(&[]);
    forty_five_stories(&p);
    let r = p
        .publish(&article(
            "newest",
            "Newest story",
            &["t"],
            "2011-03-01T00:00:00Z",
        ))
        .json();
    let written: Vec<String> = r["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        written.contains(&"archive/page/3/index.html".to_string()),
        "{written:?}"
    );
    for untouched in [
        "archive/page/1/index.html",
        "archive/page/2/index.html",
        "tags/t/page/1/index.html",
        "tags/t/page/2/index.html",
    ] {
        assert!(
            !written.contains(&untouched.to_string()),
            "{untouched} rewritten: {written:?}"
        );
    }
    assert!(written.len() <= 14, "{} files: {written:?}", written.len());
    // Page 1 holds the oldest 20, newest first within the page.
    let p1 = p.read("archive/page/1/index.html");
    assert!(p1.contains("Story 0<") && p1.contains("Story 19<") && !p1.contains("Story 20<"));
    assert!(p1.find("Story 19<").unwrap() < p1.find("Story 0<").unwrap());
}

#[test]
fn an_edit_of_an_old_article_rewrites_only_the_pages_that_show_it() {
    let p = Producer::start(&[]);
    forty_five_stories(&p);
    let r = p
        .publish(&article(
            "s3",
            "Corrected story 3",
            &["t"],
            "2011-02-02T00:03:00Z",
        ))
        .json();
    let mut written: Vec<&str> = r["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    written.sort();
    // Not the home page, the feeds or the listings' index pages: s3 is not among the newest.
    assert_eq!(
        written,
        [
            "2011/02/s3/index.html",
            "archive/page/1/index.html",
            "sitemaps/articles-1.xml",
            "tags/t/page/1/index.html"
        ]
    );
    for f in ["archive/page/1/index.html", "tags/t/page/1/index.html"] {
        assert!(p.read(f).contains("Corrected story 3"), "{f}");
    }
    // Among the newest it is on the home page and in the feeds too.
    let r = p
        .publish(&article(
            "s44",
            "Corrected story 44",
            &["t"],
            "2011-02-23T00:44:00Z",
        ))
        .json();
    let written = r["written"].to_string();
    for f in [
        "\"index.html\"",
        "\"feed.atom\"",
        "tags/t/feed.atom",
        "archive/index.html",
    ] {
        assert!(written.contains(f), "{f} not in {written}");
    }
    assert!(p.read("index.html").contains("Corrected story 44"));
}

#[test]
fn media_uploads_stream_to_disk() {
    let p = Producer::start(&["--max-media-bytes", "3000000"]);
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = p.request(
        "POST",
        "/v1/media?path=photos/2009/kettle.jpg",
        Some(TOKEN),
        &data,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["bytes"], data.len());
    assert_eq!(r.json()["blake3"], blake3::hash(&data).to_hex().as_str());
    assert_eq!(
        std::fs::read(p.out().join("media/photos/2009/kettle.jpg")).unwrap(),
        data
    );
    let big = vec![0u8; 3_000_001];
    assert_eq!(
        p.request("POST", "/v1/media?path=big.bin", Some(TOKEN), &big)
            .status,
        413
    );
    assert!(!p.exists("media/big.bin"));
    for bad in ["../x", "/etc/x", "a//b", ".hidden", ""] {
        let r = p.request("POST", &format!("/v1/media?path={bad}"), Some(TOKEN), b"x");
        assert_eq!(r.status, 400, "{bad}");
    }
    assert_eq!(
        p.request("POST", "/v1/media", Some(TOKEN), b"x").status,
        400
    );
    // Uploads leave no temp file behind. Only `media/` is looked at: the start-up render's
    // precompressed variants are made in the background, in `.tmp-variants/`, and on a busy
    // disk they can still be in flight here.
    let leftovers: Vec<_> = snapshot(&p.out())
        .into_keys()
        .filter(|k| k.starts_with("media/") && k.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

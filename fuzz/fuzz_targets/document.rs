//! The producer's document parser on arbitrary bytes, both ways a document arrives: as the
//! JSON the hook takes, and as Markdown with TOML or YAML front matter. Bad input must be an
//! error, never a panic; an accepted document must obey the documented rules, give paths the
//! protocol accepts, and render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tamizdat_producer::cms::{self, Document, Limits};
use tamizdat_producer::{frontmatter, markup};
use tamizdat_protocol::SitePath;

/// Small, so the fuzzer reaches the limit checks.
const LIMITS: Limits = Limits {
    max_body_bytes: 4096,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice(data) {
        if let Ok(doc) = cms::parse_document(value, &LIMITS) {
            check(&doc);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(value) = frontmatter::parse_markdown(text, Some("fuzz")) {
            if let Ok(doc) = cms::parse_document(value, &LIMITS) {
                check(&doc);
            }
        }
    }
});

fn check(doc: &Document) {
    assert!(cms::check_slug(&doc.slug).is_ok(), "slug {:?}", doc.slug);
    assert!(!doc.title.is_empty() && !doc.title.chars().any(char::is_control));
    assert!(doc.body.len() <= LIMITS.max_body_bytes);
    assert!(doc.tags.len() <= 50 && doc.authors.len() <= 50);
    for path in [
        format!("{}/index.html", doc.slug),
        format!("2009/04/{}/index.html", doc.slug),
    ] {
        assert!(SitePath::new(&path).is_ok(), "{path:?}");
    }
    for tag in &doc.tags {
        assert_eq!(tag.slug, cms::tag_slug(&tag.name));
        let path = format!("tags/{}/page/1/index.html", tag.slug);
        assert!(SitePath::new(&path).is_ok(), "tag {:?}: {path:?}", tag.name);
    }
    let html = markup::body_html(&doc.body, doc.format, true);
    assert!(!html.contains("<script"), "{html}");
    let _ = markup::derive_summary(&html);
}

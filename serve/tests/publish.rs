//! The publish gate and cache invalidation: a changeset is seen whole or not at all, and the
//! next request after a publish gets the new bytes and the new ETag.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tamizdat_serve::ServeOptions;

/// Two files renamed under one guard: readers that fetch `a` and then `b` must never see `b`
/// older than `a`. Without the gate (or with a stale hot cache) a reader landing between the
/// two renames sees a new `a` and an old `b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_half_a_changeset() {
    let s = Arc::new(start(ServeOptions::default()).await);
    s.put("a.txt", b"0");
    s.put("b.txt", b"0");
    let done = Arc::new(AtomicBool::new(false));
    let pairs = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (s, done, pairs) = (s.clone(), done.clone(), pairs.clone());
        readers.push(tokio::spawn(async move {
            let mut bad = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let a: u32 = String::from_utf8(s.get("/a.txt").await.body)
                    .unwrap()
                    .parse()
                    .unwrap();
                let b: u32 = String::from_utf8(s.get("/b.txt").await.body)
                    .unwrap()
                    .parse()
                    .unwrap();
                if b < a {
                    bad.push((a, b));
                }
                pairs.fetch_add(1, Ordering::SeqCst);
            }
            bad
        }));
    }
    let root = s.root();
    for generation in 1..=30u32 {
        // Let readers run a little between changesets.
        let seen = pairs.load(Ordering::SeqCst);
        within(async {
            while pairs.load(Ordering::SeqCst) < seen + 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        let guard = s.site.publish(vec!["a.txt".into(), "b.txt".into()]).await;
        put(&root, "a.txt", generation.to_string().as_bytes());
        // The window in which an ungated server would serve a mix.
        tokio::time::sleep(Duration::from_millis(5)).await;
        put(&root, "b.txt", generation.to_string().as_bytes());
        drop(guard);
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        let bad = within(r).await.unwrap();
        assert!(bad.is_empty(), "mixed changesets seen (a, b): {bad:?}");
    }
    assert_eq!(s.get("/a.txt").await.body, b"30");
}

/// While the guard is held a request waits, then sees the new set (and not the copy the hot
/// cache held from before).
#[tokio::test]
async fn request_waits_for_the_guard_and_sees_the_new_set() {
    let s = Arc::new(start(ServeOptions::default()).await);
    s.put("news/index.html", b"old index");
    s.put("news/story.html", b"old story");
    assert_eq!(s.get("/news/").await.body, b"old index");
    let old_etag = s
        .get("/news/story.html")
        .await
        .h("etag")
        .unwrap()
        .to_owned();
    held_in_hot_cache(&s, "/news/").await;
    held_in_hot_cache(&s, "/news/story.html").await;

    let guard = s.site.publish(vec!["news".into()]).await;
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move { (s.get("/news/").await, s.get("/news/story.html").await) })
    };
    s.put("news/index.html", b"new index");
    // Give an ungated server every chance to answer early (from its cache or the disk).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "a request was answered while the publish gate was closed"
    );
    s.put("news/story.html", b"new story");
    drop(guard);
    let (index, story) = within(waiting).await.unwrap();
    assert_eq!(index.body, b"new index");
    assert_eq!(story.body, b"new story");
    assert_ne!(story.h("etag"), Some(old_etag.as_str()));
}

/// After a publish, the very next request gets the new bytes and ETag: small files from the
/// hot cache, large streamed files whose hash the mirror hinted, and precompressed variants.
#[tokio::test]
async fn fresh_etag_right_after_an_update() {
    let opts = ServeOptions {
        hot_cache_max_file: 1024,
        // Only the publish can make the new version visible this quickly.
        revalidate_after: Duration::from_secs(3600),
        ..ServeOptions::default()
    };
    let s = start(opts).await;
    s.put("page.html", b"v1");
    s.put("page.html.gz", b"v1 gz");
    let big1 = vec![1u8; 10_000];
    s.put("big.bin", &big1);

    let r = s.get("/page.html").await;
    assert_eq!(r.h("etag"), Some(blake3_etag(b"v1").as_str()));
    let gz = s
        .req("GET", "/page.html", &[("Accept-Encoding", "gzip")])
        .await;
    assert_eq!(gz.body, b"v1 gz");
    held_in_hot_cache(&s, "/page.html").await;
    assert_eq!(
        s.get("/big.bin").await.h("etag"),
        Some(blake3_etag(&big1).as_str())
    );

    // A changeset: new page, its gz variant gone, new big file with the hash hinted.
    let big2 = vec![2u8; 20_000];
    {
        let mut g = s
            .site
            .publish(vec!["page.html".into(), "page.html.gz".into()])
            .await;
        s.put("page.html", b"v2");
        std::fs::remove_file(s.root().join("page.html.gz")).unwrap();
        s.put("big.bin", &big2);
        s.site
            .set_hash("big.bin", &blake3::hash(&big2).to_hex())
            .unwrap();
        g.changed("big.bin");
    }
    let r = s.get("/page.html").await;
    assert_eq!(
        (r.body.as_slice(), r.h("etag")),
        (&b"v2"[..], Some(blake3_etag(b"v2").as_str()))
    );
    let gz = s
        .req("GET", "/page.html", &[("Accept-Encoding", "gzip")])
        .await;
    assert_eq!(
        (gz.body.as_slice(), gz.h("content-encoding"), gz.h("vary")),
        (&b"v2"[..], None, None)
    );
    let r = s.get("/big.bin").await;
    assert_eq!(r.body, big2);
    assert_eq!(r.h("etag"), Some(blake3_etag(&big2).as_str()));
    let old = blake3_etag(b"v1");
    assert_eq!(
        s.req("GET", "/page.html", &[("If-None-Match", &old)])
            .await
            .status,
        200
    );
}

/// The mirror's hint is what the ETag says for a large file (the server does not rehash it),
/// and a malformed hint is refused.
#[tokio::test]
async fn hash_hints_are_used() {
    let opts = ServeOptions {
        hot_cache_max_file: 16,
        ..ServeOptions::default()
    };
    let s = start(opts).await;
    s.put("clip.bin", &[7u8; 100]);
    let hint = "ab".repeat(32);
    s.site.set_hash("clip.bin", &hint).unwrap();
    assert_eq!(
        s.get("/clip.bin").await.h("etag"),
        Some(format!("\"{hint}\"").as_str())
    );
    assert!(s.site.set_hash("clip.bin", "xyz").is_err());
    // Only a file the hot cache would not take is hashed on its own, so only it wants a hint;
    // with the hot cache off, every file does.
    assert!(s.site.wants_hash(100) && s.site.wants_hash(17));
    assert!(!s.site.wants_hash(16) && !s.site.wants_hash(0));
    let off = start(ServeOptions {
        hot_cache_bytes: 0,
        ..ServeOptions::default()
    })
    .await;
    assert!(off.site.wants_hash(0) && off.site.wants_hash(1 << 30));
}

/// Without a publish (someone edits the tree by hand), a cached entry is still revalidated
/// against the disk after `revalidate_after`.
#[tokio::test]
async fn unpublished_changes_show_after_revalidation() {
    let opts = ServeOptions {
        revalidate_after: Duration::ZERO,
        ..ServeOptions::default()
    };
    let s = start(opts).await;
    s.put("x.html", b"one");
    assert_eq!(s.get("/x.html").await.body, b"one");
    s.put("x.html", b"two");
    assert_eq!(s.get("/x.html").await.body, b"two");
    std::fs::remove_file(s.root().join("x.html")).unwrap();
    assert_eq!(s.get("/x.html").await.status, 404);
}

/// Asks for `path` until the hot cache answers (it admits a path on its second miss), so that
/// a test of what follows a publish starts from a cached old copy.
async fn held_in_hot_cache(s: &Server, path: &str) {
    for _ in 0..3 {
        let hits = s.site.stats().hot_hits();
        assert_eq!(s.get(path).await.status, 200);
        if s.site.stats().hot_hits() > hits {
            return;
        }
    }
    panic!("{path} was never answered from the hot cache");
}

//! One distributor, three mirrors: a site of 200 nested files, a 50 MB binary and names with
//! spaces and non-ASCII letters converges everywhere; edits, deletes and renames follow, and
//! renames move no file bytes.

use std::fs;
use std::time::Duration;
use tamizdat_tests::*;

fn blob_bytes(d: &Distributor, name: &str) -> u64 {
    d.mirror_status(name)["blob_bytes_sent"].as_u64().unwrap()
}

#[test]
fn three_mirrors_converge_and_follow_edits_deletes_and_renames() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    for i in 0..200u64 {
        let p = match i % 4 {
            0 => format!("{}/{:02}/story-{i}/index.html", 2020 + i % 5, i % 12 + 1),
            1 => format!("tags/ünïcode tag {i}/index.html"),
            2 => format!("sections/news and views/{i}.html"),
            _ => format!("a/b/c/d/deep-{i}.html"),
        };
        write_atomic(&src.join(p), &page(i, 2_000 + (i as usize * 97) % 30_000));
    }
    let big: Vec<u8> = (0..50u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write_atomic(&src.join("media/video one.bin"), &big);

    let d = Distributor::start(tmp.path(), &src, &[]);
    let ms: Vec<Mirror> = (1..=3)
        .map(|i| {
            let name = format!("m{i}");
            let t = d.add_mirror(&name);
            Mirror::start(tmp.path(), &name, &t, &[])
        })
        .collect();
    let refs: Vec<&Mirror> = ms.iter().collect();
    converge(&src, &refs, Duration::from_secs(120));

    // The files are served, with the hash as the ETag.
    let (code, headers, body) = ms[0].get("tags/ünïcode tag 1/index.html");
    assert_eq!(code, 200);
    assert_eq!(
        body,
        fs::read(src.join("tags/ünïcode tag 1/index.html")).unwrap()
    );
    let etag = headers
        .iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.clone());
    assert_eq!(
        etag.as_deref(),
        Some(format!("\"{}\"", blake3::hash(&body).to_hex()).as_str())
    );

    // Edits, in place and atomic; deletes of a file and of a directory.
    fs::write(src.join("a/b/c/d/deep-3.html"), b"rewritten in place").unwrap();
    write_atomic(&src.join("2020/01/story-0/index.html"), b"corrected story");
    fs::remove_file(src.join("sections/news and views/2.html")).unwrap();
    fs::remove_dir_all(src.join("tags/ünïcode tag 5")).unwrap();
    converge(&src, &refs, Duration::from_secs(30));
    let (_, _, body) = ms[2].get("2020/01/story-0/index.html");
    assert_eq!(body, b"corrected story");

    // Renames of a file, of a directory, and of the 50 MB file: no file bytes travel.
    let before: Vec<u64> = ms.iter().map(|m| blob_bytes(&d, &m.name)).collect();
    fs::rename(
        src.join("a/b/c/d/deep-7.html"),
        src.join("a/b/renamed.html"),
    )
    .unwrap();
    fs::rename(
        src.join("sections/news and views"),
        src.join("sections/opinion"),
    )
    .unwrap();
    fs::rename(
        src.join("media/video one.bin"),
        src.join("media/video-1.bin"),
    )
    .unwrap();
    converge(&src, &refs, Duration::from_secs(30));
    let after: Vec<u64> = ms.iter().map(|m| blob_bytes(&d, &m.name)).collect();
    assert_eq!(before, after, "renames sent file bytes");

    // Every mirror acknowledged the head, and lag says so.
    let head = d.status()["head_seq"].as_u64().unwrap();
    wait_for("all mirrors to ack the head", || {
        ms.iter()
            .all(|m| d.mirror_status(&m.name)["acked_seq"] == head)
    });
    let out = d.lag(&["--max-lag", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(ms[1].health()["applied_seq"], head);
}

/// `ln`, `cp -al` and `rsync --link-dest` put files in the tree as hard links: inotify reports
/// only their creation, never a close after writing, and they must still travel.
#[test]
fn a_file_hard_linked_into_the_tree_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"home");
    let d = Distributor::start(tmp.path(), &src, &[]);
    let m = Mirror::start(tmp.path(), "m1", &d.add_mirror("m1"), &[]);
    converge(&src, &[&m], Duration::from_secs(30));
    let outside = tmp.path().join("prepared.html");
    fs::write(&outside, page(7, 4_000)).unwrap();
    fs::create_dir_all(src.join("linked")).unwrap();
    fs::hard_link(&outside, src.join("linked/page.html")).unwrap();
    fs::hard_link(src.join("index.html"), src.join("copy-of-home.html")).unwrap();
    converge(&src, &[&m], Duration::from_secs(30));
    assert_eq!(m.get("linked/page.html").2, page(7, 4_000));
    assert_eq!(m.get("copy-of-home.html").2, b"home");
}

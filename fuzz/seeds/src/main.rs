//! Writes seed inputs into `fuzz/corpus/{frame_decode,site_path,document}/seed-*`: one frame
//! of every message kind, ordinary and hostile paths, and documents in each format the producer
//! takes. Run from `fuzz/`: `cargo run --manifest-path seeds/Cargo.toml`. libFuzzer starts from
//! these and `cargo fuzz cmin` keeps the ones that add coverage.

use std::path::Path;
use tamizdat_protocol::*;

fn main() -> std::io::Result<()> {
    let p = |s: &str| SitePath::new(s).unwrap();
    let h = ContentHash::of;
    let messages = vec![
        Message::Hello(Hello {
            site: Some(SiteId([1; 16])),
            mirror: "mirror-1".into(),
            secret: "s3cret".into(),
            last_seq: 42,
            link: [7; 32],
            agent: "tamizdat-mirror/0.1.0".into(),
        }),
        Message::Hello(Hello {
            site: None,
            mirror: "m".into(),
            secret: String::new(),
            last_seq: 0,
            link: GENESIS,
            agent: String::new(),
        }),
        Message::Welcome(Welcome {
            site: SiteId([2; 16]),
            head_seq: 70_000,
            mode: Mode::CatchUp,
            key: SiteKey([3; 32]),
            rotations: vec![Rotation {
                old: SiteKey([3; 32]),
                new: SiteKey([4; 32]),
                sig: tamizdat_protocol::sign::Signature([5; 64]),
            }],
        }),
        Message::Changeset(Changeset {
            seq: 9,
            base_seq: 3,
            produced_at_ms: 1_700_000_000_000,
            kind: Mode::Live,
            ops: vec![
                Op::Put {
                    path: p("2009/04/kettle/index.html"),
                    hash: h(b"x"),
                    size: 1,
                    mode: 0o644,
                    mtime: 1_700_000_000,
                },
                Op::Delete { path: p("old") },
                Op::Move {
                    from: p("d1"),
                    to: p("tags/ünïcode/d2"),
                },
            ],
            last: true,
            proof: Some(Proof {
                prev: [1; 32],
                next: [2; 32],
                sig: tamizdat_protocol::sign::Signature([9; 64]),
            }),
        }),
        Message::Changeset(Changeset {
            seq: 1,
            base_seq: 0,
            produced_at_ms: 0,
            kind: Mode::Full,
            ops: vec![],
            last: false,
            proof: None,
        }),
        Message::Need {
            hashes: vec![h(b"y"), h(b"z")],
        },
        Message::Blob(Blob {
            hash: h(b"z"),
            encoding: Encoding::Raw,
            data: b"<html>z</html>".to_vec(),
        }),
        Message::Chunk(Chunk {
            hash: h(b"z"),
            offset: 1 << 20,
            encoding: Encoding::Zstd,
            data: vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 1],
            last: true,
        }),
        Message::Gone { hash: h(b"g") },
        Message::Ack { seq: 300 },
        Message::Ping {
            nonce: u64::MAX,
            head_seq: 2,
        },
        Message::Pong { nonce: 1 },
        Message::Error {
            code: ErrorCode::HashMismatch,
            message: "bytes do not match".into(),
        },
    ];
    let frames: Vec<Vec<u8>> = messages.iter().map(encode).collect();
    write("frame_decode", &frames)?;

    let paths = [
        "index.html",
        "2009/04/kettle-report/index.html",
        "tags/ünïcode tag/page/1/index.html",
        ".well-known/security.txt",
        "a/.tamizdat/b",
        "media/photos/2009/kettle.jpg",
        "../etc/passwd",
        "/abs",
        "a//b",
        "a/./b",
        "a\\b",
        "a\0b",
        "a\nb",
        ".tamizdat/state.db",
        ".tamizdat-staging/x",
    ];
    write(
        "site_path",
        &paths
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )?;

    let documents = [
        r#"{"slug": "kettle-report", "title": "Police kettle protesters near Bank station",
 "body": "Journalists **documented** arrests.", "tags": ["G20", "London"],
 "authors": ["Legal observer"], "published_at": "2009-04-01T12:00:00Z"}"#,
        r#"{"slug": "about", "title": "About us", "kind": "page", "format": "html",
 "body": "<p>We are <b>volunteers</b>.</p><script>x()</script>", "summary": "Who we are",
 "updated_at": "2009-04-01 12:00:00", "extra": {"photo_credit": "A. N. Other", "n": [1, 2.5, null]}}"#,
        r#"{"slug": "../x", "title": "", "tags": ["ok", 7, "!!!"], "published_at": "yesterday", "colour": 1}"#,
        "+++\ntitle = \"Climate camp opens\"\npublished_at = 2009-04-01T09:00:00Z\ntags = [\"climate\", \"London\"]\n[extra]\nk = 1\n+++\nThe camp **opened** at dawn.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nA footnote[^1].\n\n[^1]: Here.\n",
        "---\nslug: legal-observers\ntitle: Legal observers\npublished_at: 2009-04-02\nauthors: [Ana]\ntags:\n  - a\n  - b\nextra: {x: &a [1], y: *a}\n---\n# Notes\n\n<img src=x onerror=alert(1)> ~~struck~~ \"quoted\"\n",
        "\u{feff}---\n---\nJust a body\n",
        "No front matter at all, *just* Markdown.",
        "+++\ntitle = 'unclosed'\n",
    ];
    write(
        "document",
        &documents
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}

fn write(target: &str, inputs: &[Vec<u8>]) -> std::io::Result<()> {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir)?;
    for (i, input) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), input)?;
    }
    println!("{}: {} seeds", dir.display(), inputs.len());
    Ok(())
}

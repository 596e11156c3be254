//! Bad input gets a clear error and changes nothing: a hostile fake distributor against the
//! real mirror, and a hostile fake mirror against the real distributor.

use futures_util::{SinkExt, StreamExt};
use std::fs;
use std::net::SocketAddr;
use std::time::Duration;
use tamizdat_protocol::*;
use tamizdat_tests::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Server = WebSocketStream<TcpStream>;
type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const SITE: SiteId = SiteId([9; 16]);

fn frame(m: &Message) -> Ws {
    Ws::Binary(encode(m).into())
}

/// Replaces the first occurrence of `good` in an encoded frame by `bad` (same length).
fn patched(m: &Message, good: &str, bad: &str) -> Ws {
    assert_eq!(good.len(), bad.len());
    let mut f = encode(m);
    let at = f
        .windows(good.len())
        .position(|w| w == good.as_bytes())
        .expect("placeholder in frame");
    f[at..at + bad.len()].copy_from_slice(bad.as_bytes());
    Ws::Binary(f.into())
}

/// A live changeset deleting `bad`, a path no encoder would produce (patched into the bytes).
fn bad_path(bad: &str) -> Ws {
    let good = "g".repeat(bad.len());
    let delete = Op::Delete {
        path: SitePath::new(good.clone()).unwrap(),
    };
    patched(&changeset(2, 1, Mode::Live, vec![delete]), &good, bad)
}

fn put(path: &str, bytes: &[u8]) -> Op {
    Op::Put {
        path: SitePath::new(path).unwrap(),
        hash: ContentHash::of(bytes),
        size: bytes.len() as u64,
        mode: 0o644,
        mtime: 1_700_000_000,
    }
}

/// The fake distributor's site key (the join token names its fingerprint).
fn site_key() -> SiteSigner {
    SiteSigner::from_secret(&[42; 32])
}

/// Another key, as an impostor would hold.
fn other_key() -> SiteSigner {
    SiteSigner::from_secret(&[7; 32])
}

/// The fake history's chain link after `seq`.
fn fake_link(seq: u64) -> Link {
    if seq == 0 {
        GENESIS
    } else {
        [seq as u8; 32]
    }
}

/// A changeset signed by `by`, building on `prev`.
fn signed_by(
    by: &SiteSigner,
    seq: u64,
    base: u64,
    kind: Mode,
    ops: Vec<Op>,
    prev: Link,
) -> Changeset {
    let ops_digest = OpsDigest::of(&ops);
    let next = fake_link(seq);
    let sig = by.sign(&Statement {
        site: SITE,
        seq,
        base_seq: base,
        kind,
        prev,
        ops_digest,
        next,
    });
    Changeset {
        seq,
        base_seq: base,
        produced_at_ms: 0,
        kind,
        ops,
        last: true,
        proof: Some(Proof { prev, next, sig }),
    }
}

/// A changeset of the fake history, properly signed.
fn changeset(seq: u64, base: u64, kind: Mode, ops: Vec<Op>) -> Message {
    let prev = if kind == Mode::Full {
        GENESIS
    } else {
        fake_link(base)
    };
    Message::Changeset(signed_by(&site_key(), seq, base, kind, ops, prev))
}

/// A join token for mirror `m1` of the fake distributor listening on `l`.
fn fake_token(l: &TcpListener) -> String {
    JoinToken {
        url: format!("ws://{}", l.local_addr().unwrap()),
        name: "m1".into(),
        secret: "s".into(),
        site: SITE,
        key: site_key().key().fingerprint(),
    }
    .encode()
}

/// Accepts the mirror's next connection and reads its Hello.
async fn accept(l: &TcpListener) -> (Server, Hello) {
    let (tcp, _) = tokio::time::timeout(TIMEOUT, l.accept())
        .await
        .expect("mirror reconnects")
        .unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let Some(Ok(Ws::Binary(b))) = ws.next().await else {
        panic!("no hello")
    };
    let Message::Hello(h) = decode(&b, MAX_FRAME_SIZE).unwrap() else {
        panic!("not hello")
    };
    (ws, h)
}

/// Reads frames until an `Error` (returned) or the end of the connection (`None`), answering
/// `Need`s with nothing.
async fn error_from<S>(ws: &mut WebSocketStream<S>) -> Option<(ErrorCode, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("an answer")
        {
            Some(Ok(Ws::Binary(b))) => {
                if let Ok(Message::Error { code, message }) = decode(&b, MAX_FRAME_SIZE) {
                    return Some((code, message));
                }
            }
            Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn next_msg(ws: &mut Server) -> Message {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a frame")
        {
            Some(Ok(Ws::Binary(b))) => return decode(&b, MAX_FRAME_SIZE).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

fn welcome(head: u64, mode: Mode) -> Ws {
    frame(&Message::Welcome(Welcome {
        site: SITE,
        head_seq: head,
        mode,
        key: site_key().key(),
        rotations: vec![],
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_refuses_a_hostile_distributor_and_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = fake_token(&l);
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let m = tokio::task::block_in_place(|| {
        Mirror::start(
            tmp.path(),
            "m1",
            &token,
            &["--max-frame", "65536", "--max-backoff", "0.2"],
        )
    });

    // A good start: the mirror takes one real page.
    let good = b"<h1>the real front page</h1>".to_vec();
    let (mut ws, hello) = accept(&l).await;
    assert_eq!((hello.mirror.as_str(), hello.last_seq), ("m1", 0));
    ws.send(welcome(1, Mode::Full)).await.unwrap();
    ws.send(frame(&changeset(
        1,
        0,
        Mode::Full,
        vec![put("index.html", &good)],
    )))
    .await
    .unwrap();
    assert!(matches!(next_msg(&mut ws).await, Message::Need { .. }));
    ws.send(frame(&Message::Blob(Blob {
        hash: ContentHash::of(&good),
        encoding: Encoding::Raw,
        data: good.clone(),
    })))
    .await
    .unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::Ack { seq: 1 });
    drop(ws);
    let before = digest(&m.root);
    std::os::unix::fs::symlink(&outside, m.root.join("link")).unwrap();

    let evil = b"<h1>injected</h1>".to_vec();
    // Each case: what the fake distributor sends after Welcome, and the error code expected
    // back before the mirror closes.
    let cases: Vec<(&str, Vec<Ws>, Option<ErrorCode>)> = vec![
        (
            "garbage bytes",
            vec![Ws::Binary(b"GET / HTTP/1.1\r\n\r\n".to_vec().into())],
            Some(ErrorCode::Malformed),
        ),
        (
            "text frame",
            vec![Ws::Text("hello".into())],
            Some(ErrorCode::Malformed),
        ),
        (
            "unknown version",
            {
                let mut f = encode(&Message::Ping {
                    nonce: 1,
                    head_seq: 1,
                });
                f[4] = 77;
                vec![Ws::Binary(f.into())]
            },
            Some(ErrorCode::Version),
        ),
        (
            "frame over the size limit",
            vec![Ws::Binary(vec![0u8; 100_000].into())],
            Some(ErrorCode::TooLarge),
        ),
        (
            "path with ..",
            vec![bad_path("../index.html")],
            Some(ErrorCode::Malformed),
        ),
        (
            "absolute path",
            vec![bad_path("/etc/passwd")],
            Some(ErrorCode::Malformed),
        ),
        (
            "NUL in path",
            vec![bad_path("a\0b")],
            Some(ErrorCode::Malformed),
        ),
        (
            "backslash path",
            vec![bad_path("..\\index.html")],
            Some(ErrorCode::Malformed),
        ),
        (
            "sequence going backwards",
            vec![frame(&changeset(1, 0, Mode::Live, vec![]))],
            Some(ErrorCode::Protocol),
        ),
        (
            "changeset with a gap",
            vec![frame(&changeset(9, 7, Mode::Live, vec![]))],
            Some(ErrorCode::Protocol),
        ),
        (
            "unrequested blob inside a changeset",
            vec![
                frame(&Message::Changeset(Changeset {
                    seq: 2,
                    base_seq: 1,
                    produced_at_ms: 0,
                    kind: Mode::Live,
                    ops: vec![put("index.html", &evil)],
                    last: false,
                    proof: None,
                })),
                frame(&Message::Blob(Blob {
                    hash: ContentHash::of(&evil),
                    encoding: Encoding::Raw,
                    data: evil.clone(),
                })),
            ],
            Some(ErrorCode::Protocol),
        ),
        (
            "a second welcome",
            vec![welcome(1, Mode::Live)],
            Some(ErrorCode::Protocol),
        ),
        (
            "an unsigned changeset",
            vec![frame(&Message::Changeset(Changeset {
                proof: None,
                ..signed_by(
                    &site_key(),
                    2,
                    1,
                    Mode::Live,
                    vec![put("index.html", &evil)],
                    fake_link(1),
                )
            }))],
            Some(ErrorCode::Signature),
        ),
        (
            "a changeset signed by another key",
            vec![frame(&Message::Changeset(signed_by(
                &other_key(),
                2,
                1,
                Mode::Live,
                vec![put("index.html", &evil)],
                fake_link(1),
            )))],
            Some(ErrorCode::Signature),
        ),
        (
            "a bent signature",
            vec![{
                let mut c = signed_by(
                    &site_key(),
                    2,
                    1,
                    Mode::Live,
                    vec![put("index.html", &evil)],
                    fake_link(1),
                );
                c.proof.as_mut().unwrap().sig.0[17] ^= 0x40;
                frame(&Message::Changeset(c))
            }],
            Some(ErrorCode::Signature),
        ),
        (
            "content that does not match what was signed",
            vec![frame(&Message::Changeset(Changeset {
                ops: vec![put("index.html", &evil)],
                ..signed_by(
                    &site_key(),
                    2,
                    1,
                    Mode::Live,
                    vec![put("index.html", b"signed")],
                    fake_link(1),
                )
            }))],
            Some(ErrorCode::Signature),
        ),
        (
            "a changeset of another history (its chain link is not the mirror's)",
            vec![frame(&Message::Changeset(signed_by(
                &site_key(),
                2,
                1,
                Mode::Live,
                vec![put("index.html", &evil)],
                [77; 32],
            )))],
            Some(ErrorCode::Signature),
        ),
        (
            "a reordered pair",
            vec![
                changeset_frame(3, 2, vec![put("index.html", &evil)]),
                changeset_frame(2, 1, vec![put("index.html", &evil)]),
            ],
            Some(ErrorCode::Protocol),
        ),
    ];
    for (what, frames, want) in cases {
        let (mut ws, hello) = accept(&l).await;
        assert_eq!(hello.last_seq, 1, "{what}: the mirror lost its place");
        ws.send(welcome(1, Mode::Live)).await.unwrap();
        for f in frames {
            let _ = ws.send(f).await;
        }
        let got = error_from(&mut ws).await;
        assert_eq!(got.as_ref().map(|g| g.0), want, "{what}: {got:?}");
    }

    // Welcomes a mirror pinned to this site must refuse: another site, another key, a key
    // "rotated" by a signature from a key it never trusted.
    let other = other_key();
    let welcomes = [
        (
            "another site's stream",
            SiteId([8; 16]),
            other.key(),
            vec![],
            ErrorCode::Protocol,
        ),
        (
            "another site key",
            SITE,
            other.key(),
            vec![],
            ErrorCode::Signature,
        ),
        (
            "a rotation nobody trusted signed",
            SITE,
            other.key(),
            vec![other.rotate_to(SITE, &other.key())],
            ErrorCode::Signature,
        ),
    ];
    for (what, site, key, rotations, want) in welcomes {
        let (mut ws, _) = accept(&l).await;
        let w = Welcome {
            site,
            head_seq: 2,
            mode: Mode::Full,
            key,
            rotations,
        };
        ws.send(frame(&Message::Welcome(w))).await.unwrap();
        let evil_full = signed_by(
            &other,
            2,
            0,
            Mode::Full,
            vec![put("index.html", &evil)],
            GENESIS,
        );
        let _ = ws.send(frame(&Message::Changeset(evil_full))).await;
        let got = error_from(&mut ws).await;
        assert_eq!(got.as_ref().map(|g| g.0), Some(want), "{what}: {got:?}");
    }

    // Full-resync manifests no tree can match, properly signed: refused before anything is
    // fetched or placed (a fresh mirror publishes a resync's files as they arrive).
    let manifests = [
        (
            "a path listed twice",
            vec![put("a.html", &evil), put("a.html", b"other")],
            "twice",
        ),
        (
            "a file that is also a directory",
            vec![put("news", &evil), put("news/today.html", &evil)],
            "as a file and as a directory",
        ),
        (
            "a delete",
            vec![
                put("a.html", &evil),
                Op::Delete {
                    path: SitePath::new("index.html").unwrap(),
                },
            ],
            "a delete or a move",
        ),
    ];
    for (what, ops, says) in manifests {
        let (mut ws, _) = accept(&l).await;
        ws.send(welcome(2, Mode::Full)).await.unwrap();
        let _ = ws.send(frame(&changeset(2, 0, Mode::Full, ops))).await;
        let got = error_from(&mut ws).await;
        assert!(
            got.as_ref()
                .is_some_and(|g| g.0 == ErrorCode::Protocol && g.1.contains(says)),
            "{what}: {got:?}"
        );
    }

    // A blob whose bytes do not match the hash it was asked for.
    let other = Blob {
        hash: ContentHash::of(&evil),
        encoding: Encoding::Raw,
        data: b"<h1>other bytes</h1>".to_vec(),
    };
    let e = answer_need(&l, put("index.html", &evil), other).await;
    assert_eq!(e.map(|e| e.0), Some(ErrorCode::HashMismatch));

    // A zstd bomb: far more bytes than announced.
    let bomb = Blob {
        hash: ContentHash::of(&evil),
        encoding: Encoding::Zstd,
        data: zstd_bomb(),
    };
    let e = answer_need(&l, put("index.html", &evil), bomb).await;
    assert_eq!(e.map(|e| e.0), Some(ErrorCode::HashMismatch));

    // A path through a symlink the mirror's root happens to hold.
    let real = Blob {
        hash: ContentHash::of(&evil),
        encoding: Encoding::Raw,
        data: evil.clone(),
    };
    let e = answer_need(&l, put("link/owned.html", &evil), real)
        .await
        .expect("an error");
    assert!(e.1.contains("symlink"), "{e:?}");

    // Nothing was written outside the root, the served page is intact, the mirror still runs.
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote outside the root"
    );
    fs::remove_file(m.root.join("link")).unwrap();
    assert_eq!(digest(&m.root), before);
    let (code, _, body) = tokio::task::block_in_place(|| m.get("index.html"));
    assert_eq!((code, body), (200, good));
    let log = m.proc.log_text();
    assert!(
        log.contains("sequence went backwards"),
        "{}",
        tail(&log, 3000)
    );
    assert!(!log.contains("panicked"), "{}", tail(&log, 3000));

    // --max-frame 65536: a blob frame of exactly 65536 bytes is taken, one byte more is not.
    let (big, at_limit) = blob_frame_of(65536);
    let put_big = put("big.html", &big);
    let mut over = at_limit.clone();
    over.push(0);
    let e = answer_need_with(&l, put_big.clone(), Ws::Binary(over.into())).await;
    assert_eq!(e.map(|e| e.0), Some(ErrorCode::TooLarge));
    assert!(!m.root.join("big.html").exists());
    let (mut ws, _) = accept(&l).await;
    ws.send(welcome(2, Mode::Live)).await.unwrap();
    ws.send(frame(&changeset(2, 1, Mode::Live, vec![put_big])))
        .await
        .unwrap();
    assert!(matches!(next_msg(&mut ws).await, Message::Need { .. }));
    ws.send(Ws::Binary(at_limit.into())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::Ack { seq: 2 });
    let (code, _, body) = tokio::task::block_in_place(|| m.get("big.html"));
    assert_eq!((code, body), (200, big));
}

/// Page bytes whose raw `Blob` frame is exactly `size` bytes long, and that frame.
fn blob_frame_of(size: usize) -> (Vec<u8>, Vec<u8>) {
    let blob = |n: usize| {
        let data = page(7, n);
        let f = encode(&Message::Blob(Blob {
            hash: ContentHash::of(&data),
            encoding: Encoding::Raw,
            data: data.clone(),
        }));
        (data, f)
    };
    exactly(size, blob)
}

/// `make(n)` for the `n` that makes its frame (the second value) exactly `size` bytes long.
fn exactly<T>(size: usize, make: impl Fn(usize) -> (T, Vec<u8>)) -> (T, Vec<u8>) {
    let mut n = size;
    for _ in 0..8 {
        let (t, f) = make(n);
        if f.len() == size {
            return (t, f);
        }
        // Only the payload's length prefix changes size with `n`; a few steps settle it.
        n = (n + size).checked_sub(f.len()).expect("a frame that small");
    }
    panic!("no frame of exactly {size} bytes");
}

fn changeset_frame(seq: u64, base: u64, ops: Vec<Op>) -> Ws {
    frame(&changeset(seq, base, Mode::Live, ops))
}

/// On the mirror's next connection: a live changeset with one put; when the mirror asks for its
/// bytes, answers with `blob`; returns the error the mirror closes with.
async fn answer_need(l: &TcpListener, op: Op, blob: Blob) -> Option<(ErrorCode, String)> {
    answer_need_with(l, op, frame(&Message::Blob(blob))).await
}

/// Like [`answer_need`], answering with any websocket frame.
async fn answer_need_with(l: &TcpListener, op: Op, answer: Ws) -> Option<(ErrorCode, String)> {
    let (mut ws, _) = accept(l).await;
    ws.send(welcome(2, Mode::Live)).await.unwrap();
    ws.send(frame(&changeset(2, 1, Mode::Live, vec![op])))
        .await
        .unwrap();
    assert!(matches!(next_msg(&mut ws).await, Message::Need { .. }));
    ws.send(answer).await.unwrap();
    error_from(&mut ws).await
}

/// 8 MiB of zeros, which zstd packs into a few hundred bytes.
fn zstd_bomb() -> Vec<u8> {
    zstd::bulk::compress(&vec![0u8; 8 << 20], 3).unwrap()
}

/// An `Error` frame from a mirror, exactly `size` bytes long.
fn error_frame_of(size: usize) -> Vec<u8> {
    let report = |n: usize| {
        let f = encode(&Message::Error {
            code: ErrorCode::Internal,
            message: format!("disk full: {}", "x".repeat(n)),
        });
        ((), f)
    };
    exactly(size, report).1
}

async fn connect(addr: SocketAddr) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}"))
        .await
        .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributor_refuses_hostile_mirrors_and_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"front page");
    let d = tokio::task::block_in_place(|| {
        Distributor::start(
            tmp.path(),
            &src,
            &["--max-frame", "65536", "--hello-timeout-secs", "1"],
        )
    });
    let token = JoinToken::decode(&tokio::task::block_in_place(|| d.add_mirror("m1"))).unwrap();
    let hello = |secret: &str, name: &str| {
        frame(&Message::Hello(Hello {
            site: None,
            mirror: name.into(),
            secret: secret.into(),
            last_seq: 0,
            link: GENESIS,
            agent: "hostile".into(),
        }))
    };
    let cases: Vec<(&str, Vec<Ws>, Option<ErrorCode>)> = vec![
        (
            "garbage bytes",
            vec![Ws::Binary(b"\x00\x01garbage".to_vec().into())],
            Some(ErrorCode::Malformed),
        ),
        (
            "text frame",
            vec![Ws::Text("hi".into())],
            Some(ErrorCode::Malformed),
        ),
        (
            "unknown version",
            {
                let Ws::Binary(b) = hello(&token.secret, "m1") else {
                    unreachable!()
                };
                let mut f = b.to_vec();
                f[4] = 200;
                vec![Ws::Binary(f.into())]
            },
            Some(ErrorCode::Version),
        ),
        (
            "wrong secret",
            vec![hello("not-the-secret", "m1")],
            Some(ErrorCode::Unauthorized),
        ),
        (
            "unknown mirror",
            vec![hello(&token.secret, "m9")],
            Some(ErrorCode::Unauthorized),
        ),
        (
            "not a hello first",
            vec![frame(&Message::Ack { seq: 1 })],
            Some(ErrorCode::Protocol),
        ),
        (
            "frame over the size limit",
            vec![Ws::Binary(vec![1u8; 100_000].into())],
            Some(ErrorCode::TooLarge),
        ),
        ("silence", vec![], Some(ErrorCode::Protocol)),
        (
            "ack of what was never sent",
            vec![
                hello(&token.secret, "m1"),
                frame(&Message::Ack { seq: 999 }),
            ],
            Some(ErrorCode::Protocol),
        ),
        (
            "a blob from a mirror",
            vec![
                hello(&token.secret, "m1"),
                frame(&Message::Gone {
                    hash: ContentHash::of(b"x"),
                }),
            ],
            Some(ErrorCode::Protocol),
        ),
    ];
    for (what, frames, want) in cases {
        let mut ws = connect(d.stream).await;
        for f in frames {
            let _ = ws.send(f).await;
        }
        let got = error_from(&mut ws).await;
        assert_eq!(got.as_ref().map(|g| g.0), want, "{what}: {got:?}");
    }

    // --max-frame 65536: a mirror's error report of exactly 65536 bytes is taken (recorded in
    // the status, no error back); one byte more is refused as too large.
    let report = error_frame_of(65536);
    let mut over = report.clone();
    over.push(0);
    let mut ws = connect(d.stream).await;
    ws.send(hello(&token.secret, "m1")).await.unwrap();
    ws.send(Ws::Binary(over.into())).await.unwrap();
    let got = error_from(&mut ws).await;
    assert_eq!(
        got.as_ref().map(|g| g.0),
        Some(ErrorCode::TooLarge),
        "{got:?}"
    );
    let mut ws = connect(d.stream).await;
    ws.send(hello(&token.secret, "m1")).await.unwrap();
    ws.send(Ws::Binary(report.into())).await.unwrap();
    let got = error_from(&mut ws).await;
    assert_eq!(got, None, "a frame at the limit was refused");
    let recorded = tokio::task::block_in_place(|| d.mirror_status("m1"))["last_error"].clone();
    assert!(
        recorded
            .as_str()
            .is_some_and(|e| e.starts_with("disk full")),
        "{recorded}"
    );

    // The real mirror still gets the site.
    let t = tokio::task::block_in_place(|| d.add_mirror("m2"));
    let m = tokio::task::block_in_place(|| Mirror::start(tmp.path(), "m2", &t, &[]));
    tokio::task::block_in_place(|| converge(&src, &[&m], Duration::from_secs(30)));
    let refused = tokio::task::block_in_place(|| d.metric("connections_refused_total"));
    assert!(refused >= 6, "refused {refused}");
    assert!(!d.proc.log_text().contains("panicked"));
}

/// Answers every `Need` with the blobs of `files` until the mirror acks; returns the ack.
async fn serve_until_ack(ws: &mut Server, files: &[(&str, Vec<u8>)]) -> u64 {
    loop {
        match next_msg(ws).await {
            Message::Need { hashes } => {
                for h in hashes {
                    let (_, data) = files
                        .iter()
                        .find(|(_, d)| ContentHash::of(d) == h)
                        .expect("a hash of ours");
                    ws.send(frame(&Message::Blob(Blob {
                        hash: h,
                        encoding: Encoding::Raw,
                        data: data.clone(),
                    })))
                    .await
                    .unwrap();
                }
            }
            Message::Ack { seq } => return seq,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_limits_hold_at_the_limit_and_refuse_past_it() {
    let tmp = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = fake_token(&l);
    let flags = [
        "--max-changeset-files",
        "3",
        "--max-path-len",
        "20",
        "--max-path-depth",
        "3",
        "--max-backoff",
        "0.2",
    ];
    let m = tokio::task::block_in_place(|| Mirror::start(tmp.path(), "m1", &token, &flags));

    // At every limit: three files, one path of exactly 20 bytes, one 3 directories deep.
    let at = [
        ("a.html", b"a".to_vec()),
        ("exactly-twenty-bytes", b"twenty".to_vec()),
        ("d1/d2/deep.html", b"deep".to_vec()),
    ];
    assert_eq!(at[1].0.len(), 20);
    let (mut ws, _) = accept(&l).await;
    ws.send(welcome(1, Mode::Full)).await.unwrap();
    let ops = at.iter().map(|(p, d)| put(p, d)).collect();
    ws.send(frame(&changeset(1, 0, Mode::Full, ops)))
        .await
        .unwrap();
    assert_eq!(serve_until_ack(&mut ws, &at).await, 1);
    drop(ws);
    let before = digest(&m.root);
    assert_eq!(before.len(), 3);

    let del = |p: &str| Op::Delete {
        path: SitePath::new(p).unwrap(),
    };
    let cases = [
        (
            "four files",
            vec![changeset_frame(
                2,
                1,
                vec![del("w"), del("x"), del("y"), del("z")],
            )],
            "--max-changeset-files",
        ),
        (
            "four files over two frames",
            vec![
                frame(&Message::Changeset(Changeset {
                    last: false,
                    proof: None,
                    ..signed_by(
                        &site_key(),
                        2,
                        1,
                        Mode::Live,
                        vec![del("w"), del("x")],
                        fake_link(1),
                    )
                })),
                changeset_frame(2, 1, vec![del("y"), del("z")]),
            ],
            "--max-changeset-files",
        ),
        (
            "a path of 21 bytes",
            vec![changeset_frame(2, 1, vec![del("exactly-twenty-one-bb")])],
            "--max-path-len",
        ),
        (
            "a move to a path 4 directories deep",
            vec![changeset_frame(
                2,
                1,
                vec![Op::Move {
                    from: SitePath::new("a.html").unwrap(),
                    to: SitePath::new("d1/d2/d3/a.html").unwrap(),
                }],
            )],
            "--max-path-depth",
        ),
    ];
    for (what, frames, flag) in cases {
        let (mut ws, hello) = accept(&l).await;
        assert_eq!(hello.last_seq, 1, "{what}");
        ws.send(welcome(1, Mode::Live)).await.unwrap();
        for f in frames {
            let _ = ws.send(f).await;
        }
        let got = error_from(&mut ws).await;
        assert!(
            got.as_ref()
                .is_some_and(|(c, m)| *c == ErrorCode::Protocol && m.contains(flag)),
            "{what}: {got:?}"
        );
    }
    assert_eq!(
        digest(&m.root),
        before,
        "a refused changeset changed the tree"
    );

    // And a live changeset at every limit is applied.
    let (mut ws, _) = accept(&l).await;
    ws.send(welcome(1, Mode::Live)).await.unwrap();
    let new = [("d1/d2/new.html", b"new".to_vec())];
    ws.send(changeset_frame(
        2,
        1,
        vec![
            del("a.html"),
            del("exactly-twenty-bytes"),
            put(new[0].0, &new[0].1),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(serve_until_ack(&mut ws, &new).await, 2);
    let after = digest(&m.root);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["d1/d2/deep.html", "d1/d2/new.html"]
    );
}

/// A full resync of more files than [`WANT_WINDOW`]: the mirror asks for that many hashes,
/// then nothing until bytes arrive, and never has more outstanding; it still gets every file,
/// each asked for once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_asks_for_a_window_of_hashes_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = fake_token(&l);
    let m = tokio::task::block_in_place(|| Mirror::start(tmp.path(), "m1", &token, &[]));

    let files: std::collections::HashMap<ContentHash, (String, Vec<u8>)> = (0..WANT_WINDOW + 300)
        .map(|i| {
            let data = format!("file {i}").into_bytes();
            (
                ContentHash::of(&data),
                (format!("d{}/f{i}.html", i / 1000), data),
            )
        })
        .collect();
    let ops: Vec<Op> = files.values().map(|(p, d)| put(p, d)).collect();
    let whole = signed_by(&site_key(), 1, 0, Mode::Full, ops.clone(), GENESIS);
    let (mut ws, _) = accept(&l).await;
    ws.send(welcome(1, Mode::Full)).await.unwrap();
    let frames: Vec<&[Op]> = ops.chunks(OPS_PER_FRAME).collect();
    for (i, part) in frames.iter().enumerate() {
        let last = i + 1 == frames.len();
        let cs = Changeset {
            ops: part.to_vec(),
            last,
            proof: if last { whole.proof } else { None },
            ..whole.clone()
        };
        ws.send(frame(&Message::Changeset(cs))).await.unwrap();
    }

    let mut asked = std::collections::HashSet::new();
    let take_need = |m: Message, asked: &mut std::collections::HashSet<ContentHash>| {
        let Message::Need { hashes } = m else {
            panic!("expected a Need, got {m:?}")
        };
        for h in &hashes {
            assert!(files.contains_key(h), "asked for a hash of no file");
            assert!(asked.insert(*h), "asked twice for one hash");
        }
        hashes
    };
    let mut pending = Vec::new();
    while asked.len() < WANT_WINDOW {
        pending.extend(take_need(next_msg(&mut ws).await, &mut asked));
    }
    assert_eq!(asked.len(), WANT_WINDOW, "asked past the window");
    // Nothing more until bytes arrive (any frame here would be a Need past the window).
    if let Ok(Some(Ok(Ws::Binary(b)))) =
        tokio::time::timeout(Duration::from_millis(500), ws.next()).await
    {
        match decode(&b, MAX_FRAME_SIZE) {
            Ok(Message::Need { hashes }) => {
                panic!("asked for {} more with the window full", hashes.len())
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    let mut answered = 0;
    let ack = loop {
        for h in pending.drain(..) {
            ws.send(frame(&Message::Blob(Blob {
                hash: h,
                encoding: Encoding::Raw,
                data: files[&h].1.clone(),
            })))
            .await
            .unwrap();
            answered += 1;
        }
        match next_msg(&mut ws).await {
            Message::Ack { seq } => break seq,
            need => pending.extend(take_need(need, &mut asked)),
        }
        assert!(
            asked.len() - answered <= WANT_WINDOW,
            "{} hashes outstanding",
            asked.len() - answered
        );
    };
    assert_eq!(ack, 1);
    assert_eq!(asked.len(), files.len(), "every file asked for once");
    assert_eq!(digest(&m.root).len(), files.len());
}

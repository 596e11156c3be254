//! File bodies sent with sendfile (the default) against copied ones (`zero_copy: false`): the
//! same bytes on keep-alive and pipelined connections, mixed with bodies from memory, and a
//! file cut short mid-response ends the connection before the response is complete.

mod common;

use std::time::Duration;

use common::*;
use tamizdat_serve::ServeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes that differ from zero almost everywhere, so stand-in zeros on the wire would show.
fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8 | 1)
        .collect()
}

/// Whether this kernel has cachestat(2) (Linux 6.5), without which nothing goes by sendfile.
fn kernel_has_cachestat() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 5)
}

/// Splits `raw` into its responses, each body as long as its `Content-Length`.
fn responses(mut raw: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = parse(&raw[..split]);
        let len: usize = head.h("content-length").unwrap().parse().unwrap();
        assert!(raw.len() >= split + len, "response cut short");
        let mut r = head;
        r.body = raw[split..split + len].to_vec();
        out.push(r);
        raw = &raw[split + len..];
    }
    out
}

#[tokio::test]
async fn pipelined_file_and_memory_bodies_arrive_intact_either_way() {
    for zero_copy in [true, false] {
        let opts = ServeOptions {
            hot_cache_max_file: 16 << 10,
            zero_copy,
            ..ServeOptions::default()
        };
        let s = start(opts).await;
        let big = data(3 << 20 | 12345, 1);
        let mid = data(200_000, 2);
        let small = data(3000, 3);
        s.put("media/big.bin", &big);
        s.put("mid.bin", &mid);
        s.put("small.bin", &small);

        let ask = [
            ("/media/big.bin", None),
            ("/small.bin", None),
            ("/mid.bin", Some("bytes=4095-150000")),
            ("/media/big.bin", Some("bytes=1048575-")),
            ("/small.bin", Some("bytes=10-20")),
            ("/mid.bin", None),
            ("/media/big.bin", Some("bytes=-5")),
        ];
        let mut raw = Vec::new();
        for (i, (path, range)) in ask.iter().enumerate() {
            raw.extend(format!("GET {path} HTTP/1.1\r\nHost: x\r\n").bytes());
            if let Some(r) = range {
                raw.extend(format!("Range: {r}\r\n").bytes());
            }
            if i == ask.len() - 1 {
                raw.extend(b"Connection: close\r\n");
            }
            raw.extend(b"\r\n");
        }
        // Twice over one connection: all at once (pipelined), then one at a time.
        let all = within(async {
            let mut c = TcpStream::connect(s.addr).await.unwrap();
            c.write_all(&raw).await.unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            got
        })
        .await;
        let got = responses(&all);
        assert_eq!(got.len(), ask.len(), "zero_copy {zero_copy}");
        for ((path, range), r) in ask.iter().zip(&got) {
            let file = match *path {
                "/media/big.bin" => &big,
                "/mid.bin" => &mid,
                _ => &small,
            };
            let want = match range.map(|r| r.trim_start_matches("bytes=")) {
                None => &file[..],
                Some(r) => match r.split_once('-').unwrap() {
                    ("", n) => &file[file.len() - n.parse::<usize>().unwrap()..],
                    (a, "") => &file[a.parse().unwrap()..],
                    (a, b) => &file[a.parse().unwrap()..=b.parse().unwrap()],
                },
            };
            assert_eq!(r.status, if range.is_some() { 206 } else { 200 });
            assert!(
                r.body == want,
                "{path} {range:?}, zero_copy {zero_copy}: {} bytes, want {}",
                r.body.len(),
                want.len()
            );
        }
        let sent = s.site.stats().sendfile_bytes();
        let copied = s.site.stats().copied_for_sendfile_bytes();
        if !zero_copy {
            assert_eq!((sent, copied), (0, 0));
        } else {
            // The big and mid files' bodies (not the hot-cached small one) went by sendfile,
            // but for any chunk the page cache did not hold, which was copied: under memory
            // pressure a chunk of these fresh files can be evicted before it is sent, and
            // without cachestat every chunk is copied.
            let streamed = (2 * big.len() - 1048575 + 5) as u64;
            let streamed = streamed + (150_000 - 4095 + 1) as u64 + mid.len() as u64;
            assert_eq!(
                sent + copied,
                streamed,
                "by sendfile {sent}, copied {copied}"
            );
            if kernel_has_cachestat() {
                assert!(sent > 0, "nothing went by sendfile, {copied} bytes copied");
            }
        }
    }
}

#[tokio::test]
async fn a_file_cut_short_mid_response_ends_the_connection_before_its_length() {
    for zero_copy in [true, false] {
        let opts = ServeOptions {
            zero_copy,
            ..ServeOptions::default()
        };
        let s = start(opts).await;
        // Larger than loopback's socket buffers, so most of it is still unsent when cut.
        let len = 48 << 20;
        let big = data(len, 4);
        s.put("big.bin", &big);
        let got = within(async {
            let mut c = TcpStream::connect(s.addr).await.unwrap();
            c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut first = vec![0u8; 64 << 10];
            let n = c.read(&mut first).await.unwrap();
            first.truncate(n);
            // Let the server fill the socket buffers, then cut the file in place.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(s.root().join("big.bin"))
                .unwrap();
            f.set_len(1 << 20).unwrap();
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest).await;
            first.extend(rest);
            first
        })
        .await;
        let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &got[split..];
        assert!(
            body.len() < len,
            "zero_copy {zero_copy}: the whole file arrived"
        );
        // Copied bytes are the file's. With sendfile the socket holds references to page
        // cache pages, and bytes past the new end that were queued before the cut may read
        // as the zeros the kernel fills cut pages with (as with nginx's sendfile); what comes
        // before the new end is the file's either way.
        let checked = if zero_copy { 1 << 20 } else { body.len() };
        let differs = body[..checked.min(body.len())]
            .iter()
            .zip(&big)
            .position(|(a, b)| a != b);
        assert!(
            differs.is_none(),
            "zero_copy {zero_copy}: of {} bytes, those from {differs:?} are not the file's",
            body.len()
        );
    }
}

/// A file body the page cache does not hold is read and copied, not sent with sendfile (which
/// would wait for the disk on the runtime thread), and counted as such: what went by sendfile
/// and what was copied add up to the body.
#[tokio::test]
async fn a_file_out_of_the_page_cache_is_copied_and_counted() {
    let s = start(ServeOptions::default()).await;
    let big = data(3 << 20, 9);
    s.put("cold.bin", &big);
    // Flushed, its clean pages can be dropped.
    let f = std::fs::File::open(s.root().join("cold.bin")).unwrap();
    f.sync_all().unwrap();
    // Its hash told, as the mirror tells it: else the server reads the file to hash it for
    // the ETag, and that brings its pages back.
    s.site
        .set_hash("cold.bin", &blake3::hash(&big).to_hex())
        .unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let r = within(s.get("/cold.bin")).await;
    assert_eq!(r.status, 200);
    assert!(r.body == big, "{} bytes", r.body.len());
    let (sent, copied) = (
        s.site.stats().sendfile_bytes(),
        s.site.stats().copied_for_sendfile_bytes(),
    );
    assert_eq!(
        sent + copied,
        big.len() as u64,
        "by sendfile {sent}, copied {copied}"
    );
    assert!(copied > 0, "a dropped file went by sendfile whole");
}

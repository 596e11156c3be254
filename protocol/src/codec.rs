//! The one home of the wire format: [`encode`] and [`decode`] a [`Message`] as one frame.
//! The layout is documented on [`crate::HEADER_LEN`].

use crate::version::{HEADER_LEN, MAGIC, MAX_FRAME_SIZE, PROTOCOL_VERSION};
use crate::Message;

/// bincode's own allocation limit: never more than the largest frame we accept, whatever a
/// length prefix claims.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_SIZE>()
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("not a tamizdat frame (bad magic bytes)")]
    BadMagic,
    #[error("protocol version {0} is not spoken here (this build speaks {PROTOCOL_VERSION})")]
    Version(u16),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// The error code to send back before closing.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => crate::ErrorCode::TooLarge,
            DecodeError::Version(_) => crate::ErrorCode::Version,
            DecodeError::BadMagic | DecodeError::Malformed(_) => crate::ErrorCode::Malformed,
        }
    }
}

/// Encodes one message as one frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    // Room for the bytes a blob or chunk carries, so they are copied once, not regrown.
    let carried = match msg {
        Message::Blob(b) => b.data.len(),
        Message::Chunk(c) => c.data.len(),
        _ => 0,
    };
    let mut out = Vec::with_capacity(128 + carried);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    bincode::serde::encode_into_std_write(msg, &mut out, config())
        .expect("encoding into a Vec cannot fail");
    out
}

/// Decodes one frame, refusing anything over `limit` bytes (at most [`MAX_FRAME_SIZE`]),
/// bad magic, another version, trailing bytes, and any path or value the types refuse.
pub fn decode(frame: &[u8], limit: usize) -> Result<Message, DecodeError> {
    let limit = limit.min(MAX_FRAME_SIZE);
    if frame.len() > limit {
        return Err(DecodeError::TooLarge {
            size: frame.len(),
            limit,
        });
    }
    if frame.len() < HEADER_LEN || frame[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16::from_le_bytes([frame[4], frame[5]]);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(version));
    }
    let body = &frame[HEADER_LEN..];
    let (msg, used) = bincode::serde::decode_from_slice::<Message, _>(body, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            body.len() - used
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn samples() -> Vec<Message> {
        let p = |s: &str| SitePath::new(s).unwrap();
        vec![
            Message::Hello(Hello {
                site: Some(SiteId([1; 16])),
                mirror: "m1".into(),
                secret: "s".into(),
                last_seq: 42,
                link: [4; 32],
                agent: "tamizdat-mirror/0.1.0".into(),
            }),
            Message::Welcome(Welcome {
                site: SiteId([2; 16]),
                head_seq: 7,
                mode: Mode::CatchUp,
                key: SiteKey([5; 32]),
                rotations: vec![Rotation {
                    old: SiteKey([5; 32]),
                    new: SiteKey([6; 32]),
                    sig: sign::Signature([7; 64]),
                }],
            }),
            Message::Changeset(Changeset {
                seq: 9,
                base_seq: 3,
                produced_at_ms: 1_700_000_000_000,
                kind: Mode::Live,
                ops: vec![
                    Op::Put {
                        path: p("a/ü b.html"),
                        hash: ContentHash::of(b"x"),
                        size: 1,
                        mode: 0o644,
                        mtime: 1_700_000_000,
                    },
                    Op::Delete { path: p("old") },
                    Op::Move {
                        from: p("d1"),
                        to: p("d2"),
                    },
                ],
                last: true,
                proof: Some(Proof {
                    prev: [1; 32],
                    next: [2; 32],
                    sig: sign::Signature([3; 64]),
                }),
            }),
            Message::Need {
                hashes: vec![ContentHash::of(b"y")],
            },
            Message::Blob(Blob {
                hash: ContentHash::of(b"z"),
                encoding: Encoding::Raw,
                data: b"z".to_vec(),
            }),
            Message::Chunk(Chunk {
                hash: ContentHash::of(b"z"),
                offset: 0,
                encoding: Encoding::Zstd,
                data: vec![1, 2, 3],
                last: false,
            }),
            Message::Gone {
                hash: ContentHash::of(b"g"),
            },
            Message::Ack { seq: 5 },
            Message::Ping {
                nonce: 1,
                head_seq: 2,
            },
            Message::Pong { nonce: 1 },
            Message::Error {
                code: ErrorCode::Protocol,
                message: "no".into(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let f = encode(&m);
            assert_eq!(decode(&f, MAX_FRAME_SIZE).unwrap(), m);
        }
    }

    /// The wire format is a promise to mirrors already deployed: this pins the bytes of one
    /// frame. If it changes, bump PROTOCOL_VERSION.
    #[test]
    fn golden_ack_frame() {
        let f = encode(&Message::Ack { seq: 300 });
        // "TZDT", version 2 LE, variant 7 (Ack), varint 300 = 0xfb 0x2c 0x01
        assert_eq!(f, [b'T', b'Z', b'D', b'T', 2, 0, 7, 0xfb, 0x2c, 0x01]);
    }

    /// Byte buffers go through `serde_bytes` (one slice, not byte by byte); the bytes on the
    /// wire are those of a plain `Vec<u8>`: a length varint, then the bytes.
    #[test]
    fn golden_blob_frame() {
        let hash = ContentHash::of(b"x");
        let f = encode(&Message::Blob(Blob {
            hash,
            encoding: Encoding::Zstd,
            data: vec![7, 8, 9],
        }));
        // header, variant 4 (Blob), the 32 hash bytes, encoding 1 (Zstd), length 3, the data
        let mut want = vec![b'T', b'Z', b'D', b'T', 2, 0, 4];
        want.extend_from_slice(&hash.0);
        want.extend_from_slice(&[1, 3, 7, 8, 9]);
        assert_eq!(f, want);
    }

    #[test]
    fn refuses_garbage_versions_sizes_and_trailing_bytes() {
        assert!(matches!(decode(b"", 100), Err(DecodeError::BadMagic)));
        assert!(matches!(
            decode(b"GET / HTTP/1.1\r\n", 100),
            Err(DecodeError::BadMagic)
        ));
        let mut f = encode(&Message::Ack { seq: 1 });
        f[4] = 99;
        assert!(matches!(decode(&f, 100), Err(DecodeError::Version(99))));
        let f = encode(&Message::Ack { seq: 1 });
        assert!(matches!(
            decode(&f, 5),
            Err(DecodeError::TooLarge { limit: 5, .. })
        ));
        let mut f = encode(&Message::Ack { seq: 1 });
        f.push(0);
        assert!(matches!(decode(&f, 100), Err(DecodeError::Malformed(_))));
        let mut f = encode(&Message::Ack { seq: 1 });
        f[6] = 200; // no such variant
        assert!(matches!(decode(&f, 100), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn refuses_bad_paths_inside_frames() {
        for bad in ["../etc/passwd", "/abs", "a\\b", "a\0b", ".tamizdat/x"] {
            // Build the frame by hand: encode a valid path of the same length, then patch it.
            let good = "g".repeat(bad.len());
            let m = Message::Changeset(Changeset {
                seq: 1,
                base_seq: 0,
                produced_at_ms: 0,
                kind: Mode::Live,
                ops: vec![Op::Delete {
                    path: SitePath::new(good.clone()).unwrap(),
                }],
                last: true,
                proof: None,
            });
            let mut f = encode(&m);
            let at = f
                .windows(good.len())
                .position(|w| w == good.as_bytes())
                .unwrap();
            f[at..at + bad.len()].copy_from_slice(bad.as_bytes());
            let err = decode(&f, MAX_FRAME_SIZE).unwrap_err();
            assert!(matches!(err, DecodeError::Malformed(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_not_allocated() {
        // Need { hashes } with a claimed length of u64::MAX.
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        f.push(3);
        f.push(0xff);
        f.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode(&f, MAX_FRAME_SIZE),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_frames_are_refused() {
        for m in samples() {
            let f = encode(&m);
            for cut in HEADER_LEN..f.len() {
                assert!(decode(&f[..cut], MAX_FRAME_SIZE).is_err());
            }
        }
    }
}

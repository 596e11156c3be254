//! `tamizdat_protocol::decode` on arbitrary bytes, with the largest frame limit. Whatever
//! decodes must encode again, and that encoding must decode to the same message and encode
//! to the same bytes (the wire format has one meaning per frame).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tamizdat_protocol::{decode, encode, MAX_FRAME_SIZE};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = decode(data, MAX_FRAME_SIZE) else {
        return;
    };
    let bytes = encode(&msg);
    assert!(bytes.len() <= data.len(), "re-encoding grew the frame");
    let again = decode(&bytes, MAX_FRAME_SIZE).expect("a re-encoded frame decodes");
    assert_eq!(again, msg, "decode(encode(m)) != m");
    assert_eq!(encode(&again), bytes, "encoding is not deterministic");
});

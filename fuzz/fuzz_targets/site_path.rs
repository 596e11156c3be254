//! `SitePath::new` on arbitrary strings. An accepted path must obey every rule the module
//! documents, and survive the round trips the two ends use (string, file system, serde).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tamizdat_protocol::path::{MAX_COMPONENT_LEN, MAX_DEPTH, MAX_PATH_LEN};
use tamizdat_protocol::{SitePath, RESERVED_PREFIX};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = SitePath::new(s) else {
        return;
    };
    assert_eq!(p.as_str(), s, "accepted paths are kept as given");
    assert!(!s.is_empty() && s.len() <= MAX_PATH_LEN);
    assert!(!s.starts_with('/'), "absolute path accepted: {s:?}");
    assert!(
        !s.starts_with(RESERVED_PREFIX),
        "reserved path accepted: {s:?}"
    );
    assert!(
        !s.chars().any(|c| c == '\0' || c == '\\' || c.is_control()),
        "NUL, backslash or control character accepted: {s:?}"
    );
    let parts: Vec<&str> = p.components().collect();
    assert!(parts.len() <= MAX_DEPTH);
    for c in &parts {
        assert!(
            !c.is_empty() && *c != "." && *c != "..",
            "bad component in {s:?}"
        );
        assert!(c.len() <= MAX_COMPONENT_LEN);
    }

    // On disk it stays under the root, and comes back as the same path.
    let root = Path::new("/srv/site");
    let full = p.to_fs(root);
    assert!(
        full.starts_with(root) && full != root,
        "{s:?} left the root"
    );
    assert_eq!(SitePath::from_fs(root, &full).as_ref(), Ok(&p));

    // Parents are valid paths and prefixes of it; rebasing onto itself is the identity.
    let mut cur = p.clone();
    while let Some(parent) = cur.parent() {
        assert_eq!(SitePath::new(parent.as_str()).as_ref(), Ok(&parent));
        assert!(cur.starts_with(&parent) && p.starts_with(&parent));
        cur = parent;
    }
    assert_eq!(p.rebase(&cur, &cur).as_ref(), Some(&p));

    // serde (the wire) re-validates to the same path.
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<SitePath>(&json).unwrap(), p);
});

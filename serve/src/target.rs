//! Request target → a path relative to the root, or a refusal.
//!
//! The raw path (still percent-encoded, as hyper hands it over) is split on `/` *before*
//! decoding, each segment is decoded exactly once, and the decoded segment is checked:
//!
//! | decoded segment holds                                   | answer |
//! |---------------------------------------------------------|--------|
//! | `/` (from `%2f`), `\`, NUL or another control byte      | 400    |
//! | `.` or `..`                                             | 400    |
//! | bytes that are not UTF-8 (overlong `%c0%ae`, …)         | 400    |
//! | a malformed escape (`%zz`, `%4`)                         | 400    |
//! | a leading `.` (dotfiles, `.tamizdat*`), except a first segment `.well-known` | 404 |
//!
//! Empty segments (`//`) are dropped, as nginx's `merge_slashes` does; a trailing `/` is kept
//! because it means "the directory's `index.html`". Nothing is decoded twice, so `%252e`
//! stays the literal name `%2e`, which no file has.

use std::borrow::Cow;

/// Why a request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Malformed or hostile: 400.
    BadRequest,
    /// Well-formed but names something never served (dotfiles, the mirror's state): 404.
    NotFound,
}

/// Turns the raw request path into a root-relative path: no leading `/`, segments joined by
/// `/`, a trailing `/` kept, `""` for the root. Borrows when nothing needed decoding.
pub(crate) fn parse(raw: &str) -> Result<Cow<'_, str>, Refusal> {
    let rest = raw.strip_prefix('/').ok_or(Refusal::BadRequest)?;
    let simple = !rest.contains('%') && !rest.contains("//") && !rest.starts_with('/');
    let mut out = if simple {
        None
    } else {
        Some(String::with_capacity(rest.len()))
    };
    let mut first = true;
    let mut index = 0usize;
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            if last {
                if let Some(o) = out.as_mut() {
                    if !o.is_empty() && !o.ends_with('/') {
                        o.push('/');
                    }
                }
            }
            continue;
        }
        let decoded = decode(seg)?;
        check(&decoded, index)?;
        if let Some(o) = out.as_mut() {
            if !first {
                o.push('/');
            }
            o.push_str(&decoded);
        }
        first = false;
        index += 1;
    }
    Ok(match out {
        Some(o) => Cow::Owned(o),
        None => Cow::Borrowed(rest),
    })
}

fn decode(seg: &str) -> Result<Cow<'_, str>, Refusal> {
    if !seg.contains('%') {
        return Ok(Cow::Borrowed(seg));
    }
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| hex(*b));
            let lo = bytes.get(i + 2).and_then(|b| hex(*b));
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(Refusal::BadRequest),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| Refusal::BadRequest)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check(seg: &str, index: usize) -> Result<(), Refusal> {
    if seg == "." || seg == ".." {
        return Err(Refusal::BadRequest);
    }
    if seg
        .bytes()
        .any(|b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f)
    {
        return Err(Refusal::BadRequest);
    }
    if seg.starts_with('.') && !(index == 0 && seg == ".well-known") {
        return Err(Refusal::NotFound);
    }
    Ok(())
}

/// Whether a root-relative path (as found on disk, e.g. after following a symlink) may be
/// served: the same segment rules as request targets.
pub(crate) fn servable(rel: &str) -> bool {
    rel.split('/')
        .enumerate()
        .all(|(i, seg)| !seg.is_empty() && check(seg, i).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_borrow() {
        assert!(matches!(parse("/a/b.html"), Ok(Cow::Borrowed("a/b.html"))));
        assert_eq!(parse("/").unwrap(), "");
        assert_eq!(parse("/news/").unwrap(), "news/");
        assert_eq!(parse("/.well-known/x").unwrap(), ".well-known/x");
    }

    #[test]
    fn decoding_and_merging() {
        assert_eq!(parse("/a%20b/c").unwrap(), "a b/c");
        assert_eq!(parse("//etc//passwd").unwrap(), "etc/passwd");
        assert_eq!(parse("/news//").unwrap(), "news/");
        assert_eq!(parse("//").unwrap(), "");
        assert_eq!(parse("///a").unwrap(), "a");
        assert_eq!(parse("/%252e%252e/x").unwrap(), "%2e%2e/x");
        assert_eq!(
            parse("/tags/%C3%BCn%C3%AFcode%20tag/").unwrap(),
            "tags/ünïcode tag/"
        );
    }

    #[test]
    fn refusals() {
        use Refusal::*;
        for (t, want) in [
            ("/../etc/passwd", BadRequest),
            ("/a/./b", BadRequest),
            ("/%2e%2e/x", BadRequest),
            ("/a%2fb", BadRequest),
            ("/a%5cb", BadRequest),
            ("/a\\b", BadRequest),
            ("/a%00b", BadRequest),
            ("/%c0%ae%c0%ae/x", BadRequest),
            ("/%zz", BadRequest),
            ("/%4", BadRequest),
            ("x", BadRequest),
            ("/.tamizdat/state.db", NotFound),
            ("/.tamizdat-staging/x", NotFound),
            ("/a/.git/config", NotFound),
            ("/%2etamizdat/x", NotFound),
            ("/a/.well-known/x", NotFound),
        ] {
            assert_eq!(parse(t).unwrap_err(), want, "{t}");
        }
    }

    #[test]
    fn servable_paths() {
        assert!(servable("a/b.html"));
        assert!(servable(".well-known/x"));
        assert!(!servable(".tamizdat/x"));
        assert!(!servable("a/.hidden"));
    }
}

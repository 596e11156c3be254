//! Atom feeds and sitemaps: XML written directly, every field escaped.

use crate::render::{iso, push_iso};
use crate::store::DocRow;
use std::fmt::Write;

/// Escapes text for XML element content and attribute values, dropping characters that
/// XML 1.0 does not allow at all (most C0 controls).
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    push_xml_escaped(&mut out, s);
    out
}

/// Appends [`xml_escape`] of `s` to `out`, copying the runs between special characters
/// whole. Every character it changes or drops starts with a byte below 0x20, one of the five
/// ASCII specials, or 0xEF (U+FFFE and U+FFFF are EF BF BE and EF BF BF in UTF-8).
pub fn push_xml_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut from = 0;
    let mut i = 0;
    while i < bytes.len() {
        let (replace, len): (&str, usize) = match bytes[i] {
            b'&' => ("&amp;", 1),
            b'<' => ("&lt;", 1),
            b'>' => ("&gt;", 1),
            b'"' => ("&quot;", 1),
            b'\'' => ("&apos;", 1),
            b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b if b < 0x20 => ("", 1),
            0xEF if matches!(bytes.get(i + 1..i + 3), Some([0xBF, 0xBE | 0xBF])) => ("", 3),
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[from..i]);
        out.push_str(replace);
        i += len;
        from = i;
    }
    out.push_str(&s[from..]);
}

/// What a feed is about.
pub struct FeedMeta<'a> {
    pub title: &'a str,
    pub site_title: &'a str,
    /// Absolute URL of the feed itself.
    pub self_url: &'a str,
    /// Absolute URL of the HTML page the feed follows.
    pub page_url: &'a str,
}

/// An Atom 1.0 feed of `docs` (newest first, with bodies); `url_of` gives each entry's
/// absolute URL.
pub fn atom(meta: &FeedMeta<'_>, docs: &[DocRow], url_of: impl Fn(&DocRow) -> String) -> String {
    let updated = docs.iter().map(|d| d.updated_at).max().unwrap_or(0);
    let mut x = String::with_capacity(
        4096 + docs
            .iter()
            .map(|d| d.body_html.len() * 6 / 5)
            .sum::<usize>(),
    );
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n\
         <title>{}</title>\n<id>{}</id>\n<link rel=\"self\" type=\"application/atom+xml\" href=\"{}\"/>\n\
         <link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>\n<updated>{}</updated>\n\
         <author><name>{}</name></author>\n<generator>tamizdat-producer</generator>\n",
        xml_escape(meta.title),
        xml_escape(meta.page_url),
        xml_escape(meta.self_url),
        xml_escape(meta.page_url),
        iso(updated),
        xml_escape(meta.site_title),
    );
    for d in docs {
        let url = xml_escape(&url_of(d));
        let _ = write!(
            x,
            "<entry>\n<title>{}</title>\n<id>{url}</id>\n<link rel=\"alternate\" type=\"text/html\" href=\"{url}\"/>\n\
             <published>{}</published>\n<updated>{}</updated>\n",
            xml_escape(&d.title),
            iso(d.published_at),
            iso(d.updated_at),
        );
        for a in &d.authors {
            let _ = writeln!(x, "<author><name>{}</name></author>", xml_escape(a));
        }
        for t in &d.tags {
            let _ = writeln!(
                x,
                "<category term=\"{}\" label=\"{}\"/>",
                xml_escape(&t.slug),
                xml_escape(&t.name)
            );
        }
        if !d.summary.is_empty() {
            let _ = writeln!(x, "<summary>{}</summary>", xml_escape(&d.summary));
        }
        if !d.body_html.is_empty() {
            let _ = writeln!(
                x,
                "<content type=\"html\">{}</content>",
                xml_escape(&d.body_html)
            );
        }
        x.push_str("</entry>\n");
    }
    x.push_str("</feed>\n");
    x
}

/// A `<urlset>` of absolute URLs with their last modification.
pub fn urlset(urls: impl IntoIterator<Item = (String, Option<i64>)>) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for (loc, lastmod) in urls {
        x.push_str("<url><loc>");
        push_xml_escaped(&mut x, &loc);
        x.push_str("</loc>");
        if let Some(t) = lastmod {
            x.push_str("<lastmod>");
            push_iso(&mut x, t);
            x.push_str("</lastmod>");
        }
        x.push_str("</url>\n");
    }
    x.push_str("</urlset>\n");
    x
}

/// A `<sitemapindex>` pointing at the sitemap chunks.
pub fn sitemap_index(locs: impl IntoIterator<Item = String>) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<sitemapindex xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for loc in locs {
        x.push_str("<sitemap><loc>");
        push_xml_escaped(&mut x, &loc);
        x.push_str("</loc></sitemap>\n");
    }
    x.push_str("</sitemapindex>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_drops_invalid_controls() {
        assert_eq!(
            xml_escape("<a href=\"x\">T&J's</a>\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;T&amp;J&apos;s&lt;/a&gt;"
        );
        assert_eq!(
            xml_escape("a\tb\nc\rd\u{0}e\u{1f}f\u{FFFE}g\u{FFFF}h\u{FFFD}i\u{FEFF}j€"),
            "a\tb\nc\rdefgh\u{FFFD}i\u{FEFF}j€"
        );
    }

    #[test]
    fn escape_byte_by_byte_matches_char_by_char() {
        // The rule as written first, one char at a time, against every char class.
        fn by_char(s: &str) -> String {
            let mut out = String::new();
            for c in s.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&apos;"),
                    '\t' | '\n' | '\r' => out.push(c),
                    c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
                    c => out.push(c),
                }
            }
            out
        }
        let alphabet: Vec<char> = (0u32..0x80)
            .chain([
                0xE9, 0x20AC, 0xFEFF, 0xFFFD, 0xFFFE, 0xFFFF, 0xEFBF, 0x1F600,
            ])
            .filter_map(char::from_u32)
            .collect();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let s: String = (0..(seed % 24))
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            assert_eq!(xml_escape(&s), by_char(&s), "{s:?}");
        }
    }
}

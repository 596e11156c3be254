//! Bodies to safe HTML: Markdown through pulldown-cmark, then ammonia.
//!
//! Open-publishing sites take posts from anyone, so sanitising is on by default: whatever the
//! format, the HTML that reaches a page has no scripts, event handlers or `javascript:` links.
//! A trusted newsroom can turn it off (`--no-sanitize`).

use crate::cms::Format;
use pulldown_cmark::{html, Options, Parser};

/// Longest derived summary, in characters.
const SUMMARY_CHARS: usize = 280;

/// Renders a body to HTML, sanitised unless `sanitize` is false.
pub fn body_html(body: &str, format: Format, sanitize: bool) -> String {
    let raw = match format {
        Format::Html => body.to_string(),
        Format::Markdown => {
            let opts = Options::ENABLE_TABLES
                | Options::ENABLE_FOOTNOTES
                | Options::ENABLE_STRIKETHROUGH
                | Options::ENABLE_SMART_PUNCTUATION;
            let mut out = String::with_capacity(body.len() * 3 / 2);
            html::push_html(&mut out, Parser::new_ext(body, opts));
            out
        }
    };
    if sanitize {
        ammonia::clean(&raw)
    } else {
        raw
    }
}

/// Plain text of an HTML fragment: tags dropped, script and style contents dropped, entities
/// decoded, whitespace collapsed.
pub fn plain_text(html: &str) -> String {
    let stripped = ammonia::Builder::default()
        .tags(std::collections::HashSet::new())
        .clean(html)
        .to_string();
    let decoded = stripped
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A summary derived from the body when the author gave none: the first sentences of its
/// text, cut at a word boundary.
pub fn derive_summary(html: &str) -> String {
    let text = plain_text(html);
    if text.chars().count() <= SUMMARY_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(SUMMARY_CHARS).collect();
    if let Some(i) = cut.rfind(' ') {
        cut.truncate(i);
    }
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_handlers_are_removed() {
        let h = body_html(
            "<script>alert('b')</script><img src=x onerror=alert(1)> **bold**",
            Format::Markdown,
            true,
        );
        assert!(!h.contains("<script") && !h.contains("onerror"), "{h}");
        let h = body_html("<a href=\"javascript:alert(1)\">x</a>", Format::Html, true);
        assert!(!h.contains("javascript:"), "{h}");
    }

    #[test]
    fn trusted_mode_keeps_html() {
        let h = body_html(
            "<iframe src=\"https://v.example\"></iframe>",
            Format::Html,
            false,
        );
        assert!(h.contains("<iframe"));
    }

    #[test]
    fn summaries_are_plain_text() {
        assert_eq!(
            derive_summary("<p>Tom &amp; Jerry <b>ran</b></p><script>x()</script>"),
            "Tom & Jerry ran"
        );
        let long = format!("<p>{}</p>", "word ".repeat(200));
        let s = derive_summary(&long);
        assert!(s.ends_with('…') && s.chars().count() <= SUMMARY_CHARS + 1);
    }
}

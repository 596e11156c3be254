//! Templates to HTML (minijinja).
//!
//! A theme is a directory with any of `base.html`, `article.html`, `page.html`, `index.html`,
//! `tag.html` (also used for the archive), `_macros.html` and `style.css`; a file it lacks
//! comes from the built-in default theme. Every template is parsed at start-up, so a syntax
//! error stops the producer with the file name and line instead of failing on a publish.
//! HTML auto-escaping is on: only the sanitised body is inserted as markup.

use crate::store::DocRow;
use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::{Environment, Value};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Built-in theme files: name and contents.
const DEFAULT_THEME: &[(&str, &str)] = &[
    ("base.html", include_str!("../theme/base.html")),
    ("_macros.html", include_str!("../theme/_macros.html")),
    ("article.html", include_str!("../theme/article.html")),
    ("page.html", include_str!("../theme/page.html")),
    ("index.html", include_str!("../theme/index.html")),
    ("tag.html", include_str!("../theme/tag.html")),
];
const DEFAULT_CSS: &str = include_str!("../theme/style.css");

/// A template that failed to parse or render, named by file and line.
#[derive(Debug, thiserror::Error)]
#[error("template {file}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct TemplateError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl TemplateError {
    fn from_minijinja(file: &str, theme: Option<&Path>, e: &minijinja::Error) -> Self {
        let name = e.name().unwrap_or(file);
        let file = match theme {
            Some(dir) if dir.join(name).exists() => dir.join(name).display().to_string(),
            _ => format!("{name} (built-in theme)"),
        };
        let message = match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        };
        TemplateError {
            file,
            line: e.line(),
            message,
        }
    }
}

/// Site-wide values every template sees as `site`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteInfo {
    pub title: String,
    /// Absolute base URL without a trailing slash.
    pub url: String,
    pub description: String,
    pub lang: String,
}

/// A loaded theme.
pub struct Theme {
    env: Environment<'static>,
    dir: Option<PathBuf>,
    css: String,
}

impl Theme {
    /// Loads a theme directory over the built-in theme, parsing every template.
    pub fn load(dir: Option<&Path>) -> Result<Theme, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        env.set_formatter(html_formatter);
        for (name, builtin) in DEFAULT_THEME {
            let source = match dir.map(|d| d.join(name)) {
                Some(p) if p.exists() => {
                    std::fs::read_to_string(&p).map_err(|e| TemplateError {
                        file: p.display().to_string(),
                        line: None,
                        message: e.to_string(),
                    })?
                }
                _ => builtin.to_string(),
            };
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| TemplateError::from_minijinja(name, dir, &e))?;
        }
        let css = match dir.map(|d| d.join("style.css")) {
            Some(p) if p.exists() => std::fs::read_to_string(&p).map_err(|e| TemplateError {
                file: p.display().to_string(),
                line: None,
                message: e.to_string(),
            })?,
            _ => DEFAULT_CSS.to_string(),
        };
        Ok(Theme {
            env,
            dir: dir.map(Path::to_path_buf),
            css,
        })
    }

    /// The stylesheet, written to `/assets/style.css`.
    pub fn css(&self) -> &str {
        &self.css
    }

    /// Renders one template with a context.
    pub fn render(&self, name: &str, ctx: Value) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError::from_minijinja(name, self.dir.as_deref(), &e))?;
        tmpl.render(ctx)
            .map_err(|e| TemplateError::from_minijinja(name, self.dir.as_deref(), &e))
    }
}

/// Auto-escaping for HTML that leaves `/` alone (minijinja writes `&#x2f;`, which bloats
/// every URL in a page; `/` needs no escaping in HTML text or quoted attributes).
fn html_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(s) if state.auto_escape() == minijinja::AutoEscape::Html && !value.is_safe() => {
            write_html_escaped(out, s).map_err(minijinja::Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let _ = write_html_escaped(&mut out, s);
    out
}

/// Writes `s` escaped for HTML: the runs between the five special characters (all ASCII,
/// so never inside a multi-byte character) go out whole, with no copy of their own.
fn write_html_escaped(out: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        out.write_str(&s[from..i])?;
        out.write_str(esc)?;
        from = i + 1;
    }
    out.write_str(&s[from..])
}

/// A tag as templates see it.
#[derive(Debug, Serialize)]
pub struct TagView {
    pub name: String,
    pub slug: String,
    pub url: String,
}

/// A document as templates see it. `body` is the sanitised HTML, marked safe.
#[derive(Debug, Serialize)]
pub struct DocView {
    pub slug: String,
    pub kind: &'static str,
    pub title: String,
    pub url: String,
    pub summary: String,
    pub body: Value,
    pub tags: Vec<TagView>,
    pub authors: Vec<String>,
    pub published: String,
    pub published_date: String,
    pub updated: String,
    pub updated_date: String,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// RFC 3339 for `datetime` attributes and feeds: `2009-04-01T12:00:00Z`.
pub fn iso(ts: i64) -> String {
    let mut out = String::with_capacity(20);
    push_iso(&mut out, ts);
    out
}

/// Appends [`iso`] of `ts` to `out`. Written digit by digit for years 0 to 9999 (chrono's
/// formatting machinery was a fifth of a sitemap chunk's time: 500 dates), through chrono
/// otherwise, with the same bytes either way.
pub fn push_iso(out: &mut String, ts: i64) {
    use chrono::{Datelike, Timelike};
    let t = to_utc(ts);
    if !(0..=9999).contains(&t.year()) {
        out.push_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true));
        return;
    }
    push_digits(out, t.year() as u32, 4);
    out.push('-');
    push_digits(out, t.month(), 2);
    out.push('-');
    push_digits(out, t.day(), 2);
    out.push('T');
    push_digits(out, t.hour(), 2);
    out.push(':');
    push_digits(out, t.minute(), 2);
    out.push(':');
    push_digits(out, t.second(), 2);
    out.push('Z');
}

/// A date for readers: `1 April 2009` (chrono's `%-d %B %Y`, without parsing that pattern
/// on every call).
pub fn human_date(ts: i64) -> String {
    use chrono::Datelike;
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let t = to_utc(ts);
    if !(0..=9999).contains(&t.year()) {
        return t.format("%-d %B %Y").to_string();
    }
    let mut out = String::with_capacity(18);
    push_digits(&mut out, t.day(), 1);
    out.push(' ');
    out.push_str(MONTHS[t.month0() as usize]);
    out.push(' ');
    push_digits(&mut out, t.year() as u32, 4);
    out
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.push_str(std::str::from_utf8(&buf[start..]).expect("ASCII digits"));
}

pub fn to_utc(ts: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(ts, 0).unwrap_or_default()
}

impl DocView {
    pub fn new(doc: &DocRow, url: String) -> Self {
        DocView {
            slug: doc.slug.clone(),
            kind: doc.kind.as_str(),
            title: doc.title.clone(),
            url,
            summary: doc.summary.clone(),
            body: Value::from_safe_string(doc.body_html.clone()),
            tags: doc
                .tags
                .iter()
                .map(|t| TagView {
                    name: t.name.clone(),
                    slug: t.slug.clone(),
                    url: format!("/tags/{}/", t.slug),
                })
                .collect(),
            authors: doc.authors.clone(),
            published: iso(doc.published_at),
            published_date: human_date(doc.published_at),
            updated: iso(doc.updated_at),
            updated_date: human_date(doc.updated_at),
            extra: doc.extra.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_theme_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("article.html"), "line one\n{% if %}\n").unwrap();
        let err = Theme::load(Some(dir.path())).err().expect("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("article.html") && msg.contains("line 2"),
            "{msg}"
        );
    }

    #[test]
    fn dates_match_chronos_own_formatting() {
        let chrono_iso = |ts: i64| to_utc(ts).to_rfc3339_opts(SecondsFormat::Secs, true);
        let chrono_human = |ts: i64| to_utc(ts).format("%-d %B %Y").to_string();
        // Every day from 1890 to 2110 at a varying time, the edges of chrono's range and of
        // the digit-by-digit path, and values chrono cannot represent (which read as 1970).
        let mut stamps: Vec<i64> = (-2_500_000_000i64..4_450_000_000)
            .step_by(86_400)
            .enumerate()
            .map(|(i, t)| t + (i as i64 * 7919) % 86_400)
            .collect();
        stamps.extend([
            0,
            -1,
            59,
            -62_167_219_200, // 0000-01-01T00:00:00Z
            -62_167_219_201, // one second before year 0
            253_402_300_799, // 9999-12-31T23:59:59Z
            253_402_300_800, // 10000-01-01
            i64::MAX,
            i64::MIN,
        ]);
        for ts in stamps {
            assert_eq!(iso(ts), chrono_iso(ts), "iso({ts})");
            assert_eq!(human_date(ts), chrono_human(ts), "human_date({ts})");
        }
    }

    #[test]
    fn html_escaping_covers_the_five_and_keeps_the_rest() {
        assert_eq!(
            escape_html("<a href=\"x\">T&J's é/ü</a>"),
            "&lt;a href=&quot;x&quot;&gt;T&amp;J&#39;s é/ü&lt;/a&gt;"
        );
        assert_eq!(escape_html(""), "");
        assert_eq!(escape_html("plain"), "plain");
        assert_eq!(escape_html("&&"), "&amp;&amp;");
    }

    #[test]
    fn builtin_theme_escapes_fields() {
        let theme = Theme::load(None).unwrap();
        let ctx = minijinja::context! {
            site => SiteInfo { title: "<i>S</i>".into(), url: "http://x".into(), description: String::new(), lang: "en".into() },
            items => Vec::<DocView>::new(),
        };
        let html = theme.render("index.html", ctx).unwrap();
        assert!(
            html.contains("&lt;i&gt;S&lt;/i&gt;") && !html.contains("<i>S"),
            "{html}"
        );
    }
}

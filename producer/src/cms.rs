//! Publish events in: the document a CMS sends, and its validation.
//!
//! A document arrives as a JSON object (HTTP hook, `publish FILE.json`) or as Markdown with
//! front matter (converted to the same object by [`crate::frontmatter`]). Validation looks at
//! every field and reports every problem at once, one [`FieldError`] per bad field, so a CMS
//! author can fix a form in one round trip.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// Longest slug accepted, in bytes.
pub const MAX_SLUG_BYTES: usize = 128;
/// Longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 500;
/// Default limit on the size of `body`, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Room for every field but `body` in an encoded document, and for escaping around the body.
/// The other fields' own limits add up to well under half of it (`extra` 64 KiB, 50 tags and
/// 50 authors of 200 characters, a 2,000-character summary).
pub const DOCUMENT_OVERHEAD_BYTES: usize = 256 * 1024;
const MAX_TAGS: usize = 50;
const MAX_TAG_CHARS: usize = 100;
/// Longest tag slug, in bytes. It is a directory name (`tags/{slug}/`), and 100 characters of
/// four-byte letters would make a 400-byte one: over the 255-byte name limit of file systems,
/// which failed every render from then on. 200 leaves room for temporary names beside it.
pub const MAX_TAG_SLUG_BYTES: usize = 200;
const MAX_AUTHORS: usize = 50;
const MAX_SHORT_FIELD_CHARS: usize = 200;
const MAX_SUMMARY_CHARS: usize = 2000;
const MAX_EXTRA_BYTES: usize = 64 * 1024;

/// Slugs a `page` may not take, because the site's own listings live there.
const RESERVED_PAGE_SLUGS: &[&str] = &["tags", "archive", "media", "sitemaps", "assets"];

/// How the body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Markdown,
    Html,
}

/// An `article` is dated and listed; a `page` (about, contact) is neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Article,
    Page,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Article => "article",
            Kind::Page => "page",
        }
    }
}

/// A tag as written by the author, and the path-safe slug its pages live under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Tag {
    pub slug: String,
    pub name: String,
}

/// A validated document, ready for the store.
#[derive(Debug, Clone)]
pub struct Document {
    pub slug: String,
    pub title: String,
    pub body: String,
    pub format: Format,
    pub summary: Option<String>,
    pub tags: Vec<Tag>,
    pub authors: Vec<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub kind: Kind,
    pub extra: Map<String, Value>,
}

/// One problem with one field of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Limits that a deployment may tune.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
}

impl Limits {
    /// The largest a valid document can be as JSON or Markdown with front matter: twice the
    /// body (JSON escaping) plus [`DOCUMENT_OVERHEAD_BYTES`]. Larger input is refused unread.
    pub fn max_document_bytes(&self) -> usize {
        self.max_body_bytes
            .saturating_mul(2)
            .saturating_add(DOCUMENT_OVERHEAD_BYTES)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Checks a slug: 1 to 128 bytes of ASCII letters, digits, `-`, `_` and `.`, not starting
/// with `.` or `-`. Everything else (`/`, `..`, spaces, control characters) is refused, so a
/// slug is always exactly one safe path component.
pub fn check_slug(slug: &str) -> Result<(), String> {
    if slug.is_empty() {
        return Err("must not be empty".into());
    }
    if slug.len() > MAX_SLUG_BYTES {
        return Err(format!(
            "must be at most {MAX_SLUG_BYTES} bytes, got {}",
            slug.len()
        ));
    }
    if let Some(c) = slug
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "may contain only ASCII letters, digits, '-', '_' and '.', found {c:?}"
        ));
    }
    if slug.starts_with(['.', '-']) {
        return Err("must not start with '.' or '-'".into());
    }
    Ok(())
}

/// Turns a tag name into the slug of its pages: lower case, letters and digits kept (any
/// script), every other run of characters becomes one `-`.
pub fn tag_slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Parses a date: RFC 3339 (`2009-04-01T12:00:00Z`), a date and time without zone (taken
/// as UTC), or a plain date (midnight UTC). Years outside 1000..=9999 are refused because
/// they would not fit the `/{yyyy}/` path.
pub fn parse_date(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    let parsed = DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").map(|d| d.and_utc()))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").map(|d| d.and_utc()))
        .or_else(|_| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        })
        .map_err(|_| {
            format!("{s:?} is not a date; use RFC 3339 like 2009-04-01T12:00:00Z or 2009-04-01")
        })?;
    let year = chrono::Datelike::year(&parsed);
    if !(1000..=9999).contains(&year) {
        return Err(format!("year {year} is outside 1000..=9999"));
    }
    Ok(parsed)
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

/// Validates a JSON document. Returns every problem found, one per field.
pub fn parse_document(value: Value, limits: &Limits) -> Result<Document, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Value::Object(mut map) = value else {
        return Err(vec![FieldError::new(
            "document",
            "must be a JSON object with at least slug and title",
        )]);
    };
    let mut take = |k: &str| map.remove(k);
    let (slug, title, body, format, summary) = (
        take("slug"),
        take("title"),
        take("body"),
        take("format"),
        take("summary"),
    );
    let (tags, authors, published, updated, kind, extra) = (
        take("tags"),
        take("authors"),
        take("published_at"),
        take("updated_at"),
        take("kind"),
        take("extra"),
    );
    for key in map.keys() {
        errors.push(FieldError::new(key.as_str(), "unknown field"));
    }

    let slug = match slug {
        Some(Value::String(s)) => match check_slug(&s) {
            Ok(()) => s,
            Err(m) => {
                errors.push(FieldError::new("slug", m));
                String::new()
            }
        },
        None | Some(Value::Null) => {
            errors.push(FieldError::new("slug", "is required"));
            String::new()
        }
        Some(_) => {
            errors.push(FieldError::new("slug", "must be a string"));
            String::new()
        }
    };

    let title = match title {
        Some(Value::String(s)) if s.trim().is_empty() => {
            errors.push(FieldError::new("title", "must not be empty"));
            String::new()
        }
        Some(Value::String(s)) if s.chars().count() > MAX_TITLE_CHARS => {
            errors.push(FieldError::new(
                "title",
                format!("must be at most {MAX_TITLE_CHARS} characters"),
            ));
            String::new()
        }
        Some(Value::String(s)) if has_control(&s) => {
            errors.push(FieldError::new(
                "title",
                "must not contain control characters",
            ));
            String::new()
        }
        Some(Value::String(s)) => s.trim().to_string(),
        None | Some(Value::Null) => {
            errors.push(FieldError::new("title", "is required"));
            String::new()
        }
        Some(_) => {
            errors.push(FieldError::new("title", "must be a string"));
            String::new()
        }
    };

    let body = match body {
        Some(Value::String(s)) if s.len() > limits.max_body_bytes => {
            errors.push(FieldError::new(
                "body",
                format!(
                    "is {} bytes, over the limit of {} bytes",
                    s.len(),
                    limits.max_body_bytes
                ),
            ));
            String::new()
        }
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            errors.push(FieldError::new("body", "must be a string"));
            String::new()
        }
    };

    let format = match format.as_ref().map(|v| v.as_str()) {
        None | Some(Some("markdown")) => Format::Markdown,
        Some(Some("html")) => Format::Html,
        _ if matches!(format, Some(Value::Null)) => Format::Markdown,
        _ => {
            errors.push(FieldError::new(
                "format",
                "unknown format; use \"markdown\" or \"html\"",
            ));
            Format::Markdown
        }
    };

    let kind = match kind.as_ref().map(|v| v.as_str()) {
        None | Some(Some("article")) => Kind::Article,
        Some(Some("page")) => Kind::Page,
        _ if matches!(kind, Some(Value::Null)) => Kind::Article,
        _ => {
            errors.push(FieldError::new(
                "kind",
                "unknown kind; use \"article\" or \"page\"",
            ));
            Kind::Article
        }
    };
    // A page lives at /{slug}/, beside the site's own files and year directories.
    if kind == Kind::Page
        && (RESERVED_PAGE_SLUGS.contains(&slug.as_str())
            || slug.contains('.')
            || (!slug.is_empty() && slug.chars().all(|c| c.is_ascii_digit())))
    {
        errors.push(FieldError::new(
            "slug",
            format!("{slug:?} is reserved for the site's own files (a page slug has no '.' and is not a number)"),
        ));
    }

    let summary = match summary {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() > MAX_SUMMARY_CHARS => {
            errors.push(FieldError::new(
                "summary",
                format!("must be at most {MAX_SUMMARY_CHARS} characters"),
            ));
            None
        }
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => {
            errors.push(FieldError::new("summary", "must be a string"));
            None
        }
    };

    let tags = string_list("tags", tags, MAX_TAGS, MAX_TAG_CHARS, &mut errors);
    let mut tag_list: Vec<Tag> = Vec::new();
    for (i, name) in tags.into_iter().enumerate() {
        let slug = tag_slug(&name);
        if slug.is_empty() {
            errors.push(FieldError::new(
                format!("tags[{i}]"),
                "must contain at least one letter or digit",
            ));
        } else if slug.len() > MAX_TAG_SLUG_BYTES {
            errors.push(FieldError::new(
                format!("tags[{i}]"),
                format!(
                    "is too long for a page name: its slug {:?}… is {} bytes, at most {MAX_TAG_SLUG_BYTES}",
                    slug.chars().take(10).collect::<String>(),
                    slug.len()
                ),
            ));
        } else if !tag_list.iter().any(|t| t.slug == slug) {
            tag_list.push(Tag {
                slug,
                name: name.trim().to_string(),
            });
        }
    }
    let authors = string_list(
        "authors",
        authors,
        MAX_AUTHORS,
        MAX_SHORT_FIELD_CHARS,
        &mut errors,
    );

    let published_at = date_field("published_at", published, &mut errors);
    let updated_at = date_field("updated_at", updated, &mut errors);

    let extra = match extra {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            if Value::Object(m.clone()).to_string().len() > MAX_EXTRA_BYTES {
                errors.push(FieldError::new(
                    "extra",
                    format!("must be at most {MAX_EXTRA_BYTES} bytes as JSON"),
                ));
            }
            m
        }
        Some(_) => {
            errors.push(FieldError::new("extra", "must be an object"));
            Map::new()
        }
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Document {
        slug,
        title,
        body,
        format,
        summary,
        tags: tag_list,
        authors,
        published_at,
        updated_at,
        kind,
        extra,
    })
}

fn string_list(
    field: &str,
    value: Option<Value>,
    max_items: usize,
    max_chars: usize,
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::String(s)) => vec![Value::String(s)],
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(FieldError::new(field, "must be a list of strings"));
            return Vec::new();
        }
    };
    if items.len() > max_items {
        errors.push(FieldError::new(
            field,
            format!("must have at most {max_items} entries"),
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::String(s) if s.chars().count() > max_chars => errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!("must be at most {max_chars} characters"),
            )),
            Value::String(s) if has_control(&s) => errors.push(FieldError::new(
                format!("{field}[{i}]"),
                "must not contain control characters",
            )),
            Value::String(s) if s.trim().is_empty() => errors.push(FieldError::new(
                format!("{field}[{i}]"),
                "must not be empty",
            )),
            Value::String(s) => out.push(s),
            _ => errors.push(FieldError::new(format!("{field}[{i}]"), "must be a string")),
        }
    }
    out
}

fn date_field(
    field: &str,
    value: Option<Value>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match parse_date(&s) {
            Ok(d) => Some(d),
            Err(m) => {
                errors.push(FieldError::new(field, m));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(field, "must be a date string"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Vec<String> {
        parse_document(v, &Limits::default())
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn hostile_slugs_are_refused() {
        for s in [
            "../x",
            "a/b",
            "",
            &"x".repeat(300),
            "tab\there",
            ".hidden",
            "a b",
            "é",
        ] {
            assert!(check_slug(s).is_err(), "{s:?} accepted");
        }
        for s in ["report-1", "A_b.c", "2009"] {
            assert!(check_slug(s).is_ok(), "{s:?} refused");
        }
    }

    #[test]
    fn every_bad_field_is_reported_once() {
        let got = fields(json!({
            "slug": "../x", "published_at": "yesterday", "format": "rtf",
            "body": "x".repeat(DEFAULT_MAX_BODY_BYTES + 1), "tags": ["ok", "!!!"], "colour": 1
        }));
        let mut want = vec![
            "colour",
            "slug",
            "title",
            "body",
            "format",
            "tags[1]",
            "published_at",
        ];
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want, "{got:?}");
    }

    #[test]
    fn tags_get_path_safe_slugs() {
        assert_eq!(tag_slug("<b>tag</b>"), "b-tag-b");
        assert_eq!(tag_slug("G20 London"), "g20-london");
        assert_eq!(tag_slug("Ünïcode"), "ünïcode");
        assert_eq!(tag_slug("../.."), "");
    }

    #[test]
    fn dates_in_common_shapes_parse() {
        for s in [
            "2009-04-01T12:00:00Z",
            "2009-04-01T14:00:00+02:00",
            "2009-04-01",
            "2009-04-01 12:00:00",
        ] {
            assert_eq!(chrono::Datelike::month(&parse_date(s).unwrap()), 4, "{s}");
        }
        assert!(parse_date("yesterday").is_err());
        assert!(parse_date("0099-01-01").is_err());
    }
}

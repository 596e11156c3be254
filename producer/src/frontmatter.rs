//! Markdown files with front matter, for `publish FILE.md` and `watch DIR`.
//!
//! TOML between `+++` lines or YAML between `---` lines, then the Markdown body. The result is
//! the same JSON object the HTTP hook takes, so one validator ([`crate::cms`]) judges both.
//! A missing `slug` defaults to the file name without its extension.
//!
//! Hostile files get an error, never a panic or an unbounded allocation: a file over
//! [`Limits::max_document_bytes`] is refused unread, front matter over
//! [`MAX_FRONT_MATTER_BYTES`] before it is parsed, and YAML nesting brackets deeper than
//! [`MAX_YAML_FLOW_DEPTH`] before it is parsed (libyaml's scanner is quadratic in that depth:
//! 20,000 `[` took 2.6 s). The parsers bound other nesting and YAML alias expansion
//! themselves. Error messages quote at most a short snippet of the input.

use crate::cms::{Limits, DOCUMENT_OVERHEAD_BYTES};
use serde_json::{Map, Value};
use std::path::Path;

/// Longest front matter accepted, in bytes: every field but the body fits in far less.
pub const MAX_FRONT_MATTER_BYTES: usize = DOCUMENT_OVERHEAD_BYTES;
/// Deepest nesting of `[` and `{` accepted in YAML front matter; serde_yaml refuses deeper
/// documents anyway, after scanning them.
pub const MAX_YAML_FLOW_DEPTH: usize = 128;
/// Longest parser message passed on whole; longer ones (a snippet of a huge line) are cut.
const MAX_ERROR_CHARS: usize = 1024;

/// Why a file could not be turned into a document object.
#[derive(Debug, thiserror::Error)]
pub enum FrontMatterError {
    #[error("front matter starts with {0} but has no closing {0} line")]
    Unclosed(&'static str),
    #[error("TOML front matter: {0}")]
    Toml(String),
    #[error("YAML front matter: {0}")]
    Yaml(String),
    #[error("YAML front matter nests '[' and '{{' deeper than {MAX_YAML_FLOW_DEPTH} levels")]
    TooDeep,
    #[error("front matter must be a table of keys, not a single value")]
    NotATable,
    #[error("front matter is over the limit of {MAX_FRONT_MATTER_BYTES} bytes")]
    TooLarge,
}

/// Splits `text` into its front matter (as a JSON object) and body.
pub fn parse_markdown(text: &str, default_slug: Option<&str>) -> Result<Value, FrontMatterError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (mut map, body) = if let Some((fm, body)) = split(text, "+++")? {
        let table: toml::Table = toml::from_str(fm).map_err(|e| {
            FrontMatterError::Toml(short_message(e.to_string(), || {
                format!("{} at bytes {:?}", e.message().trim(), e.span())
            }))
        })?;
        (toml_to_json(toml::Value::Table(table)), body)
    } else if let Some((fm, body)) = split(text, "---")? {
        if flow_depth(fm) > MAX_YAML_FLOW_DEPTH {
            return Err(FrontMatterError::TooDeep);
        }
        let v: serde_yaml::Value = serde_yaml::from_str(fm)
            .map_err(|e| FrontMatterError::Yaml(short_message(e.to_string(), String::new)))?;
        let v = if v.is_null() {
            Value::Object(Map::new())
        } else {
            serde_json::to_value(v).map_err(|_| FrontMatterError::NotATable)?
        };
        (v, body)
    } else {
        (Value::Object(Map::new()), text)
    };
    let Value::Object(obj) = &mut map else {
        return Err(FrontMatterError::NotATable);
    };
    obj.insert("body".into(), Value::String(body.to_string()));
    obj.entry("format").or_insert_with(|| "markdown".into());
    if let Some(slug) = default_slug {
        obj.entry("slug").or_insert_with(|| slug.into());
    }
    Ok(map)
}

/// Reads a `.json` or Markdown file into a document object.
pub fn read_document_file(path: &Path, limits: &Limits) -> anyhow::Result<Value> {
    use anyhow::Context;
    use std::io::Read;
    let max = limits.max_document_bytes();
    let file =
        std::fs::File::open(path).with_context(|| format!("Failed to open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("Failed to read {}", path.display()))?;
    if bytes.len() > max {
        anyhow::bail!(
            "{} is over the limit of {max} bytes for a document (see --max-body-bytes)",
            path.display()
        );
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    if is_json {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()));
    }
    let stem = path.file_stem().and_then(|s| s.to_str());
    parse_markdown(&text, stem).with_context(|| format!("In {}", path.display()))
}

fn split<'a>(
    text: &'a str,
    fence: &'static str,
) -> Result<Option<(&'a str, &'a str)>, FrontMatterError> {
    let Some(rest) = text.strip_prefix(fence) else {
        return Ok(None);
    };
    let Some(rest) = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
    else {
        return Ok(None);
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == fence {
            let body = &rest[offset + line.len()..];
            return Ok(Some((&rest[..offset], body)));
        }
        offset += line.len();
        if offset > MAX_FRONT_MATTER_BYTES {
            return Err(FrontMatterError::TooLarge);
        }
    }
    Err(FrontMatterError::Unclosed(fence))
}

/// `full`, or when that is too long, `short()` (or `full` cut, if `short()` is empty).
fn short_message(full: String, short: impl FnOnce() -> String) -> String {
    if full.chars().count() <= MAX_ERROR_CHARS {
        return full;
    }
    let short = short();
    if !short.is_empty() && short.chars().count() <= MAX_ERROR_CHARS {
        return short;
    }
    let cut: String = full.chars().take(MAX_ERROR_CHARS).collect();
    format!("{cut}…")
}

/// The deepest nesting of `[` and `{` in `text`, counting brackets inside strings too (a
/// string needs over a hundred unclosed brackets to be refused by this).
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_front_matter_with_native_dates() {
        let v = parse_markdown(
            "+++\ntitle = \"Hi\"\npublished_at = 2009-04-01T12:00:00Z\ntags = [\"a\"]\n+++\n# Body\n",
            Some("file-stem"),
        )
        .unwrap();
        assert_eq!(v["title"], "Hi");
        assert_eq!(v["published_at"], "2009-04-01T12:00:00Z");
        assert_eq!(v["slug"], "file-stem");
        assert_eq!(v["body"], "# Body\n");
    }

    #[test]
    fn yaml_front_matter_and_none() {
        let v = parse_markdown("---\ntitle: Hi\nslug: s\n---\nText", None).unwrap();
        assert_eq!(
            (v["title"].as_str(), v["slug"].as_str()),
            (Some("Hi"), Some("s"))
        );
        assert_eq!(v["body"], "Text");
        let v = parse_markdown("Just text", Some("x")).unwrap();
        assert_eq!(v["body"], "Just text");
    }

    #[test]
    fn unclosed_front_matter_is_an_error() {
        assert!(parse_markdown("+++\ntitle = 'x'\n", None).is_err());
    }
}

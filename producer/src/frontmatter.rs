//! Markdown files with front matter, for `publish FILE.md` and `watch DIR`.
//!
//! TOML between `+++` lines or YAML between `---` lines, then the Markdown body. The result is
//! the same JSON object the HTTP hook takes, so one validator ([`crate::cms`]) judges both.
//! A missing `slug` defaults to the file name without its extension.

use serde_json::{Map, Value};
use std::path::Path;

/// Why a file could not be turned into a document object.
#[derive(Debug, thiserror::Error)]
pub enum FrontMatterError {
    #[error("front matter starts with {0} but has no closing {0} line")]
    Unclosed(&'static str),
    #[error("TOML front matter: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("YAML front matter: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("front matter must be a table of keys, not a single value")]
    NotATable,
}

/// Splits `text` into its front matter (as a JSON object) and body.
pub fn parse_markdown(text: &str, default_slug: Option<&str>) -> Result<Value, FrontMatterError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (mut map, body) = if let Some((fm, body)) = split(text, "+++")? {
        let table: toml::Table = toml::from_str(fm)?;
        (toml_to_json(toml::Value::Table(table)), body)
    } else if let Some((fm, body)) = split(text, "---")? {
        let v: serde_yaml::Value = serde_yaml::from_str(fm)?;
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
pub fn read_document_file(path: &Path) -> anyhow::Result<Value> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Failed to read {}", path.display()))?;
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
    }
    Err(FrontMatterError::Unclosed(fence))
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

//! Settings for the server, with defaults that need no config file.

use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use http::HeaderValue;
use ipnet::IpNet;

/// Everything the server can be told. `ServeOptions::default()` is a sane production setup.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The health endpoint answers 503 once `lag_seconds` exceeds this. Default 60 s.
    pub lag_threshold: Duration,
    /// `Cache-Control` by glob on the served file's root-relative path.
    pub cache_control: CacheControlRules,
    /// Where the access log (combined format) goes. Default: nowhere.
    pub access_log: AccessLogTarget,
    /// Peers whose `X-Forwarded-For` is believed. Default: none.
    pub trusted_proxies: Vec<IpNet>,
    /// Connections served at once; further ones wait in the kernel's backlog. Default 1024.
    pub max_connections: usize,
    /// A client must send a request's whole header within this, also between keep-alive
    /// requests (a slowloris client is dropped). Default 10 s.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved for this long is closed (gracefully first, then
    /// dropped after another such period, e.g. a client that stopped reading). Default 60 s.
    pub idle_timeout: Duration,
    /// On shutdown, in-flight responses get this long to finish. Default 10 s.
    pub shutdown_grace: Duration,
    /// Total bytes of file bodies held in memory. 0 turns the hot cache off. Default 32 MiB.
    pub hot_cache_bytes: usize,
    /// Files (and precompressed variants) up to this size are held in the hot cache; larger
    /// ones are streamed from disk. Default 256 KiB.
    pub hot_cache_max_file: u64,
    /// A hot-cache entry older than this is checked against the disk again before use, so a
    /// change made without [`Site::publish`](crate::Site::publish) still shows up within this
    /// time. Changes published through the gate are seen at once. Default 2 s.
    pub revalidate_after: Duration,
    /// Send file bodies the page cache holds with `sendfile(2)` instead of copying them
    /// through a buffer. Default on; off is for comparing the two.
    pub zero_copy: bool,
    /// A server thread gives up its core (`sched_yield`) after every this many responses, so
    /// that threads waiting for a core (the clients of a busy machine, the engine, the other
    /// HTTP threads) run within a few hundred requests rather than at the scheduler's next
    /// tick. When nothing else is waiting it returns at once. 0: never. Default 32.
    pub yield_every: u32,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            lag_threshold: Duration::from_secs(60),
            cache_control: CacheControlRules::default(),
            access_log: AccessLogTarget::Off,
            trusted_proxies: Vec::new(),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            hot_cache_bytes: 32 << 20,
            hot_cache_max_file: 256 << 10,
            revalidate_after: Duration::from_secs(2),
            zero_copy: true,
            yield_every: 32,
        }
    }
}

/// Parses a trusted proxy as a network (`10.0.0.0/8`, `2001:db8::/32`) or a single address
/// (`10.0.0.1` → `/32`, `::1` → `/128`), e.g. as a clap `value_parser`.
pub fn parse_ip_net(s: &str) -> Result<IpNet, ipnet::AddrParseError> {
    match s.trim().parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => s.trim().parse(),
    }
}

/// Where access log lines go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log.
    #[default]
    Off,
    /// One line per request on standard output.
    Stdout,
    /// Appended to this file (created if missing).
    File(PathBuf),
}

/// An error in a `Cache-Control` rule from the config.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The glob does not parse.
    #[error("bad glob {glob:?} in a Cache-Control rule: {source}")]
    Glob {
        glob: String,
        source: globset::Error,
    },
    /// The value is not a valid header value.
    #[error("bad Cache-Control value {value:?} for glob {glob:?}")]
    Value { glob: String, value: String },
}

/// `Cache-Control` values chosen by the first glob that matches the served file's path
/// (root-relative, e.g. `news/index.html`; `*` also crosses `/`).
///
/// Rules given to [`CacheControlRules::new`] are tried before [`DEFAULT_CACHE_RULES`].
#[derive(Debug, Clone)]
pub struct CacheControlRules {
    set: GlobSet,
    values: Vec<HeaderValue>,
    fallback: HeaderValue,
}

/// The built-in rules, tried after the configured ones, in order. Files no rule matches get
/// [`DEFAULT_CACHE_CONTROL`].
pub const DEFAULT_CACHE_RULES: &[(&str, &str)] = &[
    // Fingerprinted assets (`app.3f9a2b1c.css`): the name changes whenever the bytes do.
    (
        "*.[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*.{css,js,mjs,woff,woff2,ttf,otf,svg,png,jpg,jpeg,gif,webp,avif}",
        "public, max-age=31536000, immutable",
    ),
    // Pages and feeds: short, so corrections reach readers within a minute.
    (
        "*.{html,htm,xml,rss,atom,json,txt}",
        "public, max-age=60, must-revalidate",
    ),
    // Media: long; they are rarely replaced, and the ETag still validates afterwards.
    (
        "*.{jpg,jpeg,png,gif,webp,avif,svg,ico,mp3,mp4,m4a,m4v,webm,ogg,ogv,oga,opus,flac,wav,mov,mkv,pdf,woff,woff2,ttf,otf,zip}",
        "public, max-age=604800",
    ),
];

/// `Cache-Control` for files that no rule matches.
pub const DEFAULT_CACHE_CONTROL: &str = "public, max-age=300";

impl CacheControlRules {
    /// Configured rules `(glob, value)`, tried in order before the defaults.
    pub fn new<G, V>(rules: impl IntoIterator<Item = (G, V)>) -> Result<Self, RuleError>
    where
        G: AsRef<str>,
        V: AsRef<str>,
    {
        let mut builder = GlobSetBuilder::new();
        let mut values = Vec::new();
        let defaults = DEFAULT_CACHE_RULES.iter().map(|(g, v)| (*g, *v));
        let given: Vec<(String, String)> = rules
            .into_iter()
            .map(|(g, v)| (g.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        for (glob, value) in given
            .iter()
            .map(|(g, v)| (g.as_str(), v.as_str()))
            .chain(defaults)
        {
            let g = Glob::new(glob).map_err(|source| RuleError::Glob {
                glob: glob.to_owned(),
                source,
            })?;
            builder.add(g);
            values.push(HeaderValue::from_str(value).map_err(|_| RuleError::Value {
                glob: glob.to_owned(),
                value: value.to_owned(),
            })?);
        }
        let set = builder.build().map_err(|source| RuleError::Glob {
            glob: String::new(),
            source,
        })?;
        Ok(CacheControlRules {
            set,
            values,
            fallback: HeaderValue::from_static(DEFAULT_CACHE_CONTROL),
        })
    }

    /// The value for a root-relative file path.
    pub fn for_path(&self, rel: &str) -> HeaderValue {
        match self.set.matches(rel).into_iter().min() {
            Some(i) => self.values[i].clone(),
            None => self.fallback.clone(),
        }
    }
}

impl Default for CacheControlRules {
    fn default() -> Self {
        CacheControlRules::new(std::iter::empty::<(&str, &str)>())
            .expect("the built-in Cache-Control rules parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_as_networks_or_addresses() {
        assert_eq!(
            parse_ip_net("10.0.0.1").unwrap(),
            "10.0.0.1/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_ip_net("::1").unwrap(),
            "::1/128".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_ip_net("10.0.0.0/8").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert!(parse_ip_net("nope").is_err());
    }

    #[test]
    fn defaults_and_overrides() {
        let d = CacheControlRules::default();
        assert_eq!(
            d.for_path("news/index.html"),
            "public, max-age=60, must-revalidate"
        );
        assert_eq!(
            d.for_path("feed.xml"),
            "public, max-age=60, must-revalidate"
        );
        assert_eq!(d.for_path("media/a.jpg"), "public, max-age=604800");
        assert_eq!(
            d.for_path("assets/app.3f9a2b1c.css"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(d.for_path("assets/app.css"), DEFAULT_CACHE_CONTROL);
        let r = CacheControlRules::new([("media/**", "no-store")]).unwrap();
        assert_eq!(r.for_path("media/a.jpg"), "no-store");
        assert_eq!(r.for_path("b.jpg"), "public, max-age=604800");
        assert!(CacheControlRules::new([("a[", "x")]).is_err());
        assert!(CacheControlRules::new([("*", "a\nb")]).is_err());
    }
}

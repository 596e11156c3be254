//! What both daemons (`tamizdat-distributor serve`, `tamizdat-mirror run`) do before their real
//! work, kept in one place: read `--config FILE` (TOML) into flags, set up logging, wait for a
//! shutdown signal.
//!
//! # Config files
//! `--config FILE` is replaced, where it stands on the command line, by one flag per key of the
//! TOML file: `max-lag = 30` becomes `--max-lag 30`, `no-default-ignores = true` becomes
//! `--no-default-ignores` (`false` leaves it out), and an array repeats the flag. A key also
//! given on the command line is skipped, so the command line wins. Keys are the long flag
//! names, so `--help` documents them, and an unknown key is refused like an unknown flag.

use std::ffi::OsString;
use std::path::Path;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--config needs a file name")]
    Missing,
    #[error("Failed to read the config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: key {key:?}: {why}")]
    Value {
        path: String,
        key: String,
        why: &'static str,
    },
}

/// The process's arguments with `--config FILE` expanded (see the module docs).
pub fn args_with_config(
    args: impl IntoIterator<Item = OsString>,
) -> Result<Vec<OsString>, ConfigError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        let file = if a == "--config" {
            i += 1;
            Some(args.get(i).ok_or(ConfigError::Missing)?.clone())
        } else {
            a.strip_prefix("--config=").map(OsString::from)
        };
        match file {
            Some(f) => out.extend(flags(Path::new(&f), &args)?),
            None => out.push(args[i].clone()),
        }
        i += 1;
    }
    Ok(out)
}

fn flags(path: &Path, given: &[OsString]) -> Result<Vec<OsString>, ConfigError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: p.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
        path: p.clone(),
        source,
    })?;
    let on_command_line = |flag: &str| {
        given.iter().any(|g| {
            let g = g.to_string_lossy();
            g == flag || g.starts_with(&format!("{flag}="))
        })
    };
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = format!("--{key}");
        if key == "config" || key.starts_with('-') || key.contains('=') {
            return Err(ConfigError::Value {
                path: p,
                key,
                why: "not a flag name",
            });
        }
        if on_command_line(&flag) {
            continue;
        }
        let values = match value {
            toml::Value::Array(a) => a,
            v => vec![v],
        };
        for v in values {
            let s = match v {
                toml::Value::Boolean(true) => {
                    out.push(OsString::from(&flag));
                    continue;
                }
                toml::Value::Boolean(false) => continue,
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => {
                    return Err(ConfigError::Value {
                        path: p,
                        key,
                        why: "values are strings, numbers, booleans or arrays of them",
                    })
                }
            };
            out.push(OsString::from(format!("{flag}={s}")));
        }
    }
    Ok(out)
}

/// Logging to stderr, filtered by `RUST_LOG` (default `info`). `json`: one JSON object per
/// line; `human` (or its old name `pretty`): text, coloured only when stderr is a terminal.
pub fn init_logging(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(file: &str, args: &[&str]) -> Result<Vec<String>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let args = args
            .iter()
            .map(|a| a.replace("FILE", path.to_str().unwrap()).into());
        Ok(args_with_config(args)?
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn keys_become_flags_and_the_command_line_wins() {
        let got = expand(
            "root = \"/srv/m\"\nmax-lag = 30\nverbose = true\nquiet = false\n\
             trusted-proxy = [\"10.0.0.1\", \"10.0.0.2\"]\n",
            &["m", "run", "--config", "FILE", "--max-lag", "5"],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "m",
                "run",
                "--root=/srv/m",
                "--trusted-proxy=10.0.0.1",
                "--trusted-proxy=10.0.0.2",
                "--verbose",
                "--max-lag",
                "5"
            ]
        );
        assert_eq!(
            expand("x = 1", &["m", "--config=FILE"]).unwrap(),
            ["m", "--x=1"]
        );
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(matches!(
            expand("root = ", &["m", "--config", "FILE"]),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            expand("[section]\na = 1", &["m", "--config", "FILE"]),
            Err(ConfigError::Value { .. })
        ));
        assert!(matches!(
            expand("config = \"x\"", &["m", "--config", "FILE"]),
            Err(ConfigError::Value { .. })
        ));
        assert!(matches!(
            expand("", &["m", "--config"]),
            Err(ConfigError::Missing)
        ));
        assert!(matches!(
            expand("", &["m", "--config", "/nonexistent/x.toml"]),
            Err(ConfigError::Read { .. })
        ));
    }
}

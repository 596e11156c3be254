//! Reaching upstream: TCP, then TLS for `wss://`, then the WebSocket handshake.
//!
//! The server certificate is checked against Mozilla's root store compiled into the binary
//! (`webpki-roots`), or with `--ca-file` against that CA only. Compiled-in roots rather than
//! the host's store: a mirror host may carry a locally installed interception root (some
//! networks make their users install one), and minimal containers often have no store at all.
//! rustls with the `ring` provider only, passed explicitly.

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;
use tracing::warn;

/// Whom a `wss://` upstream's certificate must chain to.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    /// What is trusted, for logs and errors.
    trust: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({})", self.trust)
    }
}

impl Default for Tls {
    fn default() -> Self {
        Self::web_roots()
    }
}

impl Tls {
    /// Trusts the public web's certificate authorities (Mozilla's root store).
    pub fn web_roots() -> Tls {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Tls {
            config: client_config(roots),
            trust: "the public web's roots".into(),
        }
    }

    /// Trusts only the CA certificates in the PEM file `ca_file` (a pinned CA).
    pub fn pinned(ca_file: &Path) -> Result<Tls> {
        let certs = CertificateDer::pem_file_iter(ca_file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("Failed to read the CA file {}", ca_file.display()))?;
        if certs.is_empty() {
            bail!(
                "Failed to read the CA file {}: no PEM CERTIFICATE in it",
                ca_file.display()
            );
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).with_context(|| {
                format!(
                    "The CA file {} holds an unusable certificate",
                    ca_file.display()
                )
            })?;
        }
        Ok(Tls {
            config: client_config(roots),
            trust: format!("the CA in {}", ca_file.display()),
        })
    }
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The stream to upstream: plain TCP, or TLS over it.
pub type Upstream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Connects to a `ws://` or `wss://` URL and completes the WebSocket handshake (the same
/// answer as `tokio_tungstenite::connect_async_with_config`).
pub async fn connect(
    url: &str,
    config: WebSocketConfig,
    tls: &Tls,
) -> Result<(WebSocketStream<Upstream>, Response)> {
    let request = url
        .into_client_request()
        .with_context(|| format!("Bad upstream URL {url}"))?;
    let uri = request.uri();
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => bail!("Bad upstream URL {url}: it must start with ws:// or wss://"),
    };
    let host = uri
        .host()
        .with_context(|| format!("Bad upstream URL {url}: no host"))?;
    // IPv6 literals come bracketed.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("Failed to connect to {host}:{port}"))?;
    let _ = tcp.set_nodelay(true);
    let stream = if secure {
        let name = ServerName::try_from(host.clone())
            .with_context(|| format!("Bad upstream URL {url}: {host} is not a host name"))?;
        let tls_stream = TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(e, url, tls))?;
        Either::Right(Box::new(tls_stream))
    } else {
        if !is_loopback(&host) {
            warn!(upstream = %url, "the link to upstream is not encrypted (ws://); use wss:// unless a TLS-terminating proxy is in between");
        }
        Either::Left(tcp)
    };
    tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .with_context(|| format!("WebSocket handshake with {url} failed"))
}

/// Names a certificate problem as such: it will not go away by retrying, an operator has to act.
fn handshake_error(e: io::Error, url: &str, tls: &Tls) -> anyhow::Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(why)) => anyhow!(
            "certificate not trusted: {url} presented a certificate that does not check out against {}: {why:?}",
            tls.trust
        ),
        _ => anyhow!("TLS handshake with {url} failed: {e}"),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST",
            "a.localhost",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.org",
            "10.0.0.1",
            "192.168.1.1",
            "::2",
            "localhost.example",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn unreadable_or_empty_ca_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = format!("{:#}", Tls::pinned(&missing).unwrap_err());
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = format!("{:#}", Tls::pinned(&empty).unwrap_err());
        assert!(
            e.contains("empty.pem") && e.contains("no PEM CERTIFICATE"),
            "{e}"
        );
    }
}

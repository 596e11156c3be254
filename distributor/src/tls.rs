//! TLS on the mirror stream: load the certificate and key once at start-up, then wrap each
//! accepted socket before the WebSocket handshake, within the same unauthenticated-connection
//! timeout as the handshake and the `Hello`.
//!
//! rustls with the `ring` provider only, passed explicitly so that no other crate enabling
//! aws-lc can make the process-wide default ambiguous.

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

/// The stream's TLS settings: a server certificate chain and its key, ready to accept.
#[derive(Clone)]
pub struct Tls(TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl Tls {
    /// Reads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or
    /// SEC1); every error names the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls> {
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("Failed to read the TLS certificate {}", cert.display()))?;
        if certs.is_empty() {
            bail!(
                "Failed to read the TLS certificate {}: no PEM CERTIFICATE in it",
                cert.display()
            );
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("Failed to read the TLS private key {}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS: no protocol version is available")?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .with_context(|| {
                format!(
                    "The TLS key {} does not fit the certificate {}",
                    key.display(),
                    cert.display()
                )
            })?;
        Ok(Tls(TlsAcceptor::from(Arc::new(config))))
    }
}

/// An accepted mirror connection: plain TCP, or TLS over it.
pub type Conn = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Completes the TLS handshake on `sock` when TLS is on, within `timeout`: a client that opens
/// TCP and then says nothing holds a connection slot no longer than one that skips `Hello`.
pub async fn accept(sock: TcpStream, tls: Option<&Tls>, timeout: Duration) -> io::Result<Conn> {
    let _ = sock.set_nodelay(true);
    let Some(Tls(acceptor)) = tls else {
        return Ok(Either::Left(sock));
    };
    match tokio::time::timeout(timeout, acceptor.accept(sock)).await {
        Ok(Ok(s)) => Ok(Either::Right(Box::new(s))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

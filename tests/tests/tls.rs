//! TLS on the stream: a mirror pinned to the newsroom's CA converges over wss://; one pinned to
//! another CA, or trusting only the public web's roots, refuses the distributor, applies
//! nothing and says why. A client that stalls inside the TLS handshake is dropped.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tamizdat_protocol::JoinToken;
use tamizdat_tests::*;

/// A test CA, made at test time.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca { cert, key, pem }
    }

    /// A server certificate for 127.0.0.1 and localhost, signed by this CA: the
    /// `--tls-cert FILE --tls-key FILE` arguments of a distributor.
    fn server_args(&self, dir: &Path) -> Vec<String> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "tamizdat test distributor");
        p.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        vec![
            "--tls-cert".into(),
            c.display().to_string(),
            "--tls-key".into(),
            k.display().to_string(),
        ]
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn pinned_mirror_converges_over_tls_and_others_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    for i in 0..20 {
        write_atomic(&src.join(format!("news/{i}.html")), &page(i, 3000));
    }
    let ca = Ca::new(tmp.path(), "newsroom-ca");
    let impostor = Ca::new(tmp.path(), "impostor-ca");
    let d = Distributor::start(tmp.path(), &src, &strs(&ca.server_args(tmp.path())));
    let token = d.add_mirror("m1");
    let url = JoinToken::decode(&token).unwrap().url;
    assert_eq!(url, format!("wss://{}", d.stream));

    let ca_file = ca.pem.display().to_string();
    let m1 = Mirror::start(tmp.path(), "m1", &token, &["--ca-file", &ca_file]);
    converge(&src, &[&m1], Duration::from_secs(30));
    write_atomic(&src.join("index.html"), b"<h1>live over wss</h1>");
    converge(&src, &[&m1], Duration::from_secs(30));

    // Pinned to another CA, or trusting only the public web's roots: refused, retried, and
    // nothing applied.
    let other = impostor.pem.display().to_string();
    let m2 = Mirror::start(
        tmp.path(),
        "m2",
        &d.add_mirror("m2"),
        &["--ca-file", &other, "--max-backoff", "0.2"],
    );
    let m3 = Mirror::start(
        tmp.path(),
        "m3",
        &d.add_mirror("m3"),
        &["--max-backoff", "0.2"],
    );
    for m in [&m2, &m3] {
        wait_for(
            &format!("{} to refuse the certificate twice", m.name),
            || {
                let log = m.proc.log_text();
                log.matches("certificate not trusted").count() >= 2 && log.contains(&url)
            },
        );
        assert!(digest(&m.root).is_empty(), "{} applied something", m.name);
        assert!(!m.proc.log_text().contains("panicked"));
    }
    assert!(
        m2.proc.log_text().contains("impostor-ca.pem"),
        "{}",
        tail(&m2.proc.log_text(), 2000)
    );
    for name in ["m2", "m3"] {
        assert_eq!(d.mirror_status(name)["acked_seq"], 0, "{name}");
    }

    // A plain ws:// client gets no WebSocket from a TLS listener.
    assert!(
        !plain_upgrade_answered(d.stream),
        "a plain ws:// handshake succeeded on the TLS listener"
    );
}

/// Tries a plain-text WebSocket handshake; true when the server answered 101.
fn plain_upgrade_answered(addr: std::net::SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let _ = s.write_all(req.as_bytes());
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).contains(" 101 "),
        Err(_) => false,
    }
}

#[test]
fn a_stalled_tls_handshake_is_dropped_by_the_hello_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"front page");
    let ca = Ca::new(tmp.path(), "newsroom-ca");
    let mut args = ca.server_args(tmp.path());
    args.extend(["--hello-timeout-secs".into(), "1".into()]);
    let d = Distributor::start(tmp.path(), &src, &strs(&args));

    // Silent after TCP connect.
    let mut silent = TcpStream::connect(d.stream).unwrap();
    // Half a ClientHello: a TLS record header promising more than ever comes.
    let mut half = TcpStream::connect(d.stream).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    assert!(dropped(&mut silent), "a silent connection was kept");
    assert!(dropped(&mut half), "a half-finished TLS handshake was kept");

    // A real client in time still gets in.
    let m = Mirror::start(
        tmp.path(),
        "m1",
        &d.add_mirror("m1"),
        &["--ca-file", &ca.pem.display().to_string()],
    );
    converge(&src, &[&m], Duration::from_secs(30));
}

//! The enrolment and monitoring commands, run as a user would.

use std::process::Command;

fn dist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tamizdat-distributor"))
}

#[test]
fn mirror_add_list_revoke() {
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap();
    let out = dist()
        .args([
            "mirror",
            "add",
            "berlin-1",
            "--state",
            s,
            "--public-url",
            "ws://mirror.example:7300",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    let t = tamizdat_protocol::JoinToken::decode(token.trim()).unwrap();
    assert_eq!(t.name, "berlin-1");
    assert_eq!(t.url, "ws://mirror.example:7300");

    // The same name twice is refused; a bad name is refused.
    let again = dist()
        .args([
            "mirror",
            "add",
            "berlin-1",
            "--state",
            s,
            "--public-url",
            "ws://x",
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already enrolled"));
    let bad = dist()
        .args([
            "mirror",
            "add",
            "bad name",
            "--state",
            s,
            "--public-url",
            "ws://x",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let list = dist()
        .args(["mirror", "list", "--state", s])
        .output()
        .unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(
        text.contains("berlin-1") && text.contains("enrolled"),
        "{text}"
    );

    let rev = dist()
        .args(["mirror", "revoke", "berlin-1", "--state", s])
        .output()
        .unwrap();
    assert!(rev.status.success());
    let list = dist()
        .args(["mirror", "list", "--state", s])
        .output()
        .unwrap();
    assert!(String::from_utf8(list.stdout).unwrap().contains("revoked"));
    let rev = dist()
        .args(["mirror", "revoke", "nobody", "--state", s])
        .output()
        .unwrap();
    assert_eq!(rev.status.code(), Some(1));

    // The secret never reaches the database in the clear.
    let db = std::fs::read(state.path().join("index.db")).unwrap();
    assert!(!db.windows(t.secret.len()).any(|w| w == t.secret.as_bytes()));
}

#[test]
fn mirror_add_without_a_known_url_says_how_to_fix_it() {
    let state = tempfile::tempdir().unwrap();
    let out = dist()
        .args([
            "mirror",
            "add",
            "m1",
            "--state",
            state.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--public-url"));
}

#[test]
fn lag_exits_2_when_the_distributor_cannot_be_asked() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let out = dist()
        .args(["lag", "--admin", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn tls_files_that_cannot_be_used_are_named() {
    let d = tempfile::tempdir().unwrap();
    let serve = |cert: &std::path::Path, key: Option<&std::path::Path>| {
        let mut cmd = dist();
        cmd.arg("serve")
            .arg("--root")
            .arg(d.path())
            .arg("--state")
            .arg(d.path().join("state"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(cert);
        if let Some(key) = key {
            cmd.arg("--tls-key").arg(key);
        }
        cmd.output().unwrap()
    };
    let missing = d.path().join("missing-cert.pem");
    let garbage = d.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();

    // A certificate without a key is refused by the parser.
    let out = serve(&missing, None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
    // Unreadable, or with no certificate in it: the file is named.
    for (cert, name) in [(&missing, "missing-cert.pem"), (&garbage, "garbage.pem")] {
        let out = serve(cert, Some(&garbage));
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(name) && err.contains("TLS certificate"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn serve_help_gives_each_limit_its_default() {
    let out = dist().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, default) in [
        ("--max-connections", "[default: 1000]"),
        ("--hello-timeout-secs", "[default: 10]"),
        ("--max-frame", "[default: 16777216]"),
    ] {
        // The flag's line and its description, up to the next flag.
        let text: Vec<&str> = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(flag))
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with('-'))
            .map(|(_, l)| l)
            .collect();
        assert!(text.join("\n").contains(default), "{flag}: {text:?}");
    }
}

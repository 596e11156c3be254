//! Start-up errors a volunteer can act on.

use std::process::Command;

#[test]
fn a_damaged_token_is_refused_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tamizdat-mirror"))
        .args(["run", "--join", "tzj2.@@@", "--listen", "127.0.0.1:0"])
        .arg("--root")
        .arg(d.path().join("root"))
        .arg("--state")
        .arg(d.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("join token is damaged"), "{err}");
}

#[test]
fn state_inside_the_root_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let token = tamizdat_protocol::JoinToken {
        url: "ws://127.0.0.1:9".into(),
        name: "m".into(),
        secret: "s".into(),
        site: tamizdat_protocol::SiteId([0; 16]),
        key: tamizdat_protocol::Fingerprint([0; 16]),
    }
    .encode();
    let root = d.path().join("root");
    std::fs::create_dir_all(root.join("state")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tamizdat-mirror"))
        .args(["run", "--join", &token, "--listen", "127.0.0.1:0"])
        .arg("--root")
        .arg(&root)
        .arg("--state")
        .arg(root.join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not be inside --root"));
}

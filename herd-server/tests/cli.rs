//! The binary's own surface: help and usage errors. (The end-to-end tests in `tests/` drive it for real.)

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herd-server"))
}

#[test]
fn help_names_every_command_and_option() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["serve", "up", "default herd", "GOOGLE_PLACES_API_KEY"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    let out = bin().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["--config", "--log-dir", "NAME"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
}

#[test]
fn unknown_server_name_is_refused() {
    let out = bin()
        .args(["serve", "Nobody", "--log-dir"])
        .arg(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no server named \"Nobody\""), "{err}");
    assert!(err.contains("Alford"), "lists the servers: {err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = bin().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

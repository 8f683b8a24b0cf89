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

/// A herd of one server named `name`, as a config file's text.
fn one(name: &str, port: u16) -> String {
    format!("[[server]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\n")
}

/// `check` and `serve`/`up` find their config as `herd` does: `--config`, `$HERD_CONFIG`,
/// `./herd.toml`, the user's config folder, the built-in herd; `check` says which first, on stderr,
/// and names it on its first line of output.
#[test]
fn the_config_lookup_and_its_using_line() {
    let dir = std::env::temp_dir().join(format!("herd-server-lookup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (cwd, user) = (dir.join("cwd"), dir.join("user"));
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(user.join("herd")).unwrap();
    let check = |flag: Option<&std::path::Path>, env: Option<&std::path::Path>| {
        let mut c = bin();
        c.current_dir(&cwd)
            .env("XDG_CONFIG_HOME", &user)
            .env("HOME", &dir)
            .env_remove("HERD_CONFIG")
            .env_remove("GOOGLE_PLACES_API_KEY")
            .arg("check");
        if let Some(f) = flag {
            c.arg("--config").arg(f);
        }
        if let Some(e) = env {
            c.env("HERD_CONFIG", e);
        }
        let out = c.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        );
        (out.status.code(), stdout, stderr)
    };
    let user_file = user.join("herd/herd.toml");
    let (code, out, err) = check(None, None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("the built-in default herd: ok\nservers: 5\n"),
        "{out}"
    );
    assert_eq!(
        err,
        format!(
            "herd-server: using the built-in default herd (no --config, $HERD_CONFIG, ./herd.toml, {})\n",
            user_file.display()
        )
    );
    std::fs::write(&user_file, one("Usr", 1)).unwrap();
    let (_, out, err) = check(None, None);
    assert!(out.contains("  Usr  127.0.0.1:1"), "{out}");
    assert_eq!(
        err,
        format!(
            "herd-server: using {} (found in the user's config folder)\n",
            user_file.display()
        )
    );
    std::fs::write(cwd.join("herd.toml"), one("Here", 2)).unwrap();
    let (_, out, err) = check(None, None);
    assert!(
        out.starts_with("./herd.toml: ok\n") && out.contains("  Here  127.0.0.1:2"),
        "{out}"
    );
    assert_eq!(
        err,
        "herd-server: using ./herd.toml (found in the current folder)\n"
    );
    let env_file = dir.join("env.toml");
    std::fs::write(&env_file, one("Env", 3)).unwrap();
    let (_, out, err) = check(None, Some(&env_file));
    assert!(out.contains("  Env  127.0.0.1:3"), "{out}");
    assert_eq!(
        err,
        format!(
            "herd-server: using {} (from $HERD_CONFIG)\n",
            env_file.display()
        )
    );
    let flag_file = dir.join("flag.toml");
    std::fs::write(&flag_file, one("Flag", 4)).unwrap();
    let (_, out, err) = check(Some(&flag_file), Some(&env_file));
    assert!(out.contains("  Flag  127.0.0.1:4"), "{out}");
    assert_eq!(
        err,
        format!(
            "herd-server: using {} (from --config)\n",
            flag_file.display()
        )
    );
    // A named file that is missing is an error naming it, never a quiet fall-back.
    let (code, out, err) = check(None, Some(&dir.join("missing.toml")));
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(
        err.starts_with("herd-server: using ") && err.contains("missing.toml: cannot read"),
        "{err}"
    );
    // `serve` reads the same file: a name only ./herd.toml has is found.
    let out = bin()
        .current_dir(&cwd)
        .env("XDG_CONFIG_HOME", &user)
        .env_remove("HERD_CONFIG")
        .args(["serve", "Nobody", "--log-dir"])
        .arg(dir.join("logs"))
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("herd-server: using ./herd.toml (found in the current folder)\n")
            && err.contains("no server named \"Nobody\"")
            && err.contains("Here"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

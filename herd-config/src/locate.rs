//! Which config file a herd binary reads: one lookup for `herd` and `herd-server`, so the client and
//! the servers started from the same folder always agree on the herd.
//!
//! The order, first found wins: `--config FILE`, then `$HERD_CONFIG`, then `./herd.toml`, then
//! `herd/herd.toml` in the user's config folder (`$XDG_CONFIG_HOME` or `~/.config` on Linux,
//! `~/Library/Application Support` on macOS, `%APPDATA%` on Windows), else the built-in default herd.
//! A file named by `--config` or `$HERD_CONFIG` is used even when it is missing (reading it then
//! fails with its name): a typo must not quietly fall back to another herd.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Config, ConfigError};

/// The environment variable naming the herd's config file.
pub const CONFIG_ENV: &str = "HERD_CONFIG";

/// The file looked for in the current folder.
pub const HERE: &str = "herd.toml";

/// Why a config was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--config FILE`.
    Flag,
    /// `$HERD_CONFIG`.
    Env,
    /// `./herd.toml`.
    Here,
    /// `herd/herd.toml` in the user's config folder.
    User,
    /// None of those: the built-in default herd of PROTOCOL.md §7.
    BuiltIn,
}

/// The config a binary uses and why: what [`locate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The file, or `None` for the built-in default herd.
    pub path: Option<PathBuf>,
    /// Which step of the lookup chose it.
    pub origin: Origin,
    /// The user's config file that was looked for (shown when nothing was found, so the reader
    /// knows where a file would be taken from).
    pub user_file: Option<PathBuf>,
}

/// Finds the herd's config: `flag` (`--config`), else `$HERD_CONFIG` (unset or empty: skipped), else
/// `./herd.toml`, else the user's `herd/herd.toml`, else the built-in default herd.
pub fn locate(flag: Option<&Path>) -> Located {
    locate_in(
        flag,
        std::env::var_os(CONFIG_ENV),
        Path::new("."),
        dirs::config_dir().as_deref(),
    )
}

/// [`locate`] with its inputs given: the `$HERD_CONFIG` value, the folder `./herd.toml` is looked
/// for in, and the user's config folder. Reads nothing but whether files exist.
pub fn locate_in(
    flag: Option<&Path>,
    env: Option<OsString>,
    cwd: &Path,
    user_dir: Option<&Path>,
) -> Located {
    let user_file = user_dir.map(|d| d.join("herd").join(HERE));
    let found = |path: PathBuf, origin| Located {
        path: Some(path),
        origin,
        user_file: user_file.clone(),
    };
    if let Some(p) = flag {
        return found(p.to_path_buf(), Origin::Flag);
    }
    if let Some(p) = env.filter(|v| !v.is_empty()) {
        return found(PathBuf::from(p), Origin::Env);
    }
    let here = cwd.join(HERE);
    if here.is_file() {
        // `./herd.toml` reads better than `././herd.toml` or a long absolute path.
        let shown = if cwd == Path::new(".") {
            PathBuf::from(".").join(HERE)
        } else {
            here
        };
        return found(shown, Origin::Here);
    }
    if let Some(user) = user_file.as_ref().filter(|u| u.is_file()) {
        return found(user.clone(), Origin::User);
    }
    Located {
        path: None,
        origin: Origin::BuiltIn,
        user_file,
    }
}

impl Located {
    /// Reads the config found, or builds the built-in default herd.
    ///
    /// # Errors
    /// The file cannot be read, is not TOML, or describes a herd that cannot work.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match &self.path {
            Some(p) => Config::load(p),
            None => Ok(Config::default_herd()),
        }
    }

    /// What the config is called in messages: its path, or "the built-in default herd".
    pub fn name(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "the built-in default herd".to_owned(),
        }
    }

    /// Which step of the lookup chose it, in words: `from --config`, `found in the current folder`.
    pub fn why(&self) -> String {
        match self.origin {
            Origin::Flag => "from --config".to_owned(),
            Origin::Env => format!("from ${CONFIG_ENV}"),
            Origin::Here => "found in the current folder".to_owned(),
            Origin::User => "found in the user's config folder".to_owned(),
            Origin::BuiltIn => {
                let user = self
                    .user_file
                    .as_ref()
                    .map(|u| format!(", {}", u.display()))
                    .unwrap_or_default();
                format!("no --config, ${CONFIG_ENV}, ./{HERE}{user}")
            }
        }
    }
}

/// The "using …" line (without the program's name): the file and the step that chose it.
impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "using {} ({})", self.name(), self.why())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("herd-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("cwd")).unwrap();
        std::fs::create_dir_all(d.join("user/herd")).unwrap();
        d
    }

    #[test]
    fn flag_then_env_then_here_then_user_then_built_in() {
        let d = temp("order");
        let (cwd, user) = (d.join("cwd"), d.join("user"));
        let at = |flag: Option<&str>, env: Option<&str>| {
            locate_in(
                flag.map(Path::new),
                env.map(OsString::from),
                &cwd,
                Some(&user),
            )
        };
        let l = at(None, None);
        assert_eq!((l.origin, l.path.as_deref()), (Origin::BuiltIn, None));
        assert!(l.load().is_ok_and(|c| c.servers.len() == 5));
        let shown = l.to_string();
        assert!(
            shown.starts_with(
                "using the built-in default herd (no --config, $HERD_CONFIG, ./herd.toml, "
            ) && shown.ends_with("herd.toml)"),
            "{shown}"
        );
        std::fs::write(user.join("herd/herd.toml"), "").unwrap();
        let l = at(None, None);
        assert_eq!(l.origin, Origin::User);
        assert_eq!(l.path, Some(user.join("herd/herd.toml")));
        assert!(l
            .to_string()
            .ends_with("(found in the user's config folder)"));
        std::fs::write(cwd.join("herd.toml"), "").unwrap();
        let l = at(None, None);
        assert_eq!(
            (l.origin, l.path),
            (Origin::Here, Some(cwd.join("herd.toml")))
        );
        // An empty $HERD_CONFIG is unset; a set one wins, even over a missing file's absence.
        assert_eq!(at(None, Some("")).origin, Origin::Here);
        let l = at(None, Some("/nowhere/env.toml"));
        assert_eq!(l.origin, Origin::Env);
        assert_eq!(l.to_string(), "using /nowhere/env.toml (from $HERD_CONFIG)");
        let e = l.load().unwrap_err().to_string();
        assert!(e.starts_with("/nowhere/env.toml: cannot read"), "{e}");
        let l = at(Some("flag.toml"), Some("/nowhere/env.toml"));
        assert_eq!(l.to_string(), "using flag.toml (from --config)");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_current_folder_reads_as_dot_slash() {
        let l = Located {
            path: Some(PathBuf::from("./herd.toml")),
            origin: Origin::Here,
            user_file: None,
        };
        assert_eq!(
            l.to_string(),
            "using ./herd.toml (found in the current folder)"
        );
        let l = locate_in(None, None, Path::new("/nonexistent-folder"), None);
        assert_eq!(
            l.to_string(),
            "using the built-in default herd (no --config, $HERD_CONFIG, ./herd.toml)"
        );
    }
}

//! Whose a data folder is, who may use it, and who may read it.
//!
//! - The folder's `identity` file names the server it belongs to and the herd's members when it was
//!   created. A start under another name is refused: records of one server served under another's
//!   name would be flooded as if that server had stored them.
//! - The folder itself is locked (`flock` on the folder, held for the life of the server): a lock
//!   file can be deleted by mistake, a folder in use cannot.
//! - Folders are created `0700` and files `0600` whatever the umask: records hold client ids and
//!   where they are.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The identity file's name in a data folder.
pub const FILE: &str = "identity";

/// What a data folder says of itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The server whose records the folder holds.
    pub server: String,
    /// The herd's servers when the folder was created.
    pub members: Vec<String>,
}

/// Creates `dir` (and its parents) `0700`.
pub(super) fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Options that create a file `0600` whatever the umask.
pub(super) fn private() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(0o600);
    o
}

/// Locks `dir` itself, or says that a running server holds it.
pub(super) fn lock_dir(dir: &Path) -> anyhow::Result<File> {
    use std::os::unix::io::AsRawFd as _;
    let file = File::open(dir).with_context(|| format!("opening {} to lock it", dir.display()))?;
    // SAFETY: flock on a file descriptor this function owns; no memory is shared.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            anyhow::bail!(
                "{} is in use by another running server (the folder is locked); two servers never \
                 share a data folder",
                dir.display()
            );
        }
        return Err(anyhow::Error::from(e).context(format!("locking {}", dir.display())));
    }
    Ok(file)
}

/// Reads the identity of `dir`: `None` when it has none yet.
///
/// # Errors
/// The file cannot be read or is not an identity.
pub(super) fn read(dir: &Path) -> anyhow::Result<Option<Identity>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::from(e).context(format!("reading {}", path.display()))),
    };
    let id: Identity = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not a data folder's identity (expected `server = \"Name\"` and `members = [...]`); \
             nothing was changed: fix the file, or remove it to let this server adopt the folder",
            path.display()
        )
    })?;
    Ok(Some(id))
}

/// Refuses a folder that belongs to another server than `server`, saying what differs and how to
/// proceed.
pub(super) fn check(dir: &Path, id: &Identity, server: &str) -> anyhow::Result<()> {
    if id.server == server {
        return Ok(());
    }
    let path = dir.join(FILE);
    let home = dir
        .parent()
        .map_or_else(|| PathBuf::from(&id.server), |p| p.join(&id.server));
    anyhow::bail!(
        "{} holds the records of server {:?} (see {}), not of {server:?}: was the folder renamed, copied \
         or the server renamed in the config? Nothing was changed. Start {:?} with it (its place is {}), \
         or, to make {server:?} take over these records on purpose, set server = {server:?} in {}",
        dir.display(),
        id.server,
        path.display(),
        id.server,
        home.display(),
        path.display()
    )
}

/// Writes `id` into `dir` (a temporary file renamed into place, both synced), `0600`.
pub(super) fn write(dir: &Path, id: &Identity) -> anyhow::Result<()> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let text = format!(
        "# The server whose records this folder holds, and the herd's servers when it was created. A\n\
         # server started with this folder under another name refuses to start.\n{}",
        toml::to_string(id).context("writing the identity")?
    );
    (|| -> std::io::Result<()> {
        let mut f = private()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })()
    .with_context(|| format!("writing {}", path.display()))
}

//! The run's directory for SSH control sockets and its generated ssh config: kept at a short
//! path (a Unix socket path holds about 104 bytes), recreated when something removes it
//! mid-run, and marked live by a `flock` that only this run holds, so another run clearing out
//! stale directories leaves it alone, whatever PID namespace either runs in.
//!
//! A directory is stale when its `lock` file can be locked: the kernel drops a lock when its
//! holder dies, `kill -9` included. A directory without a `lock` file is never removed (it may
//! be one being created).

use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

/// Control directories are named `bkp-ssh-XXXXXX` (older versions used `bakapara-ssh-PID-...`
/// and judged liveness by pid; this name keeps them away from ours).
const PREFIX: &str = "bkp-ssh-";
/// What goes under the directory: the `openssh` crate's `.ssh-connectionXXXXXX/master`, and
/// the random suffix ssh adds to a socket while it sets it up.
const SOCKET_TAIL: &str = "/bkp-ssh-XXXXXX/.ssh-connectionXXXXXX/master.XXXXXXXXXXXXXXXX";
/// `sun_path` is 108 bytes on Linux and 104 on the BSDs and macOS, terminating NUL included.
const SOCKET_PATH_MAX: usize = 103;
const LOCK: &str = "lock";

/// A run's control directory. Dropping it removes the directory (when it is still this run's).
#[derive(Debug)]
pub struct ControlDir {
    path: PathBuf,
    /// Files written into the directory each time it is (re)created: (name, contents).
    files: Vec<(String, String)>,
    /// The held lock on `path/lock`.
    lock: Mutex<Option<Flock<File>>>,
}

impl ControlDir {
    /// Creates the directory under the first of `$XDG_RUNTIME_DIR`, `$TMPDIR` and `/tmp` that
    /// leaves room for a socket path and can be written, after removing stale directories of
    /// dead runs there.
    #[allow(clippy::needless_pass_by_value)] // the files are the run's, handed over whole
    pub fn create(files: Vec<(String, String)>) -> io::Result<ControlDir> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            candidates.push(PathBuf::from(dir));
        }
        candidates.push(std::env::temp_dir());
        candidates.push(PathBuf::from("/tmp"));
        let mut last = io::Error::other("no directory for SSH control sockets");
        for base in candidates {
            if !base.is_absolute() || base.as_os_str().len() + SOCKET_TAIL.len() > SOCKET_PATH_MAX {
                continue;
            }
            remove_stale(&base);
            match Self::create_in(&base, files.clone()) {
                Ok(dir) => return Ok(dir),
                Err(e) => last = e,
            }
        }
        Err(io::Error::new(
            last.kind(),
            format!("cannot create a directory for SSH control sockets: {last}"),
        ))
    }

    fn create_in(base: &Path, files: Vec<(String, String)>) -> io::Result<ControlDir> {
        use std::os::unix::fs::PermissionsExt;
        let made = tempfile::Builder::new()
            .prefix(PREFIX)
            .rand_bytes(6)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)?;
        // The directory lives as long as the run, not the TempDir: Drop below removes it.
        let path = made.keep();
        let dir = ControlDir {
            path,
            files,
            lock: Mutex::new(None),
        };
        if let Err(e) = dir.ensure() {
            let _ = std::fs::remove_dir_all(&dir.path);
            return Err(e);
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes sure the directory, its files and this run's lock are there, recreating them
    /// when something (a /tmp cleaner, another tool) removed them.
    pub fn ensure(&self) -> io::Result<()> {
        let mut lock = self
            .lock
            .lock()
            .map_err(|_| io::Error::other("internal error: poisoned lock"))?;
        if lock.as_ref().is_some_and(|held| self.holds(held)) {
            return Ok(());
        }
        match DirBuilder::new().mode(0o700).create(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&self.path)?;
                // Our own uid, as /proc shows it (where there is no /proc, the mode must do).
                let ours = std::fs::metadata("/proc/self").map_or(meta.uid(), |m| m.uid());
                if !meta.is_dir() || meta.uid() != ours || meta.mode() & 0o077 != 0 {
                    return Err(io::Error::other(format!(
                        "{} is not this run's directory",
                        self.path.display()
                    )));
                }
            }
            Err(e) => return Err(e),
        }
        for (name, contents) in &self.files {
            std::fs::write(self.path.join(name), contents)?;
        }
        // Locked before it gets its name, so no other run ever sees it unlocked.
        let (file, temp) = tempfile::NamedTempFile::new_in(&self.path)?.into_parts();
        let held = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        temp.persist(self.path.join(LOCK)).map_err(|e| e.error)?;
        *lock = Some(held);
        Ok(())
    }

    /// Whether `path/lock` is the file this run holds locked.
    fn holds(&self, held: &File) -> bool {
        match (
            std::fs::symlink_metadata(self.path.join(LOCK)),
            held.metadata(),
        ) {
            (Ok(named), Ok(ours)) => named.dev() == ours.dev() && named.ino() == ours.ino(),
            _ => false,
        }
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        let Some(held) = self.lock.get_mut().ok().and_then(Option::take) else {
            return;
        };
        if self.holds(&held) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes the control directories under `base` whose lock nobody holds (their runs died).
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let named_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX));
        if !named_ours {
            continue;
        }
        let Ok(file) = File::open(entry.path().join(LOCK)) else {
            continue;
        };
        // Held while removing: a run that is just now recreating its lock cannot take it.
        if let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_in(base: &Path) -> ControlDir {
        ControlDir::create_in(base, vec![("conf".into(), "x\n".into())]).unwrap()
    }

    #[test]
    fn a_live_runs_directory_is_kept_and_a_dead_ones_removed() {
        let base = tempfile::tempdir().unwrap();
        let live = dir_in(base.path());
        let dead = dir_in(base.path());
        let dead_path = dead.path().to_path_buf();
        // A run killed with -9: its lock is gone with it, its directory stays.
        drop(dead.lock.lock().unwrap().take());
        std::mem::forget(dead);
        assert!(dead_path.exists());
        remove_stale(base.path());
        assert!(
            live.path().join("conf").exists(),
            "the live run's dir is kept"
        );
        assert!(!dead_path.exists(), "the dead run's dir is removed");
    }

    #[test]
    fn a_removed_directory_is_recreated_with_its_files_and_lock() {
        let base = tempfile::tempdir().unwrap();
        let dir = dir_in(base.path());
        std::fs::remove_dir_all(dir.path()).unwrap();
        dir.ensure().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("conf")).unwrap(),
            "x\n"
        );
        remove_stale(base.path());
        assert!(dir.path().exists(), "the recreated lock is held");
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists(), "removed at the end of the run");
    }
}

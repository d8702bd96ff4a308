//! Scratch space: one directory per build under TMPDIR, removed when the build ends however it
//! ends (errors included), and locked while it runs. Directories that killed builds left behind
//! (no lock held, a minute old) are swept when the next build starts.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

const PREFIX: &str = "fnbuild-build-";
/// A directory this young may belong to a build that has made it but not locked it yet.
const SWEEP_AFTER: Duration = Duration::from_secs(60);

pub struct Scratch {
    dir: tempfile::TempDir,
    _lock: File,
}

impl Scratch {
    /// Sweeps what killed builds left, then makes and locks this build's directory.
    pub fn new() -> std::io::Result<Scratch> {
        sweep(&std::env::temp_dir());
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir()?;
        let lock = File::open(dir.path())?;
        // SAFETY: flock on a descriptor we own; released when it is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Scratch { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the scratch directories under `tmp` that are ours (same user), a minute old, and that
/// no running build holds.
fn sweep(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_str().is_some_and(|n| n.starts_with(PREFIX));
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > SWEEP_AFTER);
        if !ours || !meta.is_dir() || meta.uid() != uid || !old {
            continue;
        }
        let Ok(dir) = File::open(&path) else { continue };
        // SAFETY: as above; a lock we get means no build holds the directory.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            tracing::debug!(path = %path.display(), "removing the scratch directory of a build that was killed");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_unlocked_scratch_directories_of_ours_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str, age: u64| {
            let p = tmp.path().join(name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("layer"), "x").unwrap();
            let when = std::time::SystemTime::now() - Duration::from_secs(age);
            File::open(&p).unwrap().set_modified(when).unwrap();
            p
        };
        let dead = make("fnbuild-build-dead", 3600);
        let young = make("fnbuild-build-young", 1);
        let running = make("fnbuild-build-running", 3600);
        let other = make("someone-else", 3600);
        let held = File::open(&running).unwrap();
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        sweep(tmp.path());
        assert!(!dead.exists());
        assert!(young.exists() && running.exists() && other.exists());
        drop(held);
    }
}

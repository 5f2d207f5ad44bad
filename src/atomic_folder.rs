//! Folders replaced whole or not at all: a result set is written into a fresh sibling folder and
//! switched in at the end, so a reader (or a run killed at any point) sees the old set or the new
//! one, never a mix, and files of the old set that the new one lacks do not linger.
//!
//! For `results/` the siblings are `.results.lock` (held while a process writes; the operating
//! system releases it when the process dies, however it dies), `.results.staging-PID` (the new
//! set being written) and, only on systems without an atomic exchange of two folders,
//! `.results.previous-PID` (the old set during the switch). The next claim of the folder removes
//! what a killed process left, under the lock, and restores the old set if a switch was cut in
//! half.

use std::fs::{self, File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a folder could not be claimed or replaced.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{}: give a folder name (not `.`, `..` or a root)", .0.display())]
    NoName(PathBuf),
    #[error("{} exists and is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error(
        "{} is busy: another specdef process is writing it (it holds {}); wait for it or choose another folder",
        target.display(),
        lock.display()
    )]
    Busy { target: PathBuf, lock: PathBuf },
    #[error(
        "{} holds {file:?}, which is not part of a result set: refusing to replace the folder; choose a new or empty one",
        target.display()
    )]
    Foreign { target: PathBuf, file: String },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FolderError {
    let path = path.to_path_buf();
    move |source| FolderError::Io {
        action,
        path,
        source,
    }
}

/// The right to replace one folder: the lock is held and an empty staging folder exists beside
/// it (so the place is writable). Write the new set with `write`, then `publish`; dropped
/// without publishing, the staging folder is removed and the old set stays as it was.
pub struct FolderClaim {
    target: PathBuf,
    staging: PathBuf,
    published: bool,
    _lock: File,
}

impl FolderClaim {
    /// Claims `target` (created on publish where missing). An existing `target` must be a folder
    /// whose every file `replaceable` accepts: a folder of other files is never swept away.
    pub fn claim(target: &Path, replaceable: impl Fn(&str) -> bool) -> Result<Self, FolderError> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| FolderError::NoName(target.to_path_buf()))?;
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        fs::create_dir_all(&parent).map_err(io("creating", &parent))?;

        let lock_path = parent.join(format!(".{name}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("creating the lock", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(FolderError::Busy {
                    target: target.to_path_buf(),
                    lock: lock_path,
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(io("locking", &lock_path)(source));
            }
        }

        recover_interrupted(&parent, &name, target)?;
        check_replaceable(target, &replaceable)?;

        let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
        fs::create_dir(&staging).map_err(io("creating", &staging))?;
        Ok(Self {
            target: target.to_path_buf(),
            staging,
            published: false,
            _lock: lock,
        })
    }

    /// Writes one file of the new set (flushed to disk before the switch can happen).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), FolderError> {
        let path = self.staging.join(name);
        let mut file = File::create(&path).map_err(io("writing", &path))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io("writing", &path))
    }

    /// Switches the new set in: after this the folder holds exactly the files written.
    pub fn publish(mut self) -> Result<(), FolderError> {
        sync_folder(&self.staging)?;
        if self.target.exists() {
            switch(&self.staging, &self.target)?;
            // The staging path now holds the old set.
            fs::remove_dir_all(&self.staging).map_err(io("removing the old set", &self.staging))?;
        } else {
            fs::rename(&self.staging, &self.target).map_err(io("creating", &self.target))?;
        }
        self.published = true;
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_folder(parent)?;
        }
        Ok(())
    }
}

impl Drop for FolderClaim {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Puts what a killed process left right (we hold the lock, so nobody else is using it): a switch
/// cut between its two renames is undone, leftover staging folders are removed.
fn recover_interrupted(parent: &Path, name: &str, target: &Path) -> Result<(), FolderError> {
    let staging_prefix = format!(".{name}.staging-");
    let previous_prefix = format!(".{name}.previous-");
    let entries = fs::read_dir(parent).map_err(io("reading", parent))?;
    for entry in entries {
        let entry = entry.map_err(io("reading", parent))?;
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if entry_name.starts_with(&previous_prefix) && !target.exists() {
            fs::rename(&path, target).map_err(io("restoring the previous set", &path))?;
        } else if entry_name.starts_with(&staging_prefix)
            || entry_name.starts_with(&previous_prefix)
        {
            fs::remove_dir_all(&path).map_err(io("removing a killed run's leftovers", &path))?;
        }
    }
    Ok(())
}

fn check_replaceable(
    target: &Path,
    replaceable: &impl Fn(&str) -> bool,
) -> Result<(), FolderError> {
    if !target.exists() {
        return Ok(());
    }
    if !target.is_dir() {
        return Err(FolderError::NotAFolder(target.to_path_buf()));
    }
    for entry in fs::read_dir(target).map_err(io("reading", target))? {
        let entry = entry.map_err(io("reading", target))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map_err(io("reading", target))?.is_file();
        if !is_file || !replaceable(&file) {
            return Err(FolderError::Foreign {
                target: target.to_path_buf(),
                file,
            });
        }
    }
    Ok(())
}

/// Exchanges the two folders in one step where the system can (Linux's `renameat2` with
/// `RENAME_EXCHANGE`), else by two renames that `recover_interrupted` completes if cut.
fn switch(staging: &Path, target: &Path) -> Result<(), FolderError> {
    #[cfg(target_os = "linux")]
    match exchange(staging, target) {
        Ok(()) => return Ok(()),
        // Filesystems without the flag answer EINVAL; fall back to two renames.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(source) => return Err(io("switching in the new set at", target)(source)),
    }
    let name = target
        .file_name()
        .expect("claimed targets have a name")
        .to_string_lossy();
    let previous = staging.with_file_name(format!(".{name}.previous-{}", std::process::id()));
    fs::rename(target, &previous).map_err(io("moving the old set aside from", target))?;
    fs::rename(staging, target).map_err(io("switching in the new set at", target))?;
    fs::rename(&previous, staging).map_err(io("moving the old set to", staging))
}

#[cfg(target_os = "linux")]
fn exchange(first: &Path, second: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_path = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (first, second) = (c_path(first)?, c_path(second)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            first.as_ptr(),
            libc::AT_FDCWD,
            second.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Flushes a folder's entries to disk (where the system allows opening a folder).
fn sync_folder(path: &Path) -> Result<(), FolderError> {
    #[cfg(unix)]
    File::open(path)
        .and_then(|folder| folder.sync_all())
        .map_err(io("flushing", path))?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

//! Folders replaced whole or not at all: a result set is written into a fresh sibling folder and
//! switched in at the end, so a reader (or a run killed at any point) sees the old set or the new
//! one, never a mix, and files of the old set that the new one lacks do not linger.
//!
//! Only folders the suite wrote are ever replaced: every set carries a marker,
//! `specdef-results.json` (format tag `specdef.result-set/1`), listing the files the suite wrote
//! there. A folder is replaced only where it is empty or holds the marker and nothing but the
//! files it lists; a folder of the user's (even one whose files have a result set's names), a
//! symbolic link, a file or a device is refused, naming what is in the way. Files added to a
//! set later (`specdef report`'s page and figures, `add_to_set`) are added to its list.
//!
//! For `results/` the siblings are `.results.lock` (held while a process writes; the operating
//! system releases it when the process dies, however it dies), `.results.staging-PID` (the new
//! set being written) and, only on systems without an atomic exchange of two folders,
//! `.results.previous-PID` (the old set during the switch). The next claim of the folder removes
//! what a killed process left, under the lock, and restores the old set if a switch was cut in
//! half.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{self, File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The marker of a folder the suite wrote.
pub const MARKER: &str = "specdef-results.json";
pub const MARKER_SCHEMA: &str = "specdef.result-set/1";

/// What `specdef-results.json` holds: the format tag, who wrote it and the files of the set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub schema: String,
    pub crate_version: String,
    pub files: BTreeSet<String>,
}

impl Marker {
    fn new(files: BTreeSet<String>) -> Self {
        Self {
            schema: MARKER_SCHEMA.to_string(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            files,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a marker serialises");
        bytes.push(b'\n');
        bytes
    }

    /// The marker of `dir`: None where there is none; an error where it is not one of ours.
    pub fn read(dir: &Path) -> Result<Option<Self>, FolderError> {
        let path = dir.join(MARKER);
        let text = match crate::input_file::read_text_bounded(&path, 1 << 20) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io("reading", &path)(source)),
        };
        let corrupt = |message: String| FolderError::Corrupt {
            path: path.clone(),
            message,
        };
        let marker: Marker = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if marker.schema != MARKER_SCHEMA {
            return Err(corrupt(format!(
                "schema {:?}, expected {MARKER_SCHEMA:?}",
                marker.schema
            )));
        }
        if let Some(bad) = marker.files.iter().find(|f| !is_plain_name(f)) {
            return Err(corrupt(format!("{bad:?} is not a file name")));
        }
        Ok(Some(marker))
    }
}

/// A name of a file directly in the folder: no separators, not `.` or `..`, not the marker.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name != MARKER
        && !name.contains(['/', '\\', '\0'])
}

/// Why a folder could not be claimed or replaced.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{}: give a folder name (not `.`, `..` or a root)", .0.display())]
    NoName(PathBuf),
    #[error("{} exists and is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error(
        "{} is a symbolic link: refusing to replace it or write through it; give the folder it points to, or a new path",
        .0.display()
    )]
    Symlink(PathBuf),
    #[error(
        "{} holds {file:?} but no {MARKER}: it is not a result set specdef wrote, so it is never replaced; choose a new or empty folder",
        target.display()
    )]
    Unmarked { target: PathBuf, file: String },
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{} is busy: another specdef process is writing it (it holds {}); wait for it or choose another folder",
        target.display(),
        lock.display()
    )]
    Busy { target: PathBuf, lock: PathBuf },
    #[error(
        "{} holds {file:?}, which is not part of the result set specdef wrote there: refusing to replace it; choose a new or empty folder",
        target.display()
    )]
    Foreign { target: PathBuf, file: String },
    #[error(
        "{} is in the way of the lock file specdef keeps there: it is {}; remove it or choose another folder",
        .0.display(), .1
    )]
    LockInTheWay(PathBuf, &'static str),
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
    written: BTreeSet<String>,
    published: bool,
    _lock: File,
}

/// The folder `target` names, its parent and its name: `out/sub/.` is `out/sub`; `.`, `..` and
/// roots have no name to claim.
fn place(target: &Path) -> Result<(PathBuf, PathBuf, String), FolderError> {
    // components() drops `.` after the first component: `op/sub/.` becomes `op/sub`.
    let target: PathBuf = target.components().collect();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| FolderError::NoName(target.clone()))?;
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok((target, parent, name))
}

/// Holds `.NAME.lock` beside the folder: one writer at a time, released when the process dies.
fn lock(parent: &Path, name: &str, target: &Path) -> Result<File, FolderError> {
    create_folder(parent)?;
    let lock_path = lock_path(parent, name)?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("creating the lock", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(FolderError::Busy {
            target: target.to_path_buf(),
            lock: lock_path,
        }),
        Err(TryLockError::Error(source)) => Err(io("locking", &lock_path)(source)),
    }
}

/// `.NAME.lock` in `parent`, where nothing but a regular file (or nothing) is in its way.
fn lock_path(parent: &Path, name: &str) -> Result<PathBuf, FolderError> {
    let lock_path = parent.join(format!(".{name}.lock"));
    match fs::symlink_metadata(&lock_path) {
        Ok(meta) if !meta.is_file() => {
            let kind = crate::atomic_file::describe(&meta.file_type());
            Err(FolderError::LockInTheWay(lock_path, kind))
        }
        _ => Ok(lock_path),
    }
}

/// Refuses a path below something that exists but is not a folder (`file.txt/out`), naming it.
fn check_no_file_above(dir: &Path) -> Result<(), FolderError> {
    match crate::atomic_file::not_a_folder_above(dir) {
        Some(blocker) => Err(FolderError::NotAFolder(blocker)),
        None => Ok(()),
    }
}

/// Creates `dir` and the folders above it where missing; a file in the way is named.
fn create_folder(dir: &Path) -> Result<(), FolderError> {
    check_no_file_above(dir)?;
    fs::create_dir_all(dir).map_err(io("creating", dir))
}

/// Checks, without claiming it, that `target` could be claimed now (see `FolderClaim::claim`):
/// for a command that writes it only after long work.
pub fn check_claimable(target: &Path) -> Result<(), FolderError> {
    let (target, parent, name) = place(target)?;
    check_no_file_above(&parent)?;
    lock_path(&parent, &name)?;
    check_replaceable(&target)
}

impl FolderClaim {
    /// Claims `target` (created on publish where missing). An existing `target` must be a
    /// folder, not a link to one, that is empty or holds a set the suite wrote (its marker and
    /// the files the marker lists): a folder of other files is never swept away.
    pub fn claim(target: &Path) -> Result<Self, FolderError> {
        // Checked before the lock too, so that a refused target leaves no lock file beside it.
        check_claimable(target)?;
        let (target, parent, name) = place(target)?;
        let lock = lock(&parent, &name, &target)?;
        recover_interrupted(&parent, &name, &target)?;
        check_replaceable(&target)?;

        let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
        fs::create_dir(&staging).map_err(io("creating", &staging))?;
        Ok(Self {
            target,
            staging,
            written: BTreeSet::new(),
            published: false,
            _lock: lock,
        })
    }

    /// Writes one file of the new set (flushed to disk before the switch can happen).
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FolderError> {
        assert!(is_plain_name(name), "{name:?} is not a file name of a set");
        let path = self.staging.join(name);
        let mut file = File::create(&path).map_err(io("writing", &path))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io("writing", &path))?;
        self.written.insert(name.to_string());
        Ok(())
    }

    /// Switches the new set in: after this the folder holds exactly the files written and the
    /// marker that lists them.
    pub fn publish(mut self) -> Result<(), FolderError> {
        let marker = Marker::new(std::mem::take(&mut self.written));
        let path = self.staging.join(MARKER);
        fs::write(&path, marker.bytes()).map_err(io("writing", &path))?;
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

/// Ok where `target` is absent, an empty folder, or a set the suite wrote: its marker and only
/// regular files the marker lists (and the temporary files a killed write of one leaves).
fn check_replaceable(target: &Path) -> Result<(), FolderError> {
    let meta = match fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io("reading", target)(source)),
        Ok(meta) => meta,
    };
    if meta.file_type().is_symlink() {
        return Err(FolderError::Symlink(target.to_path_buf()));
    }
    if !meta.is_dir() {
        return Err(FolderError::NotAFolder(target.to_path_buf()));
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(target).map_err(io("reading", target))? {
        let entry = entry.map_err(io("reading", target))?;
        let is_file = entry.file_type().map_err(io("reading", target))?.is_file();
        entries.push((entry.file_name().to_string_lossy().into_owned(), is_file));
    }
    let Some((first, _)) = entries.first() else {
        return Ok(());
    };
    let Some(marker) = Marker::read(target)? else {
        return Err(FolderError::Unmarked {
            target: target.to_path_buf(),
            file: first.clone(),
        });
    };
    let ours = |name: &str| {
        name == MARKER || marker.files.contains(name) || crate::atomic_file::is_temporary_name(name)
    };
    match entries
        .into_iter()
        .find(|(name, is_file)| !is_file || !ours(name))
    {
        Some((file, _)) => Err(FolderError::Foreign {
            target: target.to_path_buf(),
            file,
        }),
        None => Ok(()),
    }
}

/// Adds files to the set in `dir` (created where missing), each written whole, and lists them in
/// its marker; a file already there is replaced only where the marker lists it. Into a folder
/// without a marker (say, beside a records file of the user's) only new files are written, and
/// a marker listing just them. Returns the folder the files went to.
pub fn add_to_set(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<PathBuf, FolderError> {
    let (dir, parent, name) = match place(dir) {
        Ok(placed) => placed,
        // `.` and `..` name a folder all the same: its real path has a name.
        Err(FolderError::NoName(_)) => {
            let real = fs::canonicalize(dir).map_err(io("reading", dir))?;
            place(&real)?
        }
        Err(e) => return Err(e),
    };
    let _lock = lock(&parent, &name, &dir)?;
    match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir).map_err(io("creating", &dir))?
        }
        Err(source) => return Err(io("reading", &dir)(source)),
        Ok(meta) if meta.file_type().is_symlink() => return Err(FolderError::Symlink(dir)),
        Ok(meta) if !meta.is_dir() => return Err(FolderError::NotAFolder(dir)),
        Ok(_) => {}
    }
    let mut listed = Marker::read(&dir)?.map_or_else(BTreeSet::new, |m| m.files);
    for (file, _) in files {
        assert!(is_plain_name(file), "{file:?} is not a file name of a set");
        let path = dir.join(file);
        if fs::symlink_metadata(&path).is_ok() && !listed.contains(file) {
            return Err(FolderError::Foreign {
                target: dir.clone(),
                file: file.clone(),
            });
        }
    }
    for (file, bytes) in files {
        let path = dir.join(file);
        crate::atomic_file::write_atomically(&path, bytes).map_err(io("writing", &path))?;
        listed.insert(file.clone());
    }
    let marker = dir.join(MARKER);
    crate::atomic_file::write_atomically(&marker, &Marker::new(listed).bytes())
        .map_err(io("writing", &marker))?;
    Ok(dir)
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

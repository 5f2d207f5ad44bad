//! Files written whole or not at all: model files, result files, plots. Only regular files are
//! ever replaced: a symbolic link, a device, a FIFO or a folder at the path is refused (naming
//! it), never renamed over, so `--out /dev/null` or a link to a file of the user's cannot be
//! destroyed by an output that happened to name it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`: readers see
/// the old file or the whole new one, never half of it. Refused where `path` is there and is not
/// a regular file (`check_replaceable`).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    check_replaceable(path)?;
    let temporary = temporary_beside(path);
    // A leftover of a killed process with our pid, or a link planted under its name: removing
    // a link removes the link, and `create_new` never follows one.
    let _ = std::fs::remove_file(&temporary);
    let result = (|| {
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Makes sure `path` can be written before the work that produces it: refuses anything there
/// but a regular file, creates its folder where missing and writes (then removes) a temporary
/// file beside it.
pub fn check_writable(path: &Path) -> std::io::Result<()> {
    check_replaceable(path)?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_folder(dir)?;
    }
    let probe = temporary_beside(path);
    let _ = std::fs::remove_file(&probe);
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The first of `dir` and the folders above it that exists but is not a folder (`file.txt` of
/// `file.txt/out`): nothing can be created below it.
pub fn not_a_folder_above(dir: &Path) -> Option<PathBuf> {
    (dir.ancestors())
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()))
        .map(Path::to_path_buf)
}

/// Creates `dir` and the folders above it where missing; something in the way that is not a
/// folder is named (where the system would say only "File exists").
pub fn create_folder(dir: &Path) -> std::io::Result<()> {
    if let Some(blocker) = not_a_folder_above(dir) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is not a folder: cannot create {} below it",
                blocker.display(),
                dir.display()
            ),
        ));
    }
    std::fs::create_dir_all(dir)
}

/// Ok where nothing is at `path` or a regular file is; an error saying what is there otherwise.
pub fn check_replaceable(path: &Path) -> std::io::Result<()> {
    let kind = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(meta) if meta.file_type().is_file() => return Ok(()),
        Ok(meta) => describe(&meta.file_type()),
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "{} is {kind}, not a regular file: refusing to replace it (give the path of a new or \
             regular file)",
            path.display()
        ),
    ))
}

/// "a symbolic link", "a folder", "a character device", ...
pub fn describe(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Whether `name` is a temporary file `write_atomically` makes (`.NAME.PID.tmp`): what a
/// killed write leaves, and the only thing a cleanup may remove.
pub fn is_temporary_name(name: &str) -> bool {
    let inner = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp"));
    inner
        .and_then(|n| n.rsplit_once('.'))
        .is_some_and(|(file, pid)| {
            !file.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        })
}

/// `.NAME.PID.tmp` in the folder of `path`.
fn temporary_beside(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

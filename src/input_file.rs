//! Files read whole into memory (scenarios, records, model files, data): refused, naming the
//! file, where they are not regular files (`/dev/zero`, a FIFO: reading one never ends or never
//! starts) or are larger than the caller's bound, instead of reading without end.

use std::io::Read;
use std::path::Path;

/// The most bytes of a scenario file (a scenario is a few kilobytes).
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;
/// The most bytes of a file of run records or benchmark records (a 1000-run sweep's records are
/// ~10 MB).
pub const MAX_RECORDS_BYTES: u64 = 1 << 30;
/// The most bytes of a model or data file (`MAX_PARAMETERS` f32 parameters are 400 MB).
pub const MAX_TENSOR_FILE_BYTES: u64 = 2 << 30;

/// The bytes of `path`, where it is a regular file (a symbolic link to one is followed) of at
/// most `max_bytes`.
pub fn read_bounded(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file",
                path.display(),
                crate::atomic_file::describe(&meta.file_type())
            ),
        ));
    }
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is larger than {max_bytes} bytes, the most this input may be",
                path.display()
            ),
        )
    };
    if meta.len() > max_bytes {
        return Err(too_large());
    }
    // The size can change between the check and the read: read at most one byte past the bound.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

/// `read_bounded` as UTF-8 text.
pub fn read_text_bounded(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, max_bytes)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not UTF-8 text", path.display()),
        )
    })
}

//! A sweep's state folder: `sweep.json` (what it runs: the scenario, the crate version, the
//! shard) and `records/<run id>.json`, one record per finished run, each written whole (a
//! temporary file renamed over its name). A sweep killed at any point leaves finished records
//! and nothing half-written; run again it reads them and runs only the rest. An OS lock on
//! `.lock` (released however the process dies) keeps a second process out meanwhile.

use super::{Shard, SweepError};
use crate::scenario::{RunRecord, Scenario};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "sweep.json";
pub const MANIFEST_SCHEMA: &str = "specdef.sweep/1";
const RECORDS: &str = "records";

/// What a sweep folder holds runs of; folders merge only where these agree (but the shard).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub crate_version: String,
    pub variant: Option<String>,
    pub scenario: Scenario,
    pub shard_index: usize,
    pub shard_count: usize,
    /// The runs of this shard.
    pub runs: usize,
}

impl Manifest {
    pub fn new(scenario: &Scenario, variant: Option<String>, shard: Shard, runs: usize) -> Self {
        Self {
            schema: MANIFEST_SCHEMA.to_string(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            variant,
            scenario: scenario.clone(),
            shard_index: shard.index,
            shard_count: shard.count,
            runs,
        }
    }

    /// The same sweep: version, scenario and variant.
    pub fn same_sweep(&self, other: &Manifest) -> bool {
        self.crate_version == other.crate_version
            && self.scenario == other.scenario
            && self.variant == other.variant
    }

    pub fn read(dir: &Path) -> Result<Self, SweepError> {
        let path = dir.join(MANIFEST);
        let text =
            crate::input_file::read_text_bounded(&path, crate::input_file::MAX_SCENARIO_BYTES)
                .map_err(SweepError::io("reading", &path))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| SweepError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if manifest.schema != MANIFEST_SCHEMA {
            return Err(SweepError::Corrupt {
                path,
                message: format!("schema {:?}, expected {MANIFEST_SCHEMA:?}", manifest.schema),
            });
        }
        Ok(manifest)
    }
}

/// A sweep folder open for writing.
pub struct SweepFolder {
    dir: PathBuf,
    _lock: File,
}

impl SweepFolder {
    /// Opens (creating) the folder of `manifest`'s sweep: refused while another process holds
    /// it, and where it holds another sweep or another shard.
    pub fn open(dir: &Path, manifest: &Manifest) -> Result<Self, SweepError> {
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(SweepError::Corrupt {
                path: dir.to_path_buf(),
                message: "is a symbolic link: give the folder it points to, or a new path"
                    .to_string(),
            });
        }
        // Checked before anything is created in it, and again under the lock.
        if dir.is_dir() && !dir.join(MANIFEST).exists() {
            check_only_sweep_files(dir)?;
        }
        let records = dir.join(RECORDS);
        if fs::symlink_metadata(&records).is_ok_and(|m| !m.is_dir()) {
            return Err(SweepError::Corrupt {
                path: records,
                message: "is not a folder (a link or a file): a sweep keeps its records in a \
                          folder of its own; move it away"
                    .to_string(),
            });
        }
        crate::atomic_file::create_folder(&records)
            .map_err(SweepError::io("creating", &records))?;
        let lock_path = dir.join(".lock");
        if fs::symlink_metadata(&lock_path).is_ok_and(|m| !m.is_file()) {
            return Err(SweepError::Corrupt {
                path: lock_path,
                message: "is in the way of the sweep's lock file (a link or not a regular \
                          file): remove it"
                    .to_string(),
            });
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(SweepError::io("creating the lock", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(SweepError::Busy(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(SweepError::io("locking", &lock_path)(e)),
        }
        if dir.join(MANIFEST).exists() {
            let found = Manifest::read(dir)?;
            let same_shard = (found.shard_index, found.shard_count)
                == (manifest.shard_index, manifest.shard_count);
            if !found.same_sweep(manifest) || !same_shard {
                return Err(SweepError::OtherSweep {
                    dir: dir.to_path_buf(),
                    found: describe(&found),
                    wanted: describe(manifest),
                });
            }
        } else {
            check_only_sweep_files(dir)?;
            let bytes = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
            let path = dir.join(MANIFEST);
            crate::atomic_file::write_atomically(&path, &bytes)
                .map_err(SweepError::io("writing", &path))?;
        }
        // A run killed between writing a record's temporary file and renaming it leaves the
        // temporary file: the run was not finished, so it goes (only names the suite makes).
        for entry in fs::read_dir(&records).map_err(SweepError::io("reading", &records))? {
            let entry = entry.map_err(SweepError::io("reading", &records))?;
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file
                && crate::atomic_file::is_temporary_name(&entry.file_name().to_string_lossy())
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The finished runs, by id.
    pub fn finished(&self) -> Result<BTreeMap<String, RunRecord>, SweepError> {
        read_records(&self.dir)
    }

    /// Stores a finished run's record whole.
    pub fn store(&self, id: &str, record: &RunRecord) -> Result<(), SweepError> {
        let path = self.dir.join(RECORDS).join(format!("{id}.json"));
        let bytes = serde_json::to_vec(record).map_err(|e| SweepError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        crate::atomic_file::write_atomically(&path, &bytes)
            .map_err(SweepError::io("writing", &path))
    }
}

/// A folder without a manifest becomes a sweep folder only where it holds nothing but what
/// opening one makes (`records/` without records, `.lock`, temporary files): a folder of the
/// user's is never adopted.
fn check_only_sweep_files(dir: &Path) -> Result<(), SweepError> {
    if !read_records(dir)?.is_empty() {
        return Err(SweepError::RecordsWithoutManifest(dir.to_path_buf()));
    }
    let records = dir.join(RECORDS);
    let listing = |folder: &Path| -> Result<Vec<(String, bool)>, SweepError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(folder).map_err(SweepError::io("reading", folder))? {
            let entry = entry.map_err(SweepError::io("reading", folder))?;
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            names.push((entry.file_name().to_string_lossy().into_owned(), is_file));
        }
        Ok(names)
    };
    let ours = |name: &str, is_file: bool| is_file && crate::atomic_file::is_temporary_name(name);
    let foreign = (listing(dir)?.into_iter())
        .find(|(name, is_file)| {
            !(name == RECORDS || (name == ".lock" && *is_file) || ours(name, *is_file))
        })
        .map(|(name, _)| name)
        .or_else(|| {
            (listing(&records).ok()?.into_iter())
                .find(|(name, is_file)| !ours(name, *is_file))
                .map(|(name, _)| format!("{RECORDS}/{name}"))
        });
    match foreign {
        Some(file) => Err(SweepError::NotASweepFolder {
            dir: dir.to_path_buf(),
            file,
        }),
        None => Ok(()),
    }
}

/// The records of a sweep folder, by run id.
pub fn read_records(dir: &Path) -> Result<BTreeMap<String, RunRecord>, SweepError> {
    let records = dir.join(RECORDS);
    let mut found = BTreeMap::new();
    let entries = match fs::read_dir(&records) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(SweepError::io("reading", &records)(e)),
    };
    for entry in entries {
        let path = entry.map_err(SweepError::io("reading", &records))?.path();
        let (Some(id), Some("json")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|e| e.to_str()),
        ) else {
            continue;
        };
        let text =
            crate::input_file::read_text_bounded(&path, crate::input_file::MAX_RECORDS_BYTES)
                .map_err(SweepError::io("reading", &path))?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|e| SweepError::Corrupt {
            path: path.clone(),
            message: format!("{e} (delete the file to run that run again)"),
        })?;
        record.validate().map_err(|e| SweepError::Corrupt {
            path: path.clone(),
            message: format!("{e} (delete the file to run that run again)"),
        })?;
        found.insert(id.to_string(), record);
    }
    Ok(found)
}

fn describe(manifest: &Manifest) -> String {
    format!(
        "scenario {:?}{} of specdef {}, shard {}/{}",
        manifest.scenario.name,
        manifest
            .variant
            .as_ref()
            .map_or(String::new(), |v| format!(" ({v})")),
        manifest.crate_version,
        manifest.shard_index,
        manifest.shard_count
    )
}

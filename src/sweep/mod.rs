//! Sweeps (`specdef sweep`): a scenario's runs over several seeds and the attack grid or a
//! seeded random search, as one stable run list that independent processes split into shards
//! (`--shard I/N`, or a Slurm array's or a Kubernetes indexed Job's index), each keeping its
//! finished runs in a folder it resumes from; `specdef merge` joins the folders.

#[cfg(not(target_arch = "wasm32"))]
mod folder;
#[cfg(not(target_arch = "wasm32"))]
mod merge;
mod plan;
#[cfg(not(target_arch = "wasm32"))]
mod run;
mod shard;

pub use crate::scenario::{MAX_SWEEP_RUNS, RandomSearch, ScheduleKind, SweepConfig};
#[cfg(not(target_arch = "wasm32"))]
pub use folder::{MANIFEST, Manifest, SweepFolder, read_records};
#[cfg(not(target_arch = "wasm32"))]
pub use merge::{Merged, merge, sweep_folders};
pub use plan::{PlannedRun, plan, run_count, seeds, with_seed};
#[cfg(not(target_arch = "wasm32"))]
pub use run::{SweepProgress, run_sweep, state_dir};
pub use shard::Shard;

use std::path::PathBuf;

/// Why a sweep, a resume or a merge could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(
        "{} is busy: another specdef process is running this sweep there; wait for it or choose another folder",
        .0.display()
    )]
    Busy(PathBuf),
    #[error(
        "{} holds another sweep ({found}); this one is {wanted}: choose another --out",
        dir.display()
    )]
    OtherSweep {
        dir: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{} holds run records but no sweep.json: nothing says which sweep they are of, so they are \
         never taken as this one's; move records/ away or choose another --out",
        .0.display()
    )]
    RecordsWithoutManifest(PathBuf),
    #[error(
        "{} holds {file:?} but no sweep.json: it is not a sweep folder, and a sweep writes only into \
         a new or empty folder or its own; choose another --out",
        dir.display()
    )]
    NotASweepFolder { dir: PathBuf, file: String },
    #[error(
        "{} holds no sweep: neither sweep.json nor shard-* folders with one",
        .0.display()
    )]
    NoSweep(PathBuf),
    #[error("refusing to merge {} with {}: {why}", first.display(), other.display())]
    Mixed {
        first: PathBuf,
        other: PathBuf,
        why: String,
    },
    #[error(transparent)]
    Run(#[from] crate::scenario::RunError),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(not(target_arch = "wasm32"))]
impl SweepError {
    fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> SweepError {
        let path = path.to_path_buf();
        move |source| SweepError::Io {
            action,
            path,
            source,
        }
    }
}

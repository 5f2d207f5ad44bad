//! `specdef merge`: the records of a sweep's shard folders as one run list, in the plan's
//! order. Folders of another scenario, variant or crate version are refused, as are records
//! that do not belong to the sweep's plan or were computed by different engines; runs no
//! folder holds are listed as missing, runs two folders hold as duplicated (the first kept).

use super::SweepError;
use super::folder::{MANIFEST, Manifest, read_records};
use super::plan::plan;
use crate::scenario::{RunRecord, Scenario};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Merged {
    pub scenario: Scenario,
    pub variant: Option<String>,
    /// The shard folders read.
    pub folders: Vec<PathBuf>,
    /// Every record found, in the plan's order.
    pub records: Vec<RunRecord>,
    /// Run ids of the plan no folder holds.
    pub missing: Vec<String>,
    /// Run ids more than one folder holds, with those folders; whether their outcomes differ.
    pub duplicated: Vec<(String, Vec<PathBuf>, bool)>,
}

/// The sweep folders `paths` name: each a sweep folder (with `sweep.json`) or a folder of them
/// (`shard-*`, as `specdef sweep --shard` writes them).
pub fn sweep_folders(paths: &[PathBuf]) -> Result<Vec<PathBuf>, SweepError> {
    let mut folders = Vec::new();
    for path in paths {
        if path.join(MANIFEST).is_file() {
            folders.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(SweepError::io("reading", path))?;
        let mut shards: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.starts_with("shard-") && p.join(MANIFEST).is_file()
            })
            .collect();
        if shards.is_empty() {
            return Err(SweepError::NoSweep(path.clone()));
        }
        shards.sort();
        folders.extend(shards);
    }
    Ok(folders)
}

/// Merges the sweep folders under `paths`.
pub fn merge(paths: &[PathBuf]) -> Result<Merged, SweepError> {
    let folders = sweep_folders(paths)?;
    let manifests: Vec<Manifest> = folders
        .iter()
        .map(|f| Manifest::read(f))
        .collect::<Result<_, _>>()?;
    let first = &manifests[0];
    for (folder, manifest) in folders.iter().zip(&manifests).skip(1) {
        if !manifest.same_sweep(first) {
            return Err(SweepError::Mixed {
                first: folders[0].clone(),
                other: folder.clone(),
                why: mismatch(first, manifest),
            });
        }
    }
    let planned: BTreeMap<String, usize> = (plan(&first.scenario).iter().enumerate())
        .map(|(position, run)| (run.id(), position))
        .collect();
    let mut found: BTreeMap<String, (RunRecord, PathBuf)> = BTreeMap::new();
    let mut duplicated: BTreeMap<String, (Vec<PathBuf>, bool)> = BTreeMap::new();
    let mut engine: Option<(String, PathBuf)> = None;
    for folder in &folders {
        for (id, record) in read_records(folder)? {
            let file = folder.join("records").join(format!("{id}.json"));
            check_record(&id, &record, first, &planned, &file)?;
            match &engine {
                None => engine = Some((record.engine.clone(), file.clone())),
                Some((name, seen)) if *name != record.engine => {
                    return Err(SweepError::Mixed {
                        first: seen.clone(),
                        other: file,
                        why: format!("engines {name} and {}", record.engine),
                    });
                }
                Some(_) => {}
            }
            match found.get(&id) {
                Some((kept, kept_folder)) => {
                    let differ = !same_outcome(kept, &record);
                    let entry = duplicated
                        .entry(id)
                        .or_insert_with(|| (vec![kept_folder.clone()], false));
                    entry.0.push(folder.clone());
                    entry.1 |= differ;
                }
                None => {
                    found.insert(id, (record, folder.clone()));
                }
            }
        }
    }
    let missing: Vec<String> = (planned.keys())
        .filter(|id| !found.contains_key(*id))
        .cloned()
        .collect();
    let mut records: Vec<(usize, RunRecord)> = (found.into_iter())
        .map(|(id, (record, _))| (planned[&id], record))
        .collect();
    records.sort_by_key(|(position, _)| *position);
    Ok(Merged {
        scenario: first.scenario.clone(),
        variant: first.variant.clone(),
        folders,
        records: records.into_iter().map(|(_, r)| r).collect(),
        missing,
        duplicated: (duplicated.into_iter())
            .map(|(id, (folders, differ))| (id, folders, differ))
            .collect(),
    })
}

fn mismatch(first: &Manifest, other: &Manifest) -> String {
    if first.crate_version != other.crate_version {
        format!(
            "specdef versions {} and {}",
            first.crate_version, other.crate_version
        )
    } else if first.variant != other.variant {
        format!("variants {:?} and {:?}", first.variant, other.variant)
    } else {
        format!(
            "scenarios {:?} and {:?} differ",
            first.scenario.name, other.scenario.name
        )
    }
}

/// A record belongs where its file says: a run of the plan, of the manifest's scenario and
/// version, with the seed and trial its id names.
fn check_record(
    id: &str,
    record: &RunRecord,
    manifest: &Manifest,
    planned: &BTreeMap<String, usize>,
    file: &Path,
) -> Result<(), SweepError> {
    let refuse = |message: String| {
        Err(SweepError::Corrupt {
            path: file.to_path_buf(),
            message,
        })
    };
    if !planned.contains_key(id) {
        return refuse(format!("{id} is not a run of the sweep's plan"));
    }
    if record.crate_version != manifest.crate_version {
        return refuse(format!(
            "a record of specdef {}, the folder's sweep is of {}",
            record.crate_version, manifest.crate_version
        ));
    }
    if record.scenario != manifest.scenario.name || record.variant != manifest.variant {
        return refuse(format!(
            "a record of scenario {:?} ({:?}), the folder's sweep is {:?} ({:?})",
            record.scenario, record.variant, manifest.scenario.name, manifest.variant
        ));
    }
    let named = format!("s{}-", record.seed);
    let trial = record.trial.map(|t| format!("-r{t:04}"));
    if !id.starts_with(&named) || trial.is_none_or(|t| !id.ends_with(&t)) {
        return refuse(format!(
            "the record's seed {} and trial {:?} are not those its name {id} gives",
            record.seed, record.trial
        ));
    }
    Ok(())
}

/// Two records of one run agree on what it measured (their timings may differ).
fn same_outcome(a: &RunRecord, b: &RunRecord) -> bool {
    RunRecord {
        wall_ms: 0.0,
        pretrain_from_cache: None,
        ..a.clone()
    } == RunRecord {
        wall_ms: 0.0,
        pretrain_from_cache: None,
        ..b.clone()
    }
}

//! The model cache: trained models kept between runs under a hash of what produced them. The
//! released model (`pretrain-*`: crate version, engine, data, model, pretraining settings,
//! seed) and each baseline defence trained on it (`baseline-*`: the released model's key and
//! the defence's parameters). It is never trusted blindly: the file carries the whole key and a
//! checksum of its parameters, and a file whose key or checksum does not match, or whose
//! weights are not finite, is retrained, with a note saying why. By default it lives in the
//! user's cache folder, not a world-writable one.

use crate::model::{HostModel, ModelSpec, file};
use crate::training::Curve;
use std::path::{Path, PathBuf};

const KEY_FIELD: &str = "specdef.cache_key";
const CHECKSUM_FIELD: &str = "specdef.checksum";
/// A baseline's training curves (`Curve::to_json`), so a run from the cache reports them too;
/// not covered by the checksum, which guards the parameters.
const CURVES_FIELD: &str = "specdef.training_curves";

/// `$SPECDEF_CACHE_DIR`, else `$XDG_CACHE_HOME/specdef`, else `~/.cache/specdef`; None where
/// none is known (the run then pretrains without a cache).
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("SPECDEF_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("specdef")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("specdef")))
}

/// One cache entry: where it lives, the key it must carry and what it holds (`pretrained`,
/// `baseline`), as notes name it.
pub struct ModelCache {
    file: PathBuf,
    key: String,
    holds: &'static str,
}

impl ModelCache {
    /// The released model's entry.
    pub fn pretrained(dir: &Path, key: String) -> Self {
        Self::new(dir, "pretrain", "pretrained", key)
    }

    /// A baseline defence's trained model.
    pub fn baseline(dir: &Path, key: String) -> Self {
        Self::new(dir, "baseline", "baseline", key)
    }

    fn new(dir: &Path, prefix: &str, holds: &'static str, key: String) -> Self {
        Self {
            file: dir.join(format!(
                "{prefix}-{:016x}.safetensors",
                crate::fnv::fnv1a(key.bytes())
            )),
            key,
            holds,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The cached model where there is one that can be trusted; else None and, where a file
    /// was there, why it was not used.
    pub fn load(&self, spec: &ModelSpec) -> (Option<HostModel>, Option<String>) {
        let (model, note) = self.load_with_curves(spec);
        (model.map(|(model, _)| model), note)
    }

    /// As `load`, with the training curves stored beside the model (none where it has none or
    /// they cannot be read; the model is still used).
    pub fn load_with_curves(
        &self,
        spec: &ModelSpec,
    ) -> (Option<(HostModel, Vec<Curve>)>, Option<String>) {
        let shown = self.file.display();
        let bytes = match crate::input_file::read_bounded(
            &self.file,
            crate::input_file::MAX_TENSOR_FILE_BYTES,
        ) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, None),
            Err(e) => {
                return (
                    None,
                    Some(format!("cache {shown} unreadable ({e}): retraining")),
                );
            }
        };
        let refuse = |why: String| (None, Some(format!("cache {shown} {why}: retraining")));
        let (model, metadata) = match file::decode(&bytes).and_then(|(m, _)| {
            let metadata = file::metadata(&bytes)?;
            Ok((m, metadata))
        }) {
            Ok(found) => found,
            Err(e) => return refuse(format!("is not a valid model file ({e})")),
        };
        if metadata.get(KEY_FIELD) != Some(&self.key) {
            return refuse("was written for another configuration (its key differs)".to_string());
        }
        if metadata.get(CHECKSUM_FIELD) != Some(&file::parameter_checksum(&model)) {
            return refuse("does not match its checksum".to_string());
        }
        if &model.spec != spec {
            return refuse("holds another architecture".to_string());
        }
        if (model.parameters().iter()).any(|(_, m)| m.values.iter().any(|v| !v.is_finite())) {
            return refuse("has non-finite weights".to_string());
        }
        let curves = (metadata.get(CURVES_FIELD)).map(|text| Curve::from_json(text));
        let curves_note = match &curves {
            Some(Err(e)) => format!(" (its training curves are unreadable: {e})"),
            _ => String::new(),
        };
        (
            Some((model, curves.and_then(Result::ok).unwrap_or_default())),
            Some(format!(
                "{} model from cache {shown}{curves_note}",
                self.holds
            )),
        )
    }

    /// Writes the model with its key and checksum (atomically).
    pub fn store(&self, model: &HostModel) -> Result<(), String> {
        self.store_with_curves(model, &[])
    }

    /// As `store`, with the training curves that produced the model (none: nothing stored).
    pub fn store_with_curves(&self, model: &HostModel, curves: &[Curve]) -> Result<(), String> {
        if let Some(dir) = self.file.parent() {
            crate::atomic_file::create_folder(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut extra = vec![
            (KEY_FIELD, self.key.clone()),
            (CHECKSUM_FIELD, file::parameter_checksum(model)),
        ];
        if !curves.is_empty() {
            extra.push((CURVES_FIELD, Curve::to_json(curves)));
        }
        let bytes = file::encode_with(model, "none", &extra)?;
        crate::atomic_file::write_atomically(&self.file, &bytes)
            .map_err(|e| format!("{}: {e}", self.file.display()))
    }
}

//! A defence as data: which defence, with its own parameters. Targets, summaries and records
//! carry this value (records as the `defense_params` object, the value serialised), so a new
//! defence is a new variant here and its parameters travel with every result it produced, not a
//! label string and columns of its own.

use super::{DefenseError, Npo, Rmu, SpecDef, TrainingStage};
use crate::linalg::{Matrix, Svd};
use crate::model::HostModel;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Defense {
    /// The released model as it is.
    None,
    /// SpecDef, its thin-compensation form or its no-compensation ablation.
    SpecDef(SpecDef),
    /// RMU (`rmu.rs`): a training stage on the engine, not a rewrite.
    Rmu(Box<Rmu>),
    /// NPO (`npo.rs`): a training stage on the engine.
    Npo(Box<Npo>),
}

impl Defense {
    /// As records' `defense` column names it: `none`, `specdef`, `specdef-thin`,
    /// `specdef-ablation`, `rmu`.
    pub fn name(&self) -> &'static str {
        match self {
            Defense::None => "none",
            Defense::SpecDef(d) => d.kind_name(),
            Defense::Rmu(_) => "rmu",
            Defense::Npo(_) => "npo",
        }
    }

    /// As tables and plots name it: `none`, `specdef a=1e4`, `rmu l=1 c=20`, `npo b=0.1`.
    pub fn label(&self) -> String {
        match self {
            Defense::None => "none".to_string(),
            Defense::SpecDef(d) => d.label(),
            Defense::Rmu(d) => d.label(),
            Defense::Npo(d) => d.label(),
        }
    }

    /// SpecDef's alpha; None without a spectral defence.
    pub fn alpha(&self) -> Option<f64> {
        self.spec_def().map(|d| d.alpha)
    }

    pub fn spec_def(&self) -> Option<&SpecDef> {
        match self {
            Defense::SpecDef(d) => Some(d),
            Defense::None | Defense::Rmu(_) | Defense::Npo(_) => None,
        }
    }

    /// The training stage that makes the defended model, for a defence that is trained on the
    /// engine (the baselines) rather than rewritten on the host.
    pub fn training_stage(&self) -> Option<&dyn TrainingStage> {
        match self {
            Defense::Rmu(d) => Some(d.as_ref()),
            Defense::Npo(d) => Some(d.as_ref()),
            Defense::None | Defense::SpecDef(_) => None,
        }
    }

    /// Its parameters as records carry them: the value serialised, `kind` naming the variant.
    pub fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a defence serialises to JSON")
    }

    /// The defended model released from `base`, with each SVD it needs computed by `svd` (the
    /// host's f64 one, or the engine's Jacobi).
    pub fn apply_with(
        &self,
        base: &HostModel,
        seed: u64,
        svd: &mut dyn FnMut(&Matrix) -> Result<Svd, String>,
    ) -> Result<HostModel, DefenseError> {
        match self {
            Defense::None => Ok(base.clone()),
            Defense::SpecDef(d) => d.apply_with(base, seed, svd),
            Defense::Rmu(_) | Defense::Npo(_) => Err(self.not_a_rewrite()),
        }
    }

    /// The same with the host's f64 SVD.
    pub fn apply(&self, base: &HostModel, seed: u64) -> Result<HostModel, DefenseError> {
        match self {
            Defense::None => Ok(base.clone()),
            Defense::SpecDef(d) => d.apply(base, seed),
            Defense::Rmu(_) | Defense::Npo(_) => Err(self.not_a_rewrite()),
        }
    }

    fn not_a_rewrite(&self) -> DefenseError {
        DefenseError::Config(format!(
            "{} is a training stage on the engine, not a rewrite of the model: a scenario run \
             trains it (`[defense] baselines`)",
            self.label()
        ))
    }
}

impl From<Option<SpecDef>> for Defense {
    fn from(defense: Option<SpecDef>) -> Self {
        defense.map_or(Defense::None, Defense::SpecDef)
    }
}

//! A defence as data: which defence, with its own parameters. Targets, summaries and records
//! carry this value (records as the `defense_params` object, the value serialised), so a new
//! defence is a new variant here and its parameters travel with every result it produced, not a
//! label string and columns of its own.

use super::{Conditioning, DefenseError, Npo, RepNoise, Rmu, SpecDef, Tar, TrainingStage};
use crate::linalg::{Matrix, Svd};
use crate::model::HostModel;
use serde::{Deserialize, Serialize};

/// An SVD for a defence's rewrite: the host's f64 one, or the engine's Jacobi.
pub type SvdOf<'a> = dyn FnMut(&Matrix) -> Result<Svd, String> + 'a;

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
    /// RepNoise (`repnoise.rs`): a training stage on the engine.
    RepNoise(Box<RepNoise>),
    /// TAR (`tar.rs`): a meta-learning training stage on the engine.
    Tar(Box<Tar>),
    /// Condition-number immunisation (`conditioning.rs`): a training stage on the engine.
    Conditioning(Box<Conditioning>),
    /// A baseline with SpecDef applied to the model it trained: does SpecDef stack?
    Stacked(Box<Stacked>),
}

/// SpecDef on top of a baseline defence: the baseline trains on the released model, then
/// SpecDef rewrites what it trained (`[defense] stack_alphas`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stacked {
    pub baseline: Defense,
    pub spec_def: SpecDef,
}

impl Defense {
    /// As records' `defense` column names it: `none`, `specdef`, `specdef-thin`,
    /// `specdef-ablation`, `rmu`, `npo`, `repnoise`, `tar`, `conditioning`, `stacked`.
    pub fn name(&self) -> &'static str {
        match self {
            Defense::None => "none",
            Defense::SpecDef(d) => d.kind_name(),
            Defense::Rmu(_) => "rmu",
            Defense::Npo(_) => "npo",
            Defense::RepNoise(_) => "repnoise",
            Defense::Tar(_) => "tar",
            Defense::Conditioning(_) => "conditioning",
            Defense::Stacked(_) => "stacked",
        }
    }

    /// As tables and plots name it: `none`, `specdef a=1e4`, `rmu l=1 c=20`, `npo b=0.1`,
    /// `rmu l=1 c=20 + specdef a=1e4`.
    pub fn label(&self) -> String {
        match self {
            Defense::None => "none".to_string(),
            Defense::SpecDef(d) => d.label(),
            Defense::Rmu(d) => d.label(),
            Defense::Npo(d) => d.label(),
            Defense::RepNoise(d) => d.label(),
            Defense::Tar(d) => d.label(),
            Defense::Conditioning(d) => d.label(),
            Defense::Stacked(d) => format!("{} + {}", d.baseline.label(), d.spec_def.label()),
        }
    }

    /// SpecDef's alpha; None without a spectral defence (or with one stacked on a baseline,
    /// which the claims about SpecDef alone do not judge).
    pub fn alpha(&self) -> Option<f64> {
        self.spec_def().map(|d| d.alpha)
    }

    pub fn spec_def(&self) -> Option<&SpecDef> {
        match self {
            Defense::SpecDef(d) => Some(d),
            Defense::None
            | Defense::Rmu(_)
            | Defense::Npo(_)
            | Defense::RepNoise(_)
            | Defense::Tar(_)
            | Defense::Conditioning(_)
            | Defense::Stacked(_) => None,
        }
    }

    /// The training stage that makes the defended model, for a defence that is trained on the
    /// engine (the baselines) rather than rewritten on the host.
    pub fn training_stage(&self) -> Option<&dyn TrainingStage> {
        match self {
            Defense::Rmu(d) => Some(d.as_ref()),
            Defense::Npo(d) => Some(d.as_ref()),
            Defense::RepNoise(d) => Some(d.as_ref()),
            Defense::Tar(d) => Some(d.as_ref()),
            Defense::Conditioning(d) => Some(d.as_ref()),
            Defense::Stacked(d) => d.baseline.training_stage(),
            Defense::None | Defense::SpecDef(_) => None,
        }
    }

    /// The defence whose training stage makes this one's model (itself, or the baseline under
    /// a stack): what trained models are kept and cached under.
    pub fn trained_part(&self) -> Option<&Defense> {
        match self {
            Defense::Rmu(_)
            | Defense::Npo(_)
            | Defense::RepNoise(_)
            | Defense::Tar(_)
            | Defense::Conditioning(_) => Some(self),
            Defense::Stacked(d) => Some(&d.baseline),
            Defense::None | Defense::SpecDef(_) => None,
        }
    }

    /// A baseline defence itself (trained, not stacked under SpecDef).
    pub fn is_baseline(&self) -> bool {
        self.trained_part() == Some(self)
    }

    /// A defence trained by the plain loop on one loss (RMU, NPO, RepNoise): TAR runs an attack
    /// inside each of its steps, and condition-number immunisation waits on the host at each.
    pub fn is_single_loss_stage(&self) -> bool {
        matches!(
            self,
            Defense::Rmu(_) | Defense::Npo(_) | Defense::RepNoise(_)
        )
    }

    /// One of the baselines of the paper's main table (RepNoise, TAR, RMU, NPO; its ELM is the
    /// relearning setting's released model), which its claims about baselines are about;
    /// condition-number immunisation is the suite's addition.
    pub fn in_paper_table(&self) -> bool {
        match self {
            Defense::Rmu(_) | Defense::Npo(_) | Defense::RepNoise(_) | Defense::Tar(_) => true,
            Defense::None
            | Defense::SpecDef(_)
            | Defense::Conditioning(_)
            | Defense::Stacked(_) => false,
        }
    }

    /// The defended model from what the training stage trained: that model, or SpecDef's
    /// rewrite of it for a stack (with the host's f64 SVD, or `engine_svd` where given).
    pub fn after_training(
        &self,
        trained: HostModel,
        seed: u64,
        engine_svd: Option<&mut SvdOf>,
    ) -> Result<HostModel, DefenseError> {
        match (self, engine_svd) {
            (Defense::Stacked(d), None) => d.spec_def.apply(&trained, seed),
            (Defense::Stacked(d), Some(svd)) => d.spec_def.apply_with(&trained, seed, svd),
            _ => Ok(trained),
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
        svd: &mut SvdOf,
    ) -> Result<HostModel, DefenseError> {
        match self {
            Defense::None => Ok(base.clone()),
            Defense::SpecDef(d) => d.apply_with(base, seed, svd),
            Defense::Rmu(_)
            | Defense::Npo(_)
            | Defense::RepNoise(_)
            | Defense::Tar(_)
            | Defense::Conditioning(_)
            | Defense::Stacked(_) => Err(self.not_a_rewrite()),
        }
    }

    /// The same with the host's f64 SVD.
    pub fn apply(&self, base: &HostModel, seed: u64) -> Result<HostModel, DefenseError> {
        match self {
            Defense::None => Ok(base.clone()),
            Defense::SpecDef(d) => d.apply(base, seed),
            Defense::Rmu(_)
            | Defense::Npo(_)
            | Defense::RepNoise(_)
            | Defense::Tar(_)
            | Defense::Conditioning(_)
            | Defense::Stacked(_) => Err(self.not_a_rewrite()),
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

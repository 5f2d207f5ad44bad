//! Defences of a released model, as one value (`Defense`) that targets and records carry:
//! SpecDef and its no-compensation ablation (rewrites on the host) and the baselines the paper
//! compares it with (training stages on the engine: RMU, NPO, RepNoise, TAR) and the other
//! convergence-rate defence (condition-number immunisation).

mod conditioning;
mod layers;
mod npo;
mod repnoise;
mod rmu;
mod specdef;
mod stage;
mod tar;
mod value;

pub use conditioning::Conditioning;
pub use layers::LayerSelection;
pub use npo::{Npo, row_cross_entropy};
pub use repnoise::RepNoise;
pub use rmu::Rmu;
pub use specdef::{
    CompensationForm, DefenseError, F64_COMPENSATION_BOUND, SpecDef, function_preservation,
    relative_errors,
};
pub use stage::{LossStage, StageData, TrainingStage};
pub use tar::Tar;
pub use value::{Defense, Stacked};

//! Training: the loop (`TrainSession`, `train`), first- and second-order optimisers, schedules.
//! Attacks fine-tune with it, and so do pretraining, the relearning setting's suppression and
//! trainability's benign fine-tuning: none of them is an attack.

mod noising;
mod objective;
mod optimizer;
mod schedule;
mod second_order;
mod train;

pub use noising::NoisingSet;
pub use objective::{HiddenTargetSet, PreferenceSet, TrainRows, TrainSet};
pub use optimizer::{
    GroupSettings, OptimizerConfig, OptimizerFamily, OptimizerHyper, OptimizerKind, OptimizerState,
};
pub use schedule::Schedule;
pub use second_order::{
    AdaHessianSettings, HessianAverage, MuonSettings, NEWTON_SCHULZ, NewtonCgSettings,
    SecondOrderConfig, SecondOrderHyper, SecondOrderState, SophiaEstimator, SophiaSettings,
};
pub use train::{
    MAX_BATCH, MAX_STEPS, TrainOutcome, TrainSession, TrainSettings, accuracy, mean_cross_entropy,
    train,
};
pub(crate) use train::{default_divergence_loss, default_eval_every, default_schedule};

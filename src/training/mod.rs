//! Training: the loop (`TrainSession`, `train`), TAR's meta-learning loop (`TamperSession`),
//! condition-number immunisation's (`ConditioningSession`), first- and second-order optimisers,
//! schedules.
//! Attacks fine-tune with it, and so do pretraining, the relearning setting's suppression and
//! trainability's benign fine-tuning: none of them is an attack.

mod conditioning;
mod curve;
mod noising;
mod objective;
mod optimizer;
mod run;
mod schedule;
mod second_order;
mod tamper;
mod train;

pub use conditioning::{
    ConditioningObjective, ConditioningRows, ConditioningSession, EIGEN_FLOOR, condition_number,
    ill_conditioning, probe_hessian, well_conditioning,
};
pub use curve::Curve;
pub use noising::NoisingSet;
pub use objective::{HiddenTargetSet, PreferenceSet, TrainRows, TrainSet};
pub use optimizer::{
    FirstOrderUpdate, GroupSettings, OptimizerConfig, OptimizerFamily, OptimizerHyper,
    OptimizerKind, OptimizerState,
};
pub use run::TrainRun;
pub use schedule::Schedule;
pub use second_order::{
    AdaHessianSettings, AdaHessianTensors, HessianAverage, MuonSettings, MuonTensors,
    NEWTON_SCHULZ, NewtonCgSettings, SecondOrderConfig, SecondOrderHyper, SecondOrderState,
    SophiaEstimator, SophiaSettings,
};
pub use tamper::{MAX_INNER_STEPS, SimulatedAttacks, TamperObjective, TamperRows, TamperSession};
pub use train::{
    MAX_BATCH, MAX_STEPS, TrainOutcome, TrainSession, TrainSettings, accuracy, mean_cross_entropy,
    train,
};
pub(crate) use train::{default_divergence_loss, default_eval_every, default_schedule};

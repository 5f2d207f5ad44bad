//! Attacks: fine-tuning the released model toward the harmful task with first-order and
//! second-order optimisers over learning-rate sweeps, after the adaptive attacker's rewrites.

mod adaptive;
mod optimizer;
mod schedule;
mod second_order;
mod train;

pub use adaptive::{AdaptiveAttack, DEFAULT_LORA_RANK, LoraPlacement};
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

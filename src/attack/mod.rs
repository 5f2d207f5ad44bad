//! Attacks: fine-tuning the released model toward the harmful task with first-order optimisers
//! over learning-rate sweeps.

mod optimizer;
mod schedule;
mod train;

pub use optimizer::{
    GroupSettings, OptimizerConfig, OptimizerHyper, OptimizerKind, OptimizerState,
};
pub use schedule::Schedule;
pub use train::{TrainOutcome, TrainSession, TrainSettings, accuracy, train};

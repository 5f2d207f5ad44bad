//! A defence trained on the engine: the baselines are training stages on the released model,
//! each with its own loss, training set and settings, run by the scenario before its attacks.

use super::DefenseError;
use crate::data::Dataset;
use crate::engine::Engine;
use crate::model::{DeviceModel, HostModel, ModelSpec};
use crate::training::{TrainRun, TrainSession, TrainSet, TrainSettings};

/// The data a stage trains and evaluates on.
#[derive(Clone, Copy, Debug)]
pub struct StageData<'a> {
    pub utility: &'a Dataset,
    pub harmful: &'a Dataset,
    /// Evaluation accuracy is measured on these (the utility test set).
    pub eval: &'a Dataset,
}

pub trait TrainingStage {
    /// Checks the settings against the model before any work, naming the field.
    fn validate(&self, model: &ModelSpec) -> Result<(), DefenseError>;

    /// The outer training run's settings (steps, optimiser, divergence threshold).
    fn settings(&self) -> &TrainSettings;

    /// Which version of the stage's algorithm trains it: part of its cache key, raised when a
    /// change to the code (not to the parameters) changes the model it trains, so a model from
    /// the cache is never one the code would no longer make.
    fn revision(&self) -> u32 {
        1
    }

    /// Starts training `device`, the released model `base` on the engine, in place; the
    /// caller drives the run and reads the model back when it ends.
    fn start(
        &self,
        engine: &mut dyn Engine,
        device: &DeviceModel,
        base: &HostModel,
        data: StageData,
        seed: u64,
    ) -> Result<Box<dyn TrainRun>, DefenseError>;
}

/// A stage that is one loss over a training set of its own, trained by the plain loop (RMU,
/// NPO, RepNoise); its `TrainingStage` follows from this.
pub trait LossStage {
    /// As `TrainingStage::validate`.
    fn check(&self, model: &ModelSpec) -> Result<(), DefenseError>;

    fn train_settings(&self) -> &TrainSettings;

    /// The stage's training rows, built from the released model `base` (its frozen activations
    /// or likelihoods) and the utility and harmful training sets.
    fn training_set(
        &self,
        base: &HostModel,
        utility: &Dataset,
        harmful: &Dataset,
        seed: u64,
    ) -> Result<TrainSet, DefenseError>;
}

impl<T: LossStage> TrainingStage for T {
    fn validate(&self, model: &ModelSpec) -> Result<(), DefenseError> {
        self.check(model)
    }

    fn settings(&self) -> &TrainSettings {
        self.train_settings()
    }

    fn start(
        &self,
        engine: &mut dyn Engine,
        device: &DeviceModel,
        base: &HostModel,
        data: StageData,
        seed: u64,
    ) -> Result<Box<dyn TrainRun>, DefenseError> {
        let set = self.training_set(base, data.utility, data.harmful, seed)?;
        let settings = self.train_settings();
        let session =
            TrainSession::start_rows(engine, device, set.rows(), data.eval, settings, seed)?;
        Ok(Box::new(session))
    }
}

/// The checks every stage's training settings share: first-order (the stages' losses have no
/// Hessian-vector products) and valid, named under `{kind}.train`.
pub fn validate_settings(kind: &str, train: &TrainSettings) -> Result<(), DefenseError> {
    if train.optimizer.is_second_order() {
        return Err(DefenseError::Config(format!(
            "{kind}.train.optimizer: {} is second-order; {kind} trains with a first-order one",
            train.optimizer.name()
        )));
    }
    (train.validate(&format!("{kind}.train"))).map_err(DefenseError::Config)
}

/// The harmful rows, then the utility rows, as one set, with per row whether it is harmful: the
/// one shuffled training set of the stages that train on both.
pub fn harmful_then_utility(harmful: &Dataset, utility: &Dataset) -> (Dataset, Vec<bool>) {
    let mut data = harmful.clone();
    data.inputs.extend_from_slice(&utility.inputs);
    data.labels.extend_from_slice(&utility.labels);
    let mut flags = vec![true; harmful.len()];
    flags.resize(data.len(), false);
    (data, flags)
}

/// Checks that a parameter is finite and not negative, naming it `{kind}.{field}`.
pub fn non_negative(kind: &str, field: &str, value: f64) -> Result<(), DefenseError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(DefenseError::Config(format!(
            "{kind}.{field} must be a finite non-negative number, got {value}"
        )))
    }
}

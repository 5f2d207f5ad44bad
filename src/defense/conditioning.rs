//! Condition-number immunisation (Zheng et al., ICML 2025, "Model Immunization from a Condition
//! Number Perspective"; the reference is its repository's `models/model.py`), the other defence
//! that controls the attacker's convergence rate: a training stage on the released model that
//! makes the harmful task's linear-probe Hessian on a feature layer ill-conditioned while the
//! utility task's stays well-conditioned, with cross-entropy on the utility rows. The loop and
//! where it departs from the reference are in `training/conditioning.rs`.

use super::DefenseError;
use super::stage::{StageData, TrainingStage, non_negative, validate_settings};
use crate::engine::Engine;
use crate::model::{DeviceModel, HostModel, ModelSpec};
use crate::training::{
    ConditioningObjective, ConditioningRows, ConditioningSession, TrainRun, TrainSettings,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditioning {
    /// The feature layer the probe reads (0-based; a hidden layer).
    pub layer: usize,
    /// The well-conditioning term's weight on the utility rows (the reference's `lambda_r1`,
    /// 1).
    pub well_weight: f64,
    /// The ill-conditioning term's weight on the harmful rows (the reference's `lambda_r2`,
    /// 5e7 for MNIST pixels; it scales with the features' size).
    pub ill_weight: f64,
    /// The training stage (the reference: Adam, lr 1e-3, batch 64, 30 epochs on MNIST).
    pub train: TrainSettings,
}

impl Conditioning {
    pub fn label(&self) -> String {
        format!("conditioning l={} ill={:e}", self.layer, self.ill_weight)
    }

    pub fn objective(&self) -> ConditioningObjective {
        ConditioningObjective {
            layer: self.layer,
            well_weight: self.well_weight,
            ill_weight: self.ill_weight,
        }
    }
}

impl TrainingStage for Conditioning {
    fn validate(&self, model: &ModelSpec) -> Result<(), DefenseError> {
        let hidden = model.layer_count().saturating_sub(1);
        if self.layer >= hidden {
            return Err(DefenseError::Config(format!(
                "conditioning.layer = {} is not a hidden layer (this model's are 0..{})",
                self.layer,
                hidden.saturating_sub(1)
            )));
        }
        let width = model.layer_shape(self.layer).1;
        if let Some(batch) = self.train.batch_size
            && batch < width
        {
            return Err(DefenseError::Config(format!(
                "conditioning.train.batch_size = {batch} is below layer {}'s width {width}: a \
                 batch's probe Hessian would be rank-deficient, its condition number the batch's \
                 artefact",
                self.layer
            )));
        }
        non_negative("conditioning", "well_weight", self.well_weight)?;
        non_negative("conditioning", "ill_weight", self.ill_weight)?;
        validate_settings("conditioning", &self.train)
    }

    fn settings(&self) -> &TrainSettings {
        &self.train
    }

    fn start(
        &self,
        engine: &mut dyn Engine,
        device: &DeviceModel,
        base: &HostModel,
        data: StageData,
        seed: u64,
    ) -> Result<Box<dyn TrainRun>, DefenseError> {
        self.validate(&base.spec)?;
        let session = ConditioningSession::start(
            engine,
            device,
            ConditioningRows {
                utility: data.utility,
                harmful: data.harmful,
            },
            data.eval,
            self.objective(),
            &self.train,
            seed,
        )?;
        Ok(Box::new(session))
    }
}

//! RMU, representation misdirection for unlearning (Li et al. 2024, "The WMDP Benchmark"; the
//! reference is `rmu/unlearn.py` of the WMDP repository). A training stage on the released
//! model: one hidden layer's activations on harmful inputs are pushed toward a fixed random
//! control vector `c u` (u uniform in [0, 1) per coordinate, then unit norm, as the reference's
//! `torch.rand`), while its activations on utility inputs are held at the frozen model's:
//!   loss = mse(h(x_harmful), c u) + retain_weight * mse(h(x_utility), h_frozen(x_utility)).
//!
//! Differences from the reference, each forced by the model or kept simple on purpose:
//! - The reference updates one matrix (the MLP's down projection) of the three decoder layers
//!   up to the steered one; here every parameter of layers `0..=layer` trains (the MLP's layers
//!   are single matrices), and the layers after it are left as released.
//! - The reference pairs one harmful and one utility batch per step and averages each term over
//!   its own batch; here both sets are one shuffled training set and a batch's loss is
//!   `sum_r weight_r |h_r - t_r|^2 / (batch width)`, harmful rows weighing 1 and utility rows
//!   `retain_weight`: with as many rows of each (digits 5-9 against 0-4), half the reference's.

use super::DefenseError;
use super::stage::{LossStage, non_negative, validate_settings};
use crate::data::Dataset;
use crate::linalg::Matrix;
use crate::model::{HostModel, ModelSpec};
use crate::training::{HiddenTargetSet, TrainSet, TrainSettings};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Mixed into the run's seed for the control vector, so it is not another draw's.
const CONTROL_SEED: u64 = 0x0072_6d75_5f75;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rmu {
    /// The layer whose output is steered (0-based; it must have a layer after it).
    pub layer: usize,
    /// `c`, the control vector's norm (the reference's `steering_coeff`: 20 by default, 6.5
    /// for zephyr-7b in the WMDP paper's appendix B.4). It must dwarf the activations' norm.
    pub steering: f64,
    /// The retain term's weight (the reference's `alpha`: 100 by default, 1200 for zephyr).
    pub retain_weight: f64,
    /// The training stage (the reference: AdamW, lr 5e-5, 80 batches of 4).
    pub train: TrainSettings,
}

impl Rmu {
    pub fn label(&self) -> String {
        format!("rmu l={} c={}", self.layer, self.steering)
    }

    /// `c u`: uniform in [0, 1) per coordinate, scaled to norm `c`, drawn from `seed`.
    pub fn control_vector(&self, width: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ CONTROL_SEED);
        let u: Vec<f64> = (0..width).map(|_| rng.random_range(0.0..1.0)).collect();
        let norm = u
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        u.iter().map(|v| v / norm * self.steering).collect()
    }
}

impl LossStage for Rmu {
    fn check(&self, model: &ModelSpec) -> Result<(), DefenseError> {
        let hidden = model.layer_count().saturating_sub(1);
        if self.layer >= hidden {
            return Err(DefenseError::Config(format!(
                "rmu.layer = {} is not a hidden layer (this model's are 0..{})",
                self.layer,
                hidden.saturating_sub(1)
            )));
        }
        non_negative("rmu", "steering", self.steering)?;
        non_negative("rmu", "retain_weight", self.retain_weight)?;
        validate_settings("rmu", &self.train)
    }

    fn train_settings(&self) -> &TrainSettings {
        &self.train
    }

    /// Each harmful image with the control vector as its target, each utility image with
    /// `base`'s own activations (f64) as its target.
    fn training_set(
        &self,
        base: &HostModel,
        utility: &Dataset,
        harmful: &Dataset,
        seed: u64,
    ) -> Result<TrainSet, DefenseError> {
        self.check(&base.spec)?;
        let width = base.spec.layer_shape(self.layer).1;
        let control = self.control_vector(width, seed);
        let kept = base.layer_output(
            &Matrix::new(utility.len(), utility.features, utility.inputs.clone()),
            self.layer,
        );
        let mut inputs = harmful.inputs.clone();
        inputs.extend_from_slice(&utility.inputs);
        let mut targets: Vec<f64> = (0..harmful.len()).flat_map(|_| control.clone()).collect();
        targets.extend_from_slice(&kept.values);
        let mut weights = vec![1.0; harmful.len()];
        weights.extend(std::iter::repeat_n(self.retain_weight, utility.len()));
        Ok(TrainSet::HiddenTargets(HiddenTargetSet {
            inputs,
            features: harmful.features,
            layer: self.layer,
            targets,
            width,
            weights,
        }))
    }
}

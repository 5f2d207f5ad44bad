//! RepNoise, representation noising (Rosati et al. 2024, "Representation Noising: A Defence
//! Mechanism Against Harmful Finetuning"; the reference is `rep_noise_loss` in its repository's
//! `representation_noising/loss.py`). A training stage on the released model: the harmful
//! inputs' representations at every hidden layer are pushed toward Gaussian noise (an MMD term),
//! their loss is pushed up, and cross-entropy on the utility inputs keeps the model:
//!   loss = E_utility[ce] + beta (1/H) sum_l MMD(h_l(harmful), N(0, I)) - alpha ln(1 + E_harmful[ce]).
//! The loss and where it departs from the reference are in `training/noising.rs`.
//! As with RMU and NPO here, harmful and utility rows are one shuffled training set; each term
//! averages over its own rows of the batch, as the reference's over its own batch.

use super::DefenseError;
use super::stage::{LossStage, harmful_then_utility, non_negative, validate_settings};
use crate::data::Dataset;
use crate::model::{HostModel, ModelSpec};
use crate::training::{NoisingSet, TrainSet, TrainSettings};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Mixed into the run's seed for the noise, so it is not another draw's.
const NOISE_SEED: u64 = 0x7265_706e_6f69;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepNoise {
    /// The harmful term's weight (the reference's `alpha`, 1).
    pub alpha: f64,
    /// The noise term's weight (the reference's `beta`, 0.001).
    pub beta: f64,
    /// The training stage (the paper: AdamW, lr 2e-5, one epoch of 10k paired rows, batch 8).
    pub train: TrainSettings,
}

impl RepNoise {
    pub fn label(&self) -> String {
        format!("repnoise a={} b={}", self.alpha, self.beta)
    }
}

impl LossStage for RepNoise {
    fn check(&self, _model: &ModelSpec) -> Result<(), DefenseError> {
        non_negative("repnoise", "alpha", self.alpha)?;
        non_negative("repnoise", "beta", self.beta)?;
        validate_settings("repnoise", &self.train)
    }

    fn train_settings(&self) -> &TrainSettings {
        &self.train
    }

    /// The harmful images, then the utility images, with a standard Gaussian sample per row and
    /// hidden layer drawn from `seed`.
    fn training_set(
        &self,
        base: &HostModel,
        utility: &Dataset,
        harmful: &Dataset,
        seed: u64,
    ) -> Result<TrainSet, DefenseError> {
        self.check(&base.spec)?;
        let (data, flags) = harmful_then_utility(harmful, utility);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ NOISE_SEED);
        let noise = (0..base.layers.len() - 1)
            .map(|l| {
                let width = base.spec.layer_shape(l).1;
                (0..data.len() * width)
                    .map(|_| rng.sample::<f64, _>(StandardNormal))
                    .collect()
            })
            .collect();
        Ok(TrainSet::Noising(NoisingSet {
            data,
            harmful: flags,
            noise,
            alpha: self.alpha,
            beta: self.beta,
        }))
    }
}

//! NPO, negative preference optimisation (Zhang et al. 2024, "Negative Preference Optimization:
//! From Catastrophic Collapse to Effective Unlearning"; the reference is its TOFU code's
//! `NPO_RT` trainer). A training stage on the released model: on the harmful images the model
//! is pushed to make their labels less likely than a frozen reference (the released model
//! itself) does, with a loss that saturates as it succeeds, while cross-entropy on the utility
//! images keeps it:
//!   loss = (2/beta) E_harmful[softplus(beta (log p(y|x) - log p_ref(y|x)))]
//!          + retain_weight E_utility[cross-entropy].
//! Its gradient is gradient ascent on the harmful log-likelihood weighted by
//! 2 sigmoid(beta (log p - log p_ref)), which falls toward 0 as p falls below p_ref: the paper's
//! answer to gradient ascent's collapse.
//!
//! Differences from the reference: it averages the log-ratio of each batch's mean loss (one
//! ratio per batch, a sequence model's); here each image has its own ratio, as the paper's loss
//! is written. Both sets are one shuffled training set (as RMU's here), each batch's loss the
//! mean over its rows of the row's term: with as many rows of each, half the reference's.

use super::DefenseError;
use super::stage::{LossStage, harmful_then_utility, non_negative, validate_settings};
use crate::data::Dataset;
use crate::engine::cpu::CpuEngine64;
use crate::model::{HostModel, ModelSpec, predict};
use crate::training::{PreferenceSet, TrainSet, TrainSettings};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Npo {
    /// The inverse temperature (the reference's 0.1).
    pub beta: f64,
    /// The retain term's weight (the reference's `gamma`, 1).
    pub retain_weight: f64,
    /// The training stage (the reference: AdamW, lr 1e-5, 5 epochs on TOFU's forget set).
    pub train: TrainSettings,
}

impl Npo {
    pub fn label(&self) -> String {
        format!("npo b={}", self.beta)
    }
}

/// Each row's softmax cross-entropy against its label, in f64.
pub fn row_cross_entropy(logits: &[f64], labels: &[usize]) -> Vec<f64> {
    let classes = logits.len() / labels.len().max(1);
    (logits.chunks(classes).zip(labels))
        .map(|(row, &label)| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            max + sum.ln() - row[label]
        })
        .collect()
}

impl LossStage for Npo {
    fn check(&self, _model: &ModelSpec) -> Result<(), DefenseError> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(DefenseError::Config(format!(
                "npo.beta must be a positive number, got {}",
                self.beta
            )));
        }
        non_negative("npo", "retain_weight", self.retain_weight)?;
        validate_settings("npo", &self.train)
    }

    fn train_settings(&self) -> &TrainSettings {
        &self.train
    }

    /// The harmful images to forget, each with the released model's loss on its label (f64),
    /// then the utility images to retain.
    fn training_set(
        &self,
        base: &HostModel,
        utility: &Dataset,
        harmful: &Dataset,
        _seed: u64,
    ) -> Result<TrainSet, DefenseError> {
        self.check(&base.spec)?;
        let logits = predict(&mut CpuEngine64::new(), base, &harmful.inputs)
            .map_err(|e| DefenseError::Config(format!("npo: the reference model's losses: {e}")))?;
        let mut reference_loss = row_cross_entropy(&logits, &harmful.labels);
        reference_loss.resize(harmful.len() + utility.len(), 0.0);
        let (data, forget) = harmful_then_utility(harmful, utility);
        Ok(TrainSet::Preference(PreferenceSet {
            data,
            reference_loss,
            forget,
            beta: self.beta,
            retain_weight: self.retain_weight,
        }))
    }
}

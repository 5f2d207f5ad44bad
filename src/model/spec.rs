//! The architecture of a model, as written in scenario files and model-file metadata.

use crate::engine::Activation;
use serde::{Deserialize, Serialize};

/// The nonlinearity between layers; `identity` makes a deep linear network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationChoice {
    Relu,
    Gelu,
    Tanh,
    /// GELU in its exact (erf) form, as BERT-style encoders use it.
    #[serde(rename = "gelu_erf")]
    GeluErf,
    Identity,
}

impl ActivationChoice {
    pub fn activation(self) -> Option<Activation> {
        match self {
            ActivationChoice::Relu => Some(Activation::Relu),
            ActivationChoice::Gelu => Some(Activation::Gelu),
            ActivationChoice::Tanh => Some(Activation::Tanh),
            ActivationChoice::GeluErf => Some(Activation::GeluErf),
            ActivationChoice::Identity => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ActivationChoice::Relu => "relu",
            ActivationChoice::Gelu => "gelu",
            ActivationChoice::Tanh => "tanh",
            ActivationChoice::GeluErf => "gelu_erf",
            ActivationChoice::Identity => "identity",
        }
    }
}

/// Layer widths from input to output (`[64, 256, 256, 10]` is a two-hidden-layer MLP) and the
/// activation after every layer but the last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub widths: Vec<usize>,
    pub activation: ActivationChoice,
}

impl ModelSpec {
    pub fn layer_count(&self) -> usize {
        self.widths.len().saturating_sub(1)
    }

    /// (inputs, outputs) of layer `i`.
    pub fn layer_shape(&self, i: usize) -> (usize, usize) {
        (self.widths[i], self.widths[i + 1])
    }

    /// The parameter count with a compensation layer on every layer (the most any defence
    /// adds), or None where it overflows.
    pub fn parameter_bound(&self) -> Option<u64> {
        self.widths.windows(2).try_fold(0u64, |total, pair| {
            let (n, m) = (pair[0] as u64, pair[1] as u64);
            let layer = m
                .checked_mul(n)?
                .checked_add(m)?
                .checked_add(m.checked_mul(m)?)?;
            total.checked_add(layer)
        })
    }

    /// The activation after layer `i`: the model's, on every layer but the last.
    pub fn activation_after(&self, i: usize) -> Option<Activation> {
        if i + 1 < self.layer_count() {
            self.activation.activation()
        } else {
            None
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.widths.len() < 2 {
            return Err(format!(
                "model.widths needs at least an input and an output width, got {:?}",
                self.widths
            ));
        }
        if self.widths.contains(&0) {
            return Err(format!(
                "model.widths must be positive, got {:?}",
                self.widths
            ));
        }
        Ok(())
    }
}

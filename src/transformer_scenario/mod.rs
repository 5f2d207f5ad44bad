//! The transformer scenario (`specdef run --variant transformer`): the paper's relearning
//! setting on a real pretrained encoder. all-MiniLM-L6-v2's first blocks and a ten-topic head
//! are fine-tuned on WordNet glosses of ten noun topics (the release), the five harmful topics
//! are then suppressed (maximum-entropy outputs on them, a retain loss on the utility topics,
//! as the MLP's release does), SpecDef is applied to the encoder's linear maps, and the attacker
//! relearns the harmful topics over the attack grid, with the adaptive rewrites and two
//! controls (a linear probe: the head alone; and the biases and layer norms, outside SpecDef's
//! reach). Each attack run is a `RunRecord`, so the result folder, tables, claims and report
//! are the MLP scenario's.

mod classifier;
mod demo;
mod released;
mod runner;
mod topics;

pub use classifier::{DeviceClassifier, HostClassifier, Measured, TrainJob, train};
pub use demo::{AttackDemo, DemoInputs, DemoModelResult, DemoOutcome, DemoSettings};
pub use released::{RELEASED_FORMAT, ReleasedClassifier, ReleasedMeasures};
pub use runner::{TransformerInputs, release_classifier, run_transformer_scenario};
pub use topics::{Batcher, Example, TopicData, topic_names};

use crate::attack::AdaptiveAttack;
use crate::defense::LayerSelection;
use crate::encoder::EncoderOptimizer;
use crate::scenario::{AttackGrid, LrGrid, parse_with_variant};
use crate::training::{OptimizerKind, TrainSettings};
use serde::{Deserialize, Serialize};

/// The built-in transformer scenario and its variants (`quick`, `full`).
pub const TRANSFORMER_SCENARIO: &str = include_str!("transformer.toml");

/// `specdef run --variant NAME` names the transformer scenario with these: `transformer`
/// (its base), `transformer-quick`, `transformer-full`.
pub const VARIANT_PREFIX: &str = "transformer";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerScenario {
    pub name: String,
    pub seed: u64,
    pub encoder: EncoderSettings,
    /// Fine-tuning on all ten topics: the model as it knew the harmful topics.
    pub release: TrainSettings,
    /// The suppression of the harmful topics.
    pub suppression: TrainSettings,
    pub defense: EncoderDefenseGrid,
    pub attack: AttackGrid,
    #[serde(default)]
    pub adaptive: EncoderAdaptiveGrid,
    #[serde(default)]
    pub controls: ControlGrid,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSettings {
    /// How many of the encoder's six blocks to keep.
    pub blocks: usize,
    /// Tokens per gloss, [CLS] and [SEP] included (longer glosses are truncated).
    pub tokens: usize,
    /// Held-out glosses per side (utility, harmful): fixed samples.
    pub test_size: usize,
}

/// SpecDef on the encoder's linear maps (`layers` indexes them block by block in
/// `encoder::BLOCK_LINEAR_MAPS` order; `all`: every map of the kept blocks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderDefenseGrid {
    pub alphas: Vec<f64>,
    pub k: usize,
    pub layers: LayerSelection,
}

/// Rewrites of the defended model (the MLP scenario's names), each attacked with these
/// optimisers over the attack grid's rates. LoRA on the weights also runs on the undefended
/// model, as its baseline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderAdaptiveGrid {
    pub attacks: Vec<AdaptiveAttack>,
    #[serde(default)]
    pub optimizers: Vec<OptimizerKind>,
    /// Their learning rates; the attack grid's where absent.
    #[serde(default)]
    pub lr_grid: Option<LrGrid>,
}

/// Attacks that train only part of the model, on the undefended and every defended model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlGrid {
    pub parts: Vec<ControlPart>,
    #[serde(default)]
    pub optimizers: Vec<OptimizerKind>,
    /// Their learning rates; the attack grid's where absent.
    #[serde(default)]
    pub lr_grid: Option<LrGrid>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlPart {
    /// The head alone: a linear probe on the frozen features.
    Head,
    /// The biases, the layer norms and the head: what SpecDef does not reparameterise.
    BiasesAndNorms,
}

impl ControlPart {
    /// How records name the control (their `adaptive` field: a partly frozen attacker).
    pub fn name(self) -> &'static str {
        match self {
            ControlPart::Head => "probe-head",
            ControlPart::BiasesAndNorms => "biases-and-norms",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransformerError {
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Weights(#[from] crate::encoder::WeightsError),
    #[error(transparent)]
    Wordnet(#[from] crate::data::wordnet::WordnetError),
    #[error(transparent)]
    Defense(#[from] crate::defense::DefenseError),
    #[error("{0}")]
    Setting(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("storing a record: {0}")]
    Store(String),
}

impl TransformerScenario {
    /// Parses a transformer scenario file, applying the named variant.
    pub fn parse(text: &str, variant: Option<&str>, origin: &str) -> Result<Self, String> {
        let scenario: Self = parse_with_variant(text, variant, origin)?;
        scenario.validate().map_err(|e| format!("{origin}: {e}"))?;
        Ok(scenario)
    }

    /// The built-in scenario under a `specdef run --variant` name (`transformer`,
    /// `transformer-quick`, `transformer-full`); None for a name that is not one of them.
    pub fn builtin(run_variant: &str) -> Option<Result<Self, String>> {
        let variant = match run_variant.strip_prefix(VARIANT_PREFIX)? {
            "" => None,
            rest => Some(rest.strip_prefix('-')?),
        };
        Some(Self::parse(
            TRANSFORMER_SCENARIO,
            variant,
            "built-in transformer scenario",
        ))
    }

    /// Whether a scenario file's text is a transformer scenario (it has an `[encoder]` table).
    pub fn is_transformer_file(text: &str) -> bool {
        text.parse::<toml::Table>()
            .is_ok_and(|t| t.get("encoder").is_some_and(toml::Value::is_table))
    }

    /// Checks what the types cannot, before any work.
    pub fn validate(&self) -> Result<(), String> {
        let encoder = &self.encoder;
        if !(1..=6).contains(&encoder.blocks) {
            return Err(format!(
                "encoder.blocks = {}: the encoder has 1 to 6 blocks",
                encoder.blocks
            ));
        }
        if !(3..=512).contains(&encoder.tokens) {
            return Err(format!(
                "encoder.tokens = {}: give 3 to 512 ([CLS], a token, [SEP] at least; the model \
                 has 512 positions)",
                encoder.tokens
            ));
        }
        if encoder.test_size == 0 {
            return Err("encoder.test_size must be at least 1".to_string());
        }
        self.release.validate("release")?;
        self.suppression.validate("suppression")?;
        for (table, settings) in [
            ("release", &self.release),
            ("suppression", &self.suppression),
        ] {
            if settings.optimizer.is_second_order() {
                return Err(format!(
                    "{table}.optimizer = {}: the release trains with a first-order optimiser",
                    settings.optimizer.name()
                ));
            }
        }
        let layer_count = 6 * encoder.blocks;
        let defense = &self.defense;
        defense
            .layers
            .resolve(layer_count, self.seed)
            .map_err(|e| {
                format!("defense.layers: {e} (the encoder's {layer_count} linear maps)")
            })?;
        if defense.k == 0 {
            return Err("defense.k must be at least 1".to_string());
        }
        for &alpha in &defense.alphas {
            if !(alpha.is_finite() && (1.0..=crate::scenario::MAX_ALPHA).contains(&alpha)) {
                return Err(format!("defense.alphas: {alpha:e} is outside 1..1e12"));
            }
        }
        if self.attack.optimizers.is_empty() || self.attack.lr_grid.values().is_empty() {
            return Err("attack: give at least one optimiser and one learning rate".to_string());
        }
        let grids = [
            (
                &self.attack.optimizers,
                Some(&self.attack.lr_grid),
                "attack",
            ),
            (
                &self.adaptive.optimizers,
                self.adaptive.lr_grid.as_ref(),
                "adaptive",
            ),
            (
                &self.controls.optimizers,
                self.controls.lr_grid.as_ref(),
                "controls",
            ),
        ];
        for (optimizers, grid, table) in grids {
            let lrs = grid.unwrap_or(&self.attack.lr_grid).values();
            if lrs.is_empty() || lrs.iter().any(|lr| !(lr.is_finite() && *lr > 0.0)) {
                return Err(format!("{table}.lr_grid: give positive learning rates"));
            }
            for &optimizer in optimizers {
                self.check_optimizer(optimizer, &lrs)?;
            }
        }
        Ok(())
    }

    /// Whether the encoder runs `optimizer`, and the attack's settings at each rate validate.
    fn check_optimizer(&self, optimizer: OptimizerKind, lrs: &[f64]) -> Result<(), String> {
        if !EncoderOptimizer::is_built(optimizer) {
            return Err(format!(
                "{}: not built for the encoder (first-order optimisers, muon and adahessian are)",
                optimizer.name()
            ));
        }
        for &lr in lrs {
            self.attack.settings(optimizer, lr).validate("attack")?;
        }
        Ok(())
    }

    /// The learning rates of the adaptive rewrites and of the controls.
    pub fn adaptive_rates(&self) -> Vec<f64> {
        (self.adaptive.lr_grid.as_ref())
            .map_or_else(|| self.attack.lr_grid.values(), LrGrid::values)
    }

    pub fn control_rates(&self) -> Vec<f64> {
        (self.controls.lr_grid.as_ref())
            .map_or_else(|| self.attack.lr_grid.values(), LrGrid::values)
    }
}

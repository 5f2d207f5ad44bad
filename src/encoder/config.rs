//! The encoder's architecture, read from the HuggingFace config.json that ships with it.

use crate::input_file::read_text_bounded;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("encoder config {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("encoder config: {0}")]
    Invalid(String),
}

/// What the forward pass needs to know; a BERT config's other fields (dropout, initialiser)
/// do not change inference or fine-tuning here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    hidden_act: String,
    #[serde(default = "absolute")]
    position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".to_string()
}

impl EncoderConfig {
    /// Parses config.json's text, refusing architectures this forward pass does not compute.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: EncoderConfig =
            serde_json::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        // HuggingFace's "gelu" is the exact (erf) form.
        if config.hidden_act != "gelu" {
            return Err(ConfigError::Invalid(format!(
                "hidden_act is {:?}; only \"gelu\" (the erf form) is supported",
                config.hidden_act
            )));
        }
        if config.position_embedding_type != "absolute" {
            return Err(ConfigError::Invalid(format!(
                "position_embedding_type is {:?}; only \"absolute\" is supported",
                config.position_embedding_type
            )));
        }
        let sizes = [
            ("vocab_size", config.vocab_size),
            ("hidden_size", config.hidden_size),
            ("num_attention_heads", config.num_attention_heads),
            ("num_hidden_layers", config.num_hidden_layers),
            ("intermediate_size", config.intermediate_size),
            ("max_position_embeddings", config.max_position_embeddings),
            ("type_vocab_size", config.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, size)| *size == 0) {
            return Err(ConfigError::Invalid(format!("{name} is 0")));
        }
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err(ConfigError::Invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        if !(config.layer_norm_eps > 0.0 && config.layer_norm_eps.is_finite()) {
            return Err(ConfigError::Invalid(format!(
                "layer_norm_eps must be positive, got {}",
                config.layer_norm_eps
            )));
        }
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file_error = |message: String| ConfigError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = read_text_bounded(path, 1 << 20).map_err(|e| file_error(e.to_string()))?;
        Self::from_json(&text).map_err(|e| file_error(e.to_string()))
    }

    /// The same encoder with only its first `layers` blocks (a smaller model for quick runs).
    pub fn truncated(mut self, layers: usize) -> Result<Self, ConfigError> {
        if layers == 0 || layers > self.num_hidden_layers {
            return Err(ConfigError::Invalid(format!(
                "cannot keep {layers} of {} blocks",
                self.num_hidden_layers
            )));
        }
        self.num_hidden_layers = layers;
        Ok(self)
    }

    /// The width of one attention head.
    pub fn head_width(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

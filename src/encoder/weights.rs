//! The encoder's weights under their published safetensors names (BertModel's), checked
//! against the configuration: every tensor present, F32, of the expected shape.

use super::config::{ConfigError, EncoderConfig};
use crate::input_file::read_bounded;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("encoder weights {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("encoder weights: {0}")]
    Invalid(String),
}

/// The largest model file read (all-MiniLM-L6-v2's is 91 MB).
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Weights by name, as f32 values in the file's row-major order.
#[derive(Clone, Debug)]
pub struct EncoderWeights {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Every tensor name and shape the forward pass reads, for `config`.
pub fn expected_tensors(config: &EncoderConfig) -> Vec<(String, Vec<usize>)> {
    let (d, f) = (config.hidden_size, config.intermediate_size);
    let mut names = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![config.vocab_size, d],
        ),
        (
            "embeddings.position_embeddings.weight".to_string(),
            vec![config.max_position_embeddings, d],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_string(),
            vec![config.type_vocab_size, d],
        ),
        ("embeddings.LayerNorm.weight".to_string(), vec![d]),
        ("embeddings.LayerNorm.bias".to_string(), vec![d]),
    ];
    for layer in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{layer}.");
        for (name, shape) in [
            ("attention.self.query.weight", vec![d, d]),
            ("attention.self.query.bias", vec![d]),
            ("attention.self.key.weight", vec![d, d]),
            ("attention.self.key.bias", vec![d]),
            ("attention.self.value.weight", vec![d, d]),
            ("attention.self.value.bias", vec![d]),
            ("attention.output.dense.weight", vec![d, d]),
            ("attention.output.dense.bias", vec![d]),
            ("attention.output.LayerNorm.weight", vec![d]),
            ("attention.output.LayerNorm.bias", vec![d]),
            ("intermediate.dense.weight", vec![f, d]),
            ("intermediate.dense.bias", vec![f]),
            ("output.dense.weight", vec![d, f]),
            ("output.dense.bias", vec![d]),
            ("output.LayerNorm.weight", vec![d]),
            ("output.LayerNorm.bias", vec![d]),
        ] {
            names.push((format!("{p}{name}"), shape));
        }
    }
    names
}

impl EncoderWeights {
    /// Reads the tensors `config` needs from a safetensors file's bytes (others, such as the
    /// pooler or the blocks a truncated config leaves out, are ignored).
    pub fn from_bytes(bytes: &[u8], config: &EncoderConfig) -> Result<Self, WeightsError> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| WeightsError::Invalid(format!("not a safetensors file ({e})")))?;
        let mut tensors = HashMap::new();
        for (name, shape) in expected_tensors(config) {
            let view = file
                .tensor(&name)
                .map_err(|_| WeightsError::Invalid(format!("no tensor {name:?}")))?;
            if view.dtype() != Dtype::F32 {
                return Err(WeightsError::Invalid(format!(
                    "{name} is {:?}, expected F32",
                    view.dtype()
                )));
            }
            if view.shape() != shape.as_slice() {
                return Err(WeightsError::Invalid(format!(
                    "{name} has shape {:?}, the config needs {shape:?}",
                    view.shape()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(WeightsError::Invalid(format!("{name}[{i}] is not finite")));
            }
            tensors.insert(name, (shape, values));
        }
        Ok(Self { tensors })
    }

    pub fn from_file(path: &Path, config: &EncoderConfig) -> Result<Self, WeightsError> {
        let file_error = |message: String| WeightsError::File {
            path: path.to_path_buf(),
            message,
        };
        let bytes = read_bounded(path, MAX_MODEL_BYTES).map_err(|e| file_error(e.to_string()))?;
        Self::from_bytes(&bytes, config).map_err(|e| file_error(e.to_string()))
    }

    /// A tensor's values (row-major) and shape; every name of [`expected_tensors`] is present.
    pub fn get(&self, name: &str) -> (&[usize], &[f32]) {
        let (shape, values) = &self.tensors[name];
        (shape, values)
    }

    /// How many parameters the loaded tensors hold.
    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(|(_, v)| v.len()).sum()
    }
}

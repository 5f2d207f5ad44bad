//! A pretrained BERT-style sentence encoder (all-MiniLM-L6-v2, fetched by
//! scripts/fetch-transformer.sh): its configuration, its weights under their published
//! safetensors names, and its forward pass recorded from the engine's ops (embeddings gathered
//! by token id, blocks of multi-head attention and a GELU feed-forward map, each followed by a
//! residual sum and layer normalisation, masked mean pooling). Every engine runs it, and the
//! transforms give its gradients and Hessian-vector products with no backward pass of its own.

mod batch;
mod classifier;
mod config;
mod device;
mod host;
mod optimizer;
mod weights;

pub use batch::TokenBatch;
pub use classifier::{
    ClassTarget, EncoderTrainable, TrainStep, record_logits, record_train_step, trainable_tensors,
};
pub use config::{ConfigError, EncoderConfig};
pub use device::{DeviceEncoder, EncoderRun};
pub use host::{BLOCK_LINEAR_MAPS, EncoderHost, NormParams};
pub use optimizer::{EncoderOptimizer, RecordedUpdate};
pub use weights::{EncoderWeights, WeightsError, expected_tensors};

use std::path::Path;

/// The encoder's files in a model folder (config.json, model.safetensors, tokenizer.json),
/// loaded with its first `layers` blocks (all where `None`).
pub fn load(
    folder: &Path,
    layers: Option<usize>,
) -> Result<(EncoderConfig, EncoderWeights), WeightsError> {
    let config = EncoderConfig::from_file(&folder.join("config.json"))?;
    let config = match layers {
        Some(layers) => config.truncated(layers)?,
        None => config,
    };
    let weights = EncoderWeights::from_file(&folder.join("model.safetensors"), &config)?;
    Ok((config, weights))
}

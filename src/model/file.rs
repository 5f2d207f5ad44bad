//! Model files: safetensors, one f64 tensor per parameter, named by the parameter registry
//! (`layers.{i}.weight` out x in, `layers.{i}.bias` 1 x out, `layers.{i}.compensation`,
//! `layers.{i}.factor2of3`, `layers.{i}.weight.lora_a`, ...). The header metadata carries
//! `specdef.format`, `model.widths` (JSON list), `model.activation`, `model.layers` (format 2:
//! each layer's chain of factors, input side first, with LoRA scales) and `defense` (JSON of the
//! defence's settings, or "none"). f64 keeps the defence's f64 weights exact. Format 1 files
//! (plain and SpecDef layers, no `model.layers`) still load.

use super::layer::{FactorOf, FactorRole, LoraOf};
use super::{ActivationChoice, HostLayer, HostModel, Matrix, ModelSpec};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::path::Path;
use thiserror::Error;

pub const FORMAT_VERSION: &str = "2";
/// Files of this format still load: plain layers, and SpecDef's (weight, compensation).
pub const FORMAT_VERSION_1: &str = "1";

#[derive(Debug, Error)]
pub enum ModelFileError {
    #[error("model file {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("model file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One factor of a layer's chain as the header describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FactorHeader {
    role: String,
    /// The LoRA branch's scale, where the factor has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lora_scale: Option<f64>,
}

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The bytes of a model file. `defense` is a JSON description of the defence, or "none".
pub fn encode(model: &HostModel, defense: &str) -> Result<Vec<u8>, String> {
    encode_with(model, defense, &[])
}

/// `encode` with more header metadata (for example a cache's key and checksum).
pub fn encode_with(
    model: &HostModel,
    defense: &str,
    extra: &[(&str, String)],
) -> Result<Vec<u8>, String> {
    model.validate()?;
    let named: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .parameters()
        .into_iter()
        .map(|(key, m)| (key.name(), vec![m.rows, m.cols], f64_bytes(&m.values)))
        .collect();
    let views = named
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F64, shape.clone(), bytes).map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let chains: Vec<Vec<FactorHeader>> = model
        .layers
        .iter()
        .map(|layer| {
            (layer.factors.iter())
                .map(|f| FactorHeader {
                    role: f.role.name(),
                    lora_scale: f.lora.as_ref().map(|l| l.scale),
                })
                .collect()
        })
        .collect();
    let metadata = [
        ("specdef.format", FORMAT_VERSION.to_string()),
        ("model.widths", to_json(&model.spec.widths)?),
        ("model.activation", model.spec.activation.name().to_string()),
        ("model.layers", to_json(&chains)?),
        ("defense", defense.to_string()),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

fn to_json<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

/// The chains a format-1 file implies: `[weight]`, or `[weight, compensation]` where the file
/// has the layer's compensation tensor.
fn format_1_chains(tensors: &SafeTensors<'_>, layers: usize) -> Vec<Vec<FactorHeader>> {
    let factor = |role: &str| FactorHeader {
        role: role.to_string(),
        lora_scale: None,
    };
    (0..layers)
        .map(|i| {
            let mut chain = vec![factor("weight")];
            if tensors
                .names()
                .contains(&format!("layers.{i}.compensation").as_str())
            {
                chain.push(factor("compensation"));
            }
            chain
        })
        .collect()
}

/// The header metadata of a model file's bytes (every key, the specdef ones and any other).
pub fn metadata(bytes: &[u8]) -> Result<std::collections::HashMap<String, String>, String> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    Ok(header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// A checksum of a model's parameters (FNV-1a over their f64 bytes in registry order, with the
/// tensor names): equal for bit-identical models, different after any change of a weight.
pub fn parameter_checksum(model: &HostModel) -> String {
    let bytes = (model.parameters().into_iter()).flat_map(|(key, matrix)| {
        key.name()
            .into_bytes()
            .into_iter()
            .chain(f64_bytes(&matrix.values))
    });
    let hash = crate::fnv::fnv1a(bytes);
    format!("{hash:016x}")
}

/// Parses a model file's bytes, checking every tensor against the architecture in the header.
pub fn decode(bytes: &[u8]) -> Result<(HostModel, String), String> {
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file ({e})"))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let metadata = header
        .metadata()
        .as_ref()
        .ok_or("no specdef metadata in the header")?;
    let field = |key: &str| {
        metadata
            .get(key)
            .cloned()
            .ok_or_else(|| format!("header metadata lacks {key:?}"))
    };
    let format = field("specdef.format")?;
    if format != FORMAT_VERSION && format != FORMAT_VERSION_1 {
        return Err(format!(
            "format {format:?}, this build reads {FORMAT_VERSION_1:?} and {FORMAT_VERSION:?}"
        ));
    }
    let widths: Vec<usize> =
        serde_json::from_str(&field("model.widths")?).map_err(|e| format!("model.widths: {e}"))?;
    let activation: ActivationChoice =
        serde_json::from_value(serde_json::Value::String(field("model.activation")?))
            .map_err(|e| format!("model.activation: {e}"))?;
    let spec = ModelSpec { widths, activation };
    spec.validate()?;
    let chains: Vec<Vec<FactorHeader>> = if format == FORMAT_VERSION_1 {
        format_1_chains(&tensors, spec.layer_count())
    } else {
        serde_json::from_str(&field("model.layers")?).map_err(|e| format!("model.layers: {e}"))?
    };
    if chains.len() != spec.layer_count() {
        return Err(format!(
            "model.layers describes {} layers, the widths {:?} need {}",
            chains.len(),
            spec.widths,
            spec.layer_count()
        ));
    }
    let read = |name: &str| -> Result<Matrix, String> {
        let view = tensors
            .tensor(name)
            .map_err(|_| format!("missing tensor {name}"))?;
        if view.dtype() != Dtype::F64 {
            return Err(format!("{name} is {:?}, expected F64", view.dtype()));
        }
        let &[rows, cols] = view.shape() else {
            return Err(format!(
                "{name} has shape {:?}, expected a matrix",
                view.shape()
            ));
        };
        let values: Vec<f64> = view
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        // Every tensor, biases and adapters included: a model with an infinite bias computes
        // nothing meaningful, and every command would measure it as if it did.
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "{name} holds a non-finite value ({}) at entry {at}: a diverged or corrupt model",
                values[at]
            ));
        }
        Ok(Matrix::new(rows, cols, values))
    };
    let mut layers = Vec::with_capacity(chains.len());
    for (i, chain) in chains.iter().enumerate() {
        let mut factors = Vec::with_capacity(chain.len());
        for header in chain {
            let role = FactorRole::parse(&header.role)
                .ok_or_else(|| format!("layer {i}: unknown factor role {:?}", header.role))?;
            let name = format!("layers.{i}.{}", role.name());
            let lora = match header.lora_scale {
                Some(scale) => Some(LoraOf {
                    a: read(&format!("{name}.lora_a"))?,
                    b: read(&format!("{name}.lora_b"))?,
                    scale,
                }),
                None => None,
            };
            factors.push(FactorOf {
                role,
                matrix: read(&name)?,
                lora,
                locked: false,
            });
        }
        let bias = read(&format!("layers.{i}.bias"))?;
        layers.push(HostLayer { factors, bias });
    }
    let model = HostModel { spec, layers };
    // Shapes against the architecture, then no tensor the description does not name.
    model.validate()?;
    if tensors.names().len() != model.parameters().len() {
        let mut names: Vec<&str> = tensors.names();
        names.sort_unstable();
        return Err(format!(
            "tensors {names:?} do not match the {} layers the header describes",
            model.layers.len()
        ));
    }
    Ok((model, field("defense")?))
}

/// Writes atomically: a temporary file beside the target, then a rename, so a crash never
/// leaves a half-written model.
pub fn save(path: &Path, model: &HostModel, defense: &str) -> Result<(), ModelFileError> {
    let shown = path.display().to_string();
    let bytes = encode(model, defense).map_err(|message| ModelFileError::Invalid {
        path: shown.clone(),
        message,
    })?;
    crate::atomic_file::write_atomically(path, &bytes).map_err(|source| ModelFileError::Io {
        path: shown,
        source,
    })
}

/// Reads a model file; the model and its defence description.
pub fn load(path: &Path) -> Result<(HostModel, String), ModelFileError> {
    let shown = path.display().to_string();
    let bytes = crate::input_file::read_bounded(path, crate::input_file::MAX_TENSOR_FILE_BYTES)
        .map_err(|source| ModelFileError::Io {
            path: shown.clone(),
            source,
        })?;
    decode(&bytes).map_err(|message| ModelFileError::Invalid {
        path: shown,
        message,
    })
}

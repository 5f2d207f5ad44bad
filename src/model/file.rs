//! Model files: safetensors, f64 tensors named `layers.{i}.weight` (out x in), `layers.{i}.bias`
//! (1 x out) and, for defended layers, `layers.{i}.compensation` (out x out). The header metadata
//! carries `specdef.format` ("1"), `model.widths` (JSON list), `model.activation` and `defense`
//! (JSON of the SpecDef settings, or "none"). f64 keeps the defence's f64 weights exact.

use super::{ActivationChoice, HostLayer, HostModel, Matrix, ModelSpec};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;
use thiserror::Error;

pub const FORMAT_VERSION: &str = "1";

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

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The bytes of a model file. `defense` is a JSON description of the defence, or "none".
pub fn encode(model: &HostModel, defense: &str) -> Result<Vec<u8>, String> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        let w = &layer.weight;
        named.push((
            format!("layers.{i}.weight"),
            vec![w.rows, w.cols],
            f64_bytes(&w.values),
        ));
        named.push((
            format!("layers.{i}.bias"),
            vec![1, layer.bias.len()],
            f64_bytes(&layer.bias),
        ));
        if let Some(c) = &layer.compensation {
            named.push((
                format!("layers.{i}.compensation"),
                vec![c.rows, c.cols],
                f64_bytes(&c.values),
            ));
        }
    }
    let views = named
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F64, shape.clone(), bytes).map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let widths = serde_json::to_string(&model.spec.widths).map_err(|e| e.to_string())?;
    let metadata = [
        ("specdef.format", FORMAT_VERSION.to_string()),
        ("model.widths", widths),
        ("model.activation", model.spec.activation.name().to_string()),
        ("defense", defense.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| e.to_string())
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
    if format != FORMAT_VERSION {
        return Err(format!(
            "format {format:?}, this build reads {FORMAT_VERSION:?}"
        ));
    }
    let widths: Vec<usize> =
        serde_json::from_str(&field("model.widths")?).map_err(|e| format!("model.widths: {e}"))?;
    let activation: ActivationChoice =
        serde_json::from_value(serde_json::Value::String(field("model.activation")?))
            .map_err(|e| format!("model.activation: {e}"))?;
    let spec = ModelSpec { widths, activation };
    spec.validate()?;
    let read = |name: &str, rows: usize, cols: usize| -> Result<Matrix, String> {
        let view = tensors
            .tensor(name)
            .map_err(|_| format!("missing tensor {name}"))?;
        if view.dtype() != Dtype::F64 {
            return Err(format!("{name} is {:?}, expected F64", view.dtype()));
        }
        if view.shape() != [rows, cols] {
            return Err(format!(
                "{name} has shape {:?}, the architecture needs [{rows}, {cols}]",
                view.shape()
            ));
        }
        let values = view
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        Ok(Matrix::new(rows, cols, values))
    };
    let mut layers = Vec::with_capacity(spec.layer_count());
    let mut expected_names = 0;
    for i in 0..spec.layer_count() {
        let (fan_in, fan_out) = spec.layer_shape(i);
        let compensation_name = format!("layers.{i}.compensation");
        let compensation = if tensors.names().contains(&compensation_name.as_str()) {
            expected_names += 1;
            Some(read(&compensation_name, fan_out, fan_out)?)
        } else {
            None
        };
        expected_names += 2;
        layers.push(HostLayer {
            weight: read(&format!("layers.{i}.weight"), fan_out, fan_in)?,
            bias: read(&format!("layers.{i}.bias"), 1, fan_out)?.values,
            compensation,
        });
    }
    if tensors.names().len() != expected_names {
        let mut names: Vec<&str> = tensors.names();
        names.sort_unstable();
        return Err(format!(
            "tensors {names:?} do not match {} layers",
            spec.layer_count()
        ));
    }
    Ok((HostModel { spec, layers }, field("defense")?))
}

/// Writes atomically: a temporary file beside the target, then a rename, so a crash never
/// leaves a half-written model.
pub fn save(path: &Path, model: &HostModel, defense: &str) -> Result<(), ModelFileError> {
    let shown = path.display().to_string();
    let bytes = encode(model, defense).map_err(|message| ModelFileError::Invalid {
        path: shown.clone(),
        message,
    })?;
    crate::report::write_atomically(path, &bytes).map_err(|source| ModelFileError::Io {
        path: shown,
        source,
    })
}

/// Reads a model file; the model and its defence description.
pub fn load(path: &Path) -> Result<(HostModel, String), ModelFileError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io {
        path: shown.clone(),
        source,
    })?;
    decode(&bytes).map_err(|message| ModelFileError::Invalid {
        path: shown,
        message,
    })
}

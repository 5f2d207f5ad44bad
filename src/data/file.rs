//! Data sets as safetensors files, so a number the suite measures on a batch can be checked with
//! another tool: `inputs` (n x d, F64 as written; F32 or F64 read) and `labels` (n class indices,
//! I64 as written; I64, I32 or U8 read). Written by `specdef export-data`, read by
//! `specdef curvature --data`.

use super::Dataset;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Why a data file could not be read or written, naming the tensor at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DataFileError {
    #[error("not a safetensors file ({0})")]
    Format(String),
    #[error("no `{0}` tensor (a data file holds `inputs` n x d and `labels` n)")]
    Missing(&'static str),
    #[error("`{tensor}` has shape {shape:?}; expected {expected}")]
    Shape {
        tensor: &'static str,
        shape: Vec<usize>,
        expected: String,
    },
    #[error("`{tensor}` is {dtype:?}; expected one of {expected}")]
    Dtype {
        tensor: &'static str,
        dtype: Dtype,
        expected: &'static str,
    },
    #[error("`inputs` row {row} holds a non-finite value")]
    NonFinite { row: usize },
    #[error("`labels`[{row}] = {value} is not a class index")]
    Label { row: usize, value: i64 },
    #[error("the data set is empty")]
    Empty,
}

/// The file's bytes for a data set.
pub fn encode(data: &Dataset) -> Result<Vec<u8>, DataFileError> {
    if data.is_empty() {
        return Err(DataFileError::Empty);
    }
    let inputs: Vec<u8> = data.inputs.iter().flat_map(|v| v.to_le_bytes()).collect();
    let labels: Vec<u8> = data
        .labels
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    fn view(
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Result<TensorView<'_>, DataFileError> {
        TensorView::new(dtype, shape, bytes).map_err(|e| DataFileError::Format(e.to_string()))
    }
    let tensors = [
        (
            "inputs",
            view(Dtype::F64, vec![data.len(), data.features], &inputs)?,
        ),
        ("labels", view(Dtype::I64, vec![data.len()], &labels)?),
    ];
    let metadata = [("format".to_string(), "specdef.data/1".to_string())]
        .into_iter()
        .collect();
    safetensors::tensor::serialize(tensors, Some(metadata))
        .map_err(|e| DataFileError::Format(e.to_string()))
}

/// Reads a data set back, refusing anything but whole rows of finite inputs with class labels.
pub fn decode(bytes: &[u8]) -> Result<Dataset, DataFileError> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| DataFileError::Format(e.to_string()))?;
    let inputs = file
        .tensor("inputs")
        .map_err(|_| DataFileError::Missing("inputs"))?;
    let labels = file
        .tensor("labels")
        .map_err(|_| DataFileError::Missing("labels"))?;
    let (rows, features) = match inputs.shape() {
        &[rows, features] if rows > 0 && features > 0 => (rows, features),
        shape => {
            return Err(DataFileError::Shape {
                tensor: "inputs",
                shape: shape.to_vec(),
                expected: "n x d with n, d >= 1".to_string(),
            });
        }
    };
    if labels.shape() != [rows] {
        return Err(DataFileError::Shape {
            tensor: "labels",
            shape: labels.shape().to_vec(),
            expected: format!("[{rows}] (one label per row of `inputs`)"),
        });
    }
    let input_values: Vec<f64> = match inputs.dtype() {
        Dtype::F64 => words::<8>(inputs.data()).map(f64::from_le_bytes).collect(),
        Dtype::F32 => words::<4>(inputs.data())
            .map(|w| f32::from_le_bytes(w) as f64)
            .collect(),
        dtype => {
            return Err(DataFileError::Dtype {
                tensor: "inputs",
                dtype,
                expected: "F32, F64",
            });
        }
    };
    if let Some(bad) = input_values.iter().position(|v| !v.is_finite()) {
        return Err(DataFileError::NonFinite {
            row: bad / features,
        });
    }
    let label_values: Vec<i64> = match labels.dtype() {
        Dtype::I64 => words::<8>(labels.data()).map(i64::from_le_bytes).collect(),
        Dtype::I32 => words::<4>(labels.data())
            .map(|w| i32::from_le_bytes(w) as i64)
            .collect(),
        Dtype::U8 => labels.data().iter().map(|&b| b as i64).collect(),
        dtype => {
            return Err(DataFileError::Dtype {
                tensor: "labels",
                dtype,
                expected: "I64, I32, U8",
            });
        }
    };
    let labels = label_values
        .iter()
        .enumerate()
        .map(|(row, &value)| {
            usize::try_from(value).map_err(|_| DataFileError::Label { row, value })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Dataset {
        inputs: input_values,
        labels,
        features,
    })
}

/// Little-endian words of N bytes (safetensors has checked the length against the shape).
fn words<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes
        .chunks_exact(N)
        .map(|chunk| chunk.try_into().expect("chunks of N bytes"))
}

//! Data sets: the embedded UCI digits (a real classification task) and seeded splits of it.

mod digits;
pub mod file;
mod split;
mod synthetic;
pub mod wordnet;

pub use digits::{DIGIT_CLASSES, DIGIT_PIXELS, Digits, load_digits, parse_digits};
pub use split::stratified_split;
pub use synthetic::{Regression, teacher_student};

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum DataError {
    #[error("the embedded digits file is not valid gzip: {0}")]
    Gzip(String),
    #[error("digits line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("digits: expected {expected} rows, found {found}")]
    RowCount { expected: usize, found: usize },
}

/// Rows of inputs with integer class labels, ready to upload: `inputs` is `len x features`
/// row-major, `labels[i]` the class of row i.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub inputs: Vec<f64>,
    pub labels: Vec<usize>,
    pub features: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut inputs = Vec::with_capacity(indices.len() * self.features);
        for &i in indices {
            inputs.extend_from_slice(&self.inputs[i * self.features..(i + 1) * self.features]);
        }
        Dataset {
            inputs,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            features: self.features,
        }
    }

    /// Each image `classes` times, labelled with each class in turn: cross-entropy on these rows
    /// is cross-entropy against the uniform distribution over the classes (minimised by the
    /// maximum-entropy output).
    pub fn with_every_label(&self, classes: usize) -> Dataset {
        let mut inputs = Vec::with_capacity(self.len() * classes * self.features);
        let mut labels = Vec::with_capacity(self.len() * classes);
        for image in self.inputs.chunks(self.features) {
            for class in 0..classes {
                inputs.extend_from_slice(image);
                labels.push(class);
            }
        }
        Dataset {
            inputs,
            labels,
            features: self.features,
        }
    }

    /// The rows whose label is in `classes`.
    pub fn with_classes(&self, classes: &[usize]) -> Dataset {
        let indices: Vec<usize> = (0..self.len())
            .filter(|&i| classes.contains(&self.labels[i]))
            .collect();
        self.select(&indices)
    }

    /// The same images mirrored left to right (square images, rows of `side` pixels): a new
    /// input distribution for the same classes, the benign fine-tuning task of trainability.
    pub fn mirrored(&self) -> Dataset {
        let side = (self.features as f64).sqrt() as usize;
        assert_eq!(side * side, self.features, "mirroring needs square images");
        let mut inputs = self.inputs.clone();
        for image in inputs.chunks_mut(self.features) {
            for row in image.chunks_mut(side) {
                row.reverse();
            }
        }
        Dataset {
            inputs,
            labels: self.labels.clone(),
            features: self.features,
        }
    }

    /// Labels as floats, the form the softmax cross-entropy kernel reads.
    pub fn label_values(&self) -> Vec<f64> {
        self.labels.iter().map(|&l| l as f64).collect()
    }
}

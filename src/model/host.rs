//! Models on the host in f64: seeded initialisation, the form the defence rewrites and model
//! files store. Parameter names follow the model-file scheme: `layers.{i}.weight` (out x in),
//! `layers.{i}.bias` (1 x out), `layers.{i}.compensation` (out x out, defended layers only).

use super::ModelSpec;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A row-major f64 matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f64>,
}

impl Matrix {
    pub fn new(rows: usize, cols: usize, values: Vec<f64>) -> Self {
        assert_eq!(values.len(), rows * cols, "matrix values for {rows}x{cols}");
        Self { rows, cols, values }
    }

    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::new(rows, cols, vec![0.0; rows * cols])
    }

    pub fn identity(n: usize) -> Self {
        let mut m = Self::zeros(n, n);
        (0..n).for_each(|i| m.values[i * n + i] = 1.0);
        m
    }

    pub fn to_faer(&self) -> faer::Mat<f64> {
        faer::Mat::from_fn(self.rows, self.cols, |i, j| self.values[i * self.cols + j])
    }

    pub fn from_faer(m: faer::MatRef<'_, f64>) -> Self {
        let (rows, cols) = (m.nrows(), m.ncols());
        let mut values = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                values.push(m[(i, j)]);
            }
        }
        Self::new(rows, cols, values)
    }

    /// `self * other` in f64.
    pub fn matmul(&self, other: &Matrix) -> Matrix {
        Matrix::from_faer((self.to_faer() * other.to_faer()).as_ref())
    }
}

/// One layer: `y = W x + b`, or for a defended layer `y = C (W~ x) + b` (bias after C).
#[derive(Clone, Debug, PartialEq)]
pub struct HostLayer {
    pub weight: Matrix,
    pub bias: Vec<f64>,
    pub compensation: Option<Matrix>,
}

impl HostLayer {
    /// The matrix the layer applies: `C W~` for a defended layer, else `W`.
    pub fn effective_weight(&self) -> Matrix {
        match &self.compensation {
            Some(c) => c.matmul(&self.weight),
            None => self.weight.clone(),
        }
    }

    pub fn parameter_count(&self) -> usize {
        self.weight.values.len()
            + self.bias.len()
            + self.compensation.as_ref().map_or(0, |c| c.values.len())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HostModel {
    pub spec: ModelSpec,
    pub layers: Vec<HostLayer>,
}

impl HostModel {
    /// Seeded uniform initialisation with variance 2/fan_in for relu and gelu (He) and 1/fan_in
    /// otherwise (LeCun), biases zero.
    pub fn init(spec: &ModelSpec, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let gain = match spec.activation.activation() {
            Some(crate::engine::Activation::Relu) | Some(crate::engine::Activation::Gelu) => 2.0,
            _ => 1.0,
        };
        let layers = (0..spec.layer_count())
            .map(|i| {
                let (fan_in, fan_out) = spec.layer_shape(i);
                // Uniform on [-b, b] has variance b^2 / 3.
                let bound = (3.0 * gain / fan_in as f64).sqrt();
                let values = (0..fan_out * fan_in)
                    .map(|_| rng.random_range(-bound..=bound))
                    .collect();
                HostLayer {
                    weight: Matrix::new(fan_out, fan_in, values),
                    bias: vec![0.0; fan_out],
                    compensation: None,
                }
            })
            .collect();
        Self {
            spec: spec.clone(),
            layers,
        }
    }

    pub fn parameter_count(&self) -> usize {
        self.layers.iter().map(HostLayer::parameter_count).sum()
    }

    pub fn defended_layers(&self) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|&i| self.layers[i].compensation.is_some())
            .collect()
    }
}

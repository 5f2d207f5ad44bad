//! Models on the host in f64: seeded initialisation, the form defences and adaptive attacks
//! rewrite (functions from a host model to a host model) and model files store.

use super::ModelSpec;
use super::layer::{FactorOf, FactorRole, LayerOf, ParamKey, check_layer};
pub use crate::linalg::Matrix;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A layer on the host: the chain's matrices, LoRA branches and bias in f64.
pub type HostLayer = LayerOf<Matrix>;
pub type HostFactor = FactorOf<Matrix>;

impl HostLayer {
    /// `y = W x + b`.
    pub fn plain(weight: Matrix, bias: Vec<f64>) -> Self {
        let outputs = bias.len();
        Self {
            factors: vec![FactorOf::plain(FactorRole::Weight, weight)],
            bias: Matrix::new(1, outputs, bias),
        }
    }

    /// The matrix the layer applies: the product of its chain (output side first), LoRA
    /// branches included; `C W~` for a SpecDef layer, `W` for a plain one.
    pub fn effective_weight(&self) -> Matrix {
        let mut product: Option<Matrix> = None;
        for factor in &self.factors {
            let mut matrix = factor.matrix.clone();
            if let Some(lora) = &factor.lora {
                let low_rank = lora.b.matmul(&lora.a);
                for (m, l) in matrix.values.iter_mut().zip(&low_rank.values) {
                    *m += lora.scale * l;
                }
            }
            product = Some(match product {
                None => matrix,
                Some(p) => matrix.matmul(&p),
            });
        }
        product.expect("a checked layer has at least one factor")
    }

    /// The stored matrix of a role (`W~` for `weight` in a SpecDef layer).
    pub fn matrix(&self, role: FactorRole) -> Option<&Matrix> {
        self.factor(role).map(|f| &f.matrix)
    }

    pub fn parameter_count(&self) -> usize {
        self.parameters(0).iter().map(|(_, m)| m.values.len()).sum()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HostModel {
    pub spec: ModelSpec,
    pub layers: Vec<HostLayer>,
}

impl HostModel {
    /// Seeded uniform initialisation with variance 2/fan_in for relu and both gelus (He) and 1/fan_in
    /// otherwise (LeCun), biases zero.
    pub fn init(spec: &ModelSpec, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let gain = match spec.activation.activation() {
            Some(
                crate::engine::Activation::Relu
                | crate::engine::Activation::Gelu
                | crate::engine::Activation::GeluErf,
            ) => 2.0,
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
                HostLayer::plain(Matrix::new(fan_out, fan_in, values), vec![0.0; fan_out])
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

    /// Layers whose chain has a compensation factor (SpecDef's).
    pub fn defended_layers(&self) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|&i| self.layers[i].factor(FactorRole::Compensation).is_some())
            .collect()
    }

    /// Every parameter with its registry key, layer by layer in registry order.
    pub fn parameters(&self) -> Vec<(ParamKey, &Matrix)> {
        (self.layers.iter().enumerate())
            .flat_map(|(i, layer)| layer.parameters(i))
            .collect()
    }

    /// A parameter by its registry key, mutably.
    pub fn parameter_mut(&mut self, key: ParamKey) -> Option<&mut Matrix> {
        self.layers.get_mut(key.layer)?.parameter_mut(key.role)
    }

    /// Layer `layer`'s output (`f(Z)`, or `Z` without an activation) for each row of `inputs`
    /// (`rows x features`), in f64: what a loss on a hidden layer compares with.
    pub fn layer_output(&self, inputs: &Matrix, layer: usize) -> Matrix {
        let mut h = inputs.clone();
        for (i, host_layer) in self.layers.iter().enumerate().take(layer + 1) {
            let weight = host_layer.effective_weight();
            let mut z = Matrix::from_faer((h.to_faer() * weight.to_faer().transpose()).as_ref());
            let activation = self.spec.activation_after(i);
            for row in z.values.chunks_mut(z.cols) {
                for (v, b) in row.iter_mut().zip(&host_layer.bias.values) {
                    *v += b;
                    if let Some(f) = activation {
                        *v = crate::engine::cpu::elementwise::activation_value(f, *v);
                    }
                }
            }
            h = z;
        }
        h
    }

    /// Checks every layer's chain against the architecture (see `check_layer`).
    pub fn validate(&self) -> Result<(), String> {
        self.spec.validate()?;
        if self.layers.len() != self.spec.layer_count() {
            return Err(format!(
                "{} layers, the widths {:?} need {}",
                self.layers.len(),
                self.spec.widths,
                self.spec.layer_count()
            ));
        }
        (self.layers.iter().enumerate())
            .try_for_each(|(i, layer)| check_layer(layer, i, self.spec.layer_shape(i)))
    }
}

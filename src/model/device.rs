//! A model's tensors on an engine: parameters, gradients, and the per-batch workspace of
//! activations. Shapes follow the host model; nothing here records or runs kernels.

use super::{HostLayer, HostModel, Matrix, ModelSpec};
use crate::engine::{Engine, EngineError, ReadTicket, Tensor};
use serde::{Deserialize, Serialize};

/// One layer's tensors (or their gradients, which have the same shapes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceLayer {
    pub weight: Tensor,
    pub bias: Tensor,
    pub compensation: Option<Tensor>,
}

/// Which parameter groups train. Full fine-tuning (the default) trains all of them, the
/// compensation layers included: the regime in which SpecDef's curvature grows like alpha^2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trainable {
    pub weights: bool,
    pub biases: bool,
    pub compensation: bool,
}

impl Default for Trainable {
    fn default() -> Self {
        Self {
            weights: true,
            biases: true,
            compensation: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeviceModel {
    pub spec: ModelSpec,
    pub layers: Vec<DeviceLayer>,
}

fn upload_matrix(engine: &mut dyn Engine, name: &str, m: &Matrix) -> Result<Tensor, EngineError> {
    engine.tensor_from(name, m.rows, m.cols, &m.values)
}

impl DeviceLayer {
    pub fn tensors(&self) -> impl Iterator<Item = Tensor> {
        [self.weight, self.bias]
            .into_iter()
            .chain(self.compensation)
    }
}

fn free_layers(engine: &mut dyn Engine, layers: &[DeviceLayer]) {
    layers
        .iter()
        .flat_map(DeviceLayer::tensors)
        .for_each(|t| engine.free(t));
}

impl DeviceModel {
    pub fn upload(engine: &mut dyn Engine, host: &HostModel) -> Result<Self, EngineError> {
        let mut layers = Vec::with_capacity(host.layers.len());
        for (i, layer) in host.layers.iter().enumerate() {
            layers.push(DeviceLayer {
                weight: upload_matrix(engine, &format!("layers.{i}.weight"), &layer.weight)?,
                bias: engine.tensor_from(
                    &format!("layers.{i}.bias"),
                    1,
                    layer.bias.len(),
                    &layer.bias,
                )?,
                compensation: match &layer.compensation {
                    Some(c) => Some(upload_matrix(
                        engine,
                        &format!("layers.{i}.compensation"),
                        c,
                    )?),
                    None => None,
                },
            });
        }
        Ok(Self {
            spec: host.spec.clone(),
            layers,
        })
    }

    /// Starts reading every parameter back (for `host_from`), without blocking.
    pub fn begin_download(&self, engine: &mut dyn Engine) -> Result<ReadTicket, EngineError> {
        let tensors: Vec<Tensor> = self.layers.iter().flat_map(DeviceLayer::tensors).collect();
        engine.begin_read(&tensors)
    }

    /// The host model from the values a `begin_download` read back (widened to f64).
    pub fn host_from(&self, values: Vec<Vec<f64>>) -> HostModel {
        let mut values = values.into_iter();
        let mut next = |t: Tensor| {
            Matrix::new(
                t.rows(),
                t.cols(),
                values.next().expect("one value list per tensor"),
            )
        };
        let layers = self
            .layers
            .iter()
            .map(|layer| HostLayer {
                weight: next(layer.weight),
                bias: next(layer.bias).values,
                compensation: layer.compensation.map(&mut next),
            })
            .collect();
        HostModel {
            spec: self.spec.clone(),
            layers,
        }
    }

    /// Reads the parameters back into a host model, blocking.
    pub fn download(&self, engine: &mut dyn Engine) -> Result<HostModel, EngineError> {
        let mut ticket = self.begin_download(engine)?;
        Ok(self.host_from(engine.wait_read(&mut ticket)?))
    }

    pub fn free(&self, engine: &mut dyn Engine) {
        free_layers(engine, &self.layers);
    }
}

/// Gradient tensors, shaped like the model's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    pub layers: Vec<DeviceLayer>,
}

impl Gradients {
    pub fn alloc(engine: &mut dyn Engine, model: &DeviceModel) -> Result<Self, EngineError> {
        let mut layers = Vec::with_capacity(model.layers.len());
        for (i, layer) in model.layers.iter().enumerate() {
            let like = |engine: &mut dyn Engine, t: Tensor, name: &str| {
                engine.alloc(&format!("grad.layers.{i}.{name}"), t.rows(), t.cols())
            };
            layers.push(DeviceLayer {
                weight: like(engine, layer.weight, "weight")?,
                bias: like(engine, layer.bias, "bias")?,
                compensation: match layer.compensation {
                    Some(c) => Some(like(engine, c, "compensation")?),
                    None => None,
                },
            });
        }
        Ok(Self { layers })
    }

    /// (parameter, gradient) for every trainable tensor, in a fixed order.
    pub fn trainable_pairs(
        &self,
        model: &DeviceModel,
        trainable: Trainable,
    ) -> Vec<(Tensor, Tensor)> {
        let mut pairs = Vec::new();
        for (param, grad) in model.layers.iter().zip(&self.layers) {
            if trainable.weights {
                pairs.push((param.weight, grad.weight));
            }
            if trainable.biases {
                pairs.push((param.bias, grad.bias));
            }
            if let (true, Some(p), Some(g)) = (
                trainable.compensation,
                param.compensation,
                grad.compensation,
            ) {
                pairs.push((p, g));
            }
        }
        pairs
    }

    pub fn free(&self, engine: &mut dyn Engine) {
        free_layers(engine, &self.layers);
    }
}

/// Activations of one layer for one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerBuffers {
    /// `W~ x` before the compensation layer (defended layers only).
    pub hidden: Option<Tensor>,
    /// The layer's output before the activation, `Z`.
    pub pre: Tensor,
    /// `f(Z)` (hidden layers with an activation only).
    pub post: Option<Tensor>,
    pub grad_pre: Tensor,
    pub grad_hidden: Option<Tensor>,
    pub grad_post: Option<Tensor>,
}

/// Everything one batch needs on the engine: inputs, targets, activations, loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Workspace {
    pub batch: usize,
    pub inputs: Tensor,
    /// Class labels (`batch x 1`) for cross-entropy, or target values (`batch x outputs`).
    pub targets: Tensor,
    /// A column of ones: bias broadcast and bias gradients are matmuls with it.
    pub ones: Tensor,
    pub layers: Vec<LayerBuffers>,
    /// Per-row loss (cross-entropy) or the difference to the targets (squared error).
    pub loss_rows: Tensor,
    pub loss_sum: Tensor,
}

impl Workspace {
    /// `target_cols` is 1 for class labels, the output width for regression targets.
    pub fn alloc(
        engine: &mut dyn Engine,
        model: &DeviceModel,
        batch: usize,
        target_cols: usize,
    ) -> Result<Self, EngineError> {
        let spec = &model.spec;
        let has_activation = spec.activation.activation().is_some();
        let last = model.layers.len() - 1;
        let mut layers = Vec::with_capacity(model.layers.len());
        for (i, layer) in model.layers.iter().enumerate() {
            let (_, width) = spec.layer_shape(i);
            let mut buffer = |name: &str| engine.alloc(&format!("ws.{i}.{name}"), batch, width);
            let defended = layer.compensation.is_some();
            let activated = has_activation && i < last;
            layers.push(LayerBuffers {
                hidden: if defended {
                    Some(buffer("hidden")?)
                } else {
                    None
                },
                pre: buffer("pre")?,
                post: if activated {
                    Some(buffer("post")?)
                } else {
                    None
                },
                grad_pre: buffer("grad_pre")?,
                grad_hidden: if defended {
                    Some(buffer("grad_hidden")?)
                } else {
                    None
                },
                grad_post: if activated {
                    Some(buffer("grad_post")?)
                } else {
                    None
                },
            });
        }
        let outputs = spec.widths[spec.widths.len() - 1];
        Ok(Self {
            batch,
            inputs: engine.alloc("ws.inputs", batch, spec.widths[0])?,
            targets: engine.alloc("ws.targets", batch, target_cols)?,
            ones: engine.tensor_from("ws.ones", batch, 1, &vec![1.0; batch])?,
            layers,
            loss_rows: engine.alloc(
                "ws.loss_rows",
                batch,
                if target_cols == 1 { 1 } else { outputs },
            )?,
            loss_sum: engine.alloc("ws.loss_sum", 1, 1)?,
        })
    }

    pub fn logits(&self) -> Tensor {
        self.layers[self.layers.len() - 1].pre
    }

    pub fn free(&self, engine: &mut dyn Engine) {
        let mut all = vec![
            self.inputs,
            self.targets,
            self.ones,
            self.loss_rows,
            self.loss_sum,
        ];
        for l in &self.layers {
            all.extend([l.pre, l.grad_pre]);
            all.extend(
                [l.hidden, l.post, l.grad_hidden, l.grad_post]
                    .into_iter()
                    .flatten(),
            );
        }
        all.into_iter().for_each(|t| engine.free(t));
    }
}

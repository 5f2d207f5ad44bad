//! A model's tensors on an engine: parameters, gradients (and tangents), and the per-batch
//! workspace of activations. Every one of them is generated from the layer description
//! (`LayerOf::try_map` over the parameter registry); nothing here records or runs kernels.
//! Constructors return `Owned` values, which free their tensors when dropped (error paths
//! included); the handle structs themselves (`DeviceModel`, ...) are plain, cloneable handles.

use super::layer::{LayerOf, ParamKey, Trainable};
use super::{HostModel, Matrix, ModelSpec};
use crate::engine::{Allocation, Engine, EngineError, Owned, ReadTicket, Tensor};

pub type DeviceLayer = LayerOf<Tensor>;

/// A model's parameters on an engine, in the shape of its host model.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceModel {
    pub spec: ModelSpec,
    pub layers: Vec<DeviceLayer>,
}

/// Allocates one tensor per parameter of `model`, shaped like it and named `{prefix}{key}`.
fn alloc_like(
    engine: &mut dyn Engine,
    model: &DeviceModel,
    prefix: &str,
) -> Result<(Vec<DeviceLayer>, Allocation), EngineError> {
    let mut owner = Allocation::new(engine);
    let layers = (model.layers.iter().enumerate())
        .map(|(i, layer)| {
            layer.try_map(i, &mut |key, t: &Tensor| {
                owner.alloc(engine, &format!("{prefix}{key}"), t.rows(), t.cols())
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((layers, owner))
}

fn all_parameters(layers: &[DeviceLayer]) -> Vec<(ParamKey, Tensor)> {
    (layers.iter().enumerate())
        .flat_map(|(i, l)| l.parameters(i).into_iter().map(|(k, &t)| (k, t)))
        .collect()
}

impl DeviceModel {
    /// Uploads a host model after checking every layer's chain (an impossible layer is refused
    /// here, never run as something else).
    pub fn upload(engine: &mut dyn Engine, host: &HostModel) -> Result<Owned<Self>, EngineError> {
        host.validate().map_err(EngineError::Model)?;
        let mut owner = Allocation::new(engine);
        let layers = (host.layers.iter().enumerate())
            .map(|(i, layer)| {
                layer.try_map(i, &mut |key, m: &Matrix| {
                    owner.tensor_from(engine, &key.name(), m.rows, m.cols, &m.values)
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(owner.owning(Self {
            spec: host.spec.clone(),
            layers,
        }))
    }

    /// Every parameter tensor with its key, in registry order.
    pub fn parameters(&self) -> Vec<(ParamKey, Tensor)> {
        all_parameters(&self.layers)
    }

    /// Starts reading every parameter back (for `host_from`), without blocking.
    pub fn begin_download(&self, engine: &mut dyn Engine) -> Result<ReadTicket, EngineError> {
        let tensors: Vec<Tensor> = self.parameters().into_iter().map(|(_, t)| t).collect();
        engine.begin_read(&tensors)
    }

    /// The host model from the values a `begin_download` read back (widened to f64).
    pub fn host_from(&self, values: Vec<Vec<f64>>) -> HostModel {
        let mut values = values.into_iter();
        let layers = (self.layers.iter().enumerate())
            .map(|(i, layer)| {
                layer.try_map(i, &mut |_, t: &Tensor| {
                    let v = values.next().expect("one value list per tensor");
                    Ok::<_, std::convert::Infallible>(Matrix::new(t.rows(), t.cols(), v))
                })
            })
            .map(|l| match l {
                Ok(l) => l,
                Err(never) => match never {},
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
}

/// One tensor per parameter, shaped like it: gradients, or the tangents of a Hessian-vector
/// product. Allocated for every parameter; `backward` writes the trainable ones only.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    pub layers: Vec<DeviceLayer>,
}

impl Gradients {
    pub fn alloc(engine: &mut dyn Engine, model: &DeviceModel) -> Result<Owned<Self>, EngineError> {
        Self::alloc_named(engine, model, "grad.")
    }

    /// Like `alloc`, with the tensors' labels starting with `prefix`.
    pub fn alloc_named(
        engine: &mut dyn Engine,
        model: &DeviceModel,
        prefix: &str,
    ) -> Result<Owned<Self>, EngineError> {
        let (layers, owner) = alloc_like(engine, model, prefix)?;
        Ok(owner.owning(Self { layers }))
    }

    pub fn parameters(&self) -> Vec<(ParamKey, Tensor)> {
        all_parameters(&self.layers)
    }

    /// (key, parameter, gradient) for every trainable tensor, in registry order.
    pub fn trainable_pairs(
        &self,
        model: &DeviceModel,
        trainable: Trainable,
    ) -> Vec<(ParamKey, Tensor, Tensor)> {
        model
            .parameters()
            .into_iter()
            .zip(self.parameters())
            .filter(|((key, _), _)| model.layers[key.layer].trains(key.role, trainable))
            .map(|((key, param), (_, grad))| (key, param, grad))
            .collect()
    }
}

/// The tensors one linear factor writes for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct FactorBuffers {
    /// `h_{j+1}` (batch x the factor's rows); the last factor's is the layer's `Z`.
    pub out: Tensor,
    pub grad_out: Tensor,
    /// `h_j A^T` and its gradient (batch x r), for a factor with a LoRA branch.
    pub lora: Option<(Tensor, Tensor)>,
}

/// Activations of one layer for one batch, shaped by its description.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerBuffers {
    pub factors: Vec<FactorBuffers>,
    /// `f(Z)` and its gradient, where an activation follows the layer.
    pub activated: Option<(Tensor, Tensor)>,
}

impl LayerBuffers {
    /// The layer's output before the activation, `Z`.
    pub fn pre(&self) -> Tensor {
        self.factors[self.factors.len() - 1].out
    }

    pub fn grad_pre(&self) -> Tensor {
        self.factors[self.factors.len() - 1].grad_out
    }

    /// What the next layer reads: `f(Z)`, or `Z` without an activation.
    pub fn output(&self) -> Tensor {
        self.activated.map_or(self.pre(), |(post, _)| post)
    }
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
    ) -> Result<Owned<Self>, EngineError> {
        let mut owner = Allocation::new(engine);
        let mut buffer = |engine: &mut dyn Engine, name: String, cols: usize| {
            owner.alloc(engine, &name, batch, cols)
        };
        let spec = &model.spec;
        let mut layers = Vec::with_capacity(model.layers.len());
        for (i, layer) in model.layers.iter().enumerate() {
            let mut factors = Vec::with_capacity(layer.factors.len());
            for factor in &layer.factors {
                let role = factor.role.name();
                let width = factor.matrix.rows();
                let lora = match &factor.lora {
                    Some(l) => Some((
                        buffer(engine, format!("ws.{i}.{role}.lora_mid"), l.a.rows())?,
                        buffer(engine, format!("ws.{i}.{role}.grad_lora_mid"), l.a.rows())?,
                    )),
                    None => None,
                };
                factors.push(FactorBuffers {
                    out: buffer(engine, format!("ws.{i}.{role}.out"), width)?,
                    grad_out: buffer(engine, format!("ws.{i}.{role}.grad_out"), width)?,
                    lora,
                });
            }
            let (_, width) = spec.layer_shape(i);
            let activated = match spec.activation_after(i) {
                Some(_) => Some((
                    buffer(engine, format!("ws.{i}.post"), width)?,
                    buffer(engine, format!("ws.{i}.grad_post"), width)?,
                )),
                None => None,
            };
            layers.push(LayerBuffers { factors, activated });
        }
        let outputs = spec.widths[spec.widths.len() - 1];
        let inputs = buffer(engine, "ws.inputs".to_string(), spec.widths[0])?;
        let targets = buffer(engine, "ws.targets".to_string(), target_cols)?;
        let ones = buffer(engine, "ws.ones".to_string(), 1)?;
        let loss_rows = buffer(
            engine,
            "ws.loss_rows".to_string(),
            if target_cols == 1 { 1 } else { outputs },
        )?;
        engine.upload(ones, &vec![1.0; batch])?;
        let loss_sum = owner.alloc(engine, "ws.loss_sum", 1, 1)?;
        Ok(owner.owning(Self {
            batch,
            inputs,
            targets,
            ones,
            layers,
            loss_rows,
            loss_sum,
        }))
    }

    pub fn logits(&self) -> Tensor {
        self.layers[self.layers.len() - 1].pre()
    }
}

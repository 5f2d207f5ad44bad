//! What is measured: a square matmul (GFLOP/s, 2n^3 flops) and optimisation steps of the
//! default MLP, undefended or with every layer defended (steps/s).

use crate::attack::{OptimizerKind, OptimizerState};
use crate::defense::{DefenseError, LayerSelection, SpecDef};
use crate::engine::{Allocation, Engine, Owned, Recording, Tensor};
use crate::model::{
    ActivationChoice, DeviceModel, Gradients, HessianVectorProduct, HostModel, Loss, ModelSpec,
    Trainable, Workspace, graph,
};
use crate::selftest::seeded_uniform;
use std::any::Any;
use std::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// C = A B with n x n operands.
    Matmul { n: usize },
    /// `STEPS_PER_RUN` Adam steps of the 64-256-256-10 MLP on a batch of 128.
    AttackSteps { defended: bool },
}

const BATCH: usize = 128;
/// Attack steps per submission, as attacks run them (a loss read every 50 steps).
pub const STEPS_PER_RUN: usize = 50;

impl Workload {
    /// The default set: what the targets name, small enough for a software adapter.
    pub fn standard() -> Vec<Workload> {
        vec![
            Workload::Matmul { n: 256 },
            Workload::Matmul { n: 512 },
            Workload::Matmul { n: 1024 },
            Workload::AttackSteps { defended: false },
            Workload::AttackSteps { defended: true },
        ]
    }

    pub fn name(self) -> String {
        match self {
            Workload::Matmul { n } => format!("matmul {n}x{n}x{n}"),
            Workload::AttackSteps { defended: false } => "attack steps, undefended".to_string(),
            Workload::AttackSteps { defended: true } => "attack steps, SpecDef a=1e4".to_string(),
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Workload::Matmul { .. } => "GFLOP/s",
            Workload::AttackSteps { .. } => "steps/s",
        }
    }

    /// Work per run in the unit's numerator (GFLOP, steps).
    pub fn work_per_run(self) -> f64 {
        match self {
            Workload::Matmul { n } => 2.0 * (n as f64).powi(3) / 1e9,
            Workload::AttackSteps { .. } => STEPS_PER_RUN as f64,
        }
    }

    pub fn prepare(self, engine: &mut dyn Engine) -> Result<Prepared, String> {
        let prepared = match self {
            Workload::Matmul { n } => prepare_matmul(engine, n),
            Workload::AttackSteps { defended } => {
                prepare_attack_steps(engine, defended, STEPS_PER_RUN)
            }
        };
        prepared.map_err(|e| format!("preparing {}: {e}", self.name()))
    }
}

/// A workload on an engine: the recording to run and the tensor to read back after it. It owns
/// the workload's tensors (through `owners`), which are freed when it is dropped.
pub struct Prepared {
    pub recording: Recording,
    pub probe: Tensor,
    _owners: Vec<Box<dyn Any>>,
}

fn prepare_matmul(engine: &mut dyn Engine, n: usize) -> Result<Prepared, Box<dyn Error>> {
    let mut owner = Allocation::new(engine);
    let a = owner.tensor_from(engine, "bench.a", n, n, &seeded_uniform(1, n * n, 1.0))?;
    let b = owner.tensor_from(engine, "bench.b", n, n, &seeded_uniform(2, n * n, 1.0))?;
    let c = owner.alloc(engine, "bench.c", n, n)?;
    let mut recording = Recording::new();
    recording.matmul(a, b, c, false, false)?;
    Ok(Prepared {
        recording,
        probe: c,
        _owners: vec![Box::new(owner)],
    })
}

fn attack_model(defended: bool) -> Result<HostModel, DefenseError> {
    let spec = ModelSpec {
        widths: vec![64, 256, 256, 10],
        activation: ActivationChoice::Relu,
    };
    let base = HostModel::init(&spec, 0);
    if !defended {
        return Ok(base);
    }
    let defense = SpecDef {
        alpha: 1e4,
        k: 25,
        layers: LayerSelection::All,
        compensate: true,
        compensation: Default::default(),
    };
    defense.apply(&base, 0)
}

/// The benchmark model on the engine with its fixed batch of seeded inputs and labels.
fn benchmark_batch(
    engine: &mut dyn Engine,
    defended: bool,
) -> Result<(Owned<DeviceModel>, Owned<Workspace>), Box<dyn Error>> {
    let device = DeviceModel::upload(engine, &attack_model(defended)?)?;
    let ws = Workspace::alloc(engine, &device, BATCH, 1)?;
    engine.upload(ws.inputs, &seeded_uniform(1, BATCH * 64, 1.0))?;
    let labels: Vec<f64> = (0..BATCH).map(|i| (i % 10) as f64).collect();
    engine.upload(ws.targets, &labels)?;
    Ok((device, ws))
}

/// Uploads the benchmark model and records `steps` Adam steps (C and W~ both trained where
/// defended) on one fixed batch; the probe is the loss.
pub fn prepare_attack_steps(
    engine: &mut dyn Engine,
    defended: bool,
    steps: usize,
) -> Result<Prepared, Box<dyn Error>> {
    let (device, ws) = benchmark_batch(engine, defended)?;
    let grads = Gradients::alloc(engine, &device)?;
    let trainable = Trainable::default();
    let optimizer = OptimizerState::new(
        engine,
        OptimizerKind::Adam,
        grads.trainable_pairs(&device, trainable),
    )?;
    let mut recording = Recording::new();
    for step in 0..steps {
        graph::forward(&mut recording, &device, &ws)?;
        graph::cross_entropy(&mut recording, &ws)?;
        graph::backward(&mut recording, &device, &ws, &grads, trainable)?;
        optimizer.record_step(&mut recording, 1e-5, step as u32 + 1)?;
    }
    Ok(Prepared {
        recording,
        probe: ws.loss_sum,
        _owners: vec![
            Box::new(optimizer),
            Box::new(grads),
            Box::new(ws),
            Box::new(device),
        ],
    })
}

/// What one derivative workload computes on the benchmark model's fixed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Derivative {
    /// Forward, loss and backward: the gradient.
    Gradient,
    /// The gradient and a Hessian-vector product (forward-over-reverse).
    HessianVectorProduct,
}

/// Uploads the benchmark model and records `repeats` gradients or Hessian-vector products (every
/// group trainable) on one fixed batch; the probe is the loss. The ratio of the two is the
/// cost of an HVP in gradients.
pub fn prepare_derivative(
    engine: &mut dyn Engine,
    defended: bool,
    derivative: Derivative,
    repeats: usize,
) -> Result<Prepared, Box<dyn Error>> {
    let (device, ws) = benchmark_batch(engine, defended)?;
    let trainable = Trainable::default();
    let (one, owner): (Recording, Box<dyn Any>) = match derivative {
        Derivative::Gradient => {
            let grads = Gradients::alloc(engine, &device)?;
            let mut rec = Recording::new();
            graph::forward(&mut rec, &device, &ws)?;
            graph::cross_entropy(&mut rec, &ws)?;
            graph::backward(&mut rec, &device, &ws, &grads, trainable)?;
            (rec, Box::new(grads))
        }
        Derivative::HessianVectorProduct => {
            let product =
                HessianVectorProduct::prepare(engine, &device, &ws, Loss::CrossEntropy, trainable)?;
            for (i, &(_, v, _)) in product.slots().iter().enumerate() {
                engine.upload(v, &seeded_uniform(10 + i as u64, v.len(), 1.0))?;
            }
            (product.recording.clone(), Box::new(product))
        }
    };
    let mut recording = Recording::new();
    (0..repeats).for_each(|_| recording.extend(&one));
    Ok(Prepared {
        recording,
        probe: ws.loss_sum,
        _owners: vec![owner, Box::new(ws), Box::new(device)],
    })
}

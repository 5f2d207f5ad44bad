//! What is measured: a square matmul (GFLOP/s, 2n^3 flops) and optimisation steps of the
//! default MLP, undefended or with every layer defended (steps/s).

use crate::attack::{OptimizerKind, OptimizerState};
use crate::defense::{DefenseError, LayerSelection, SpecDef};
use crate::engine::{Engine, Recording, Tensor};
use crate::model::{
    ActivationChoice, DeviceModel, Gradients, HostModel, ModelSpec, Trainable, Workspace, graph,
};
use crate::selftest::seeded_uniform;
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

/// Frees a prepared workload's tensors.
type Release = Box<dyn FnOnce(&mut dyn Engine)>;

/// A workload on an engine: the recording to run, the tensor to read back after it, and what
/// frees its tensors afterwards.
pub struct Prepared {
    pub recording: Recording,
    pub probe: Tensor,
    release: Release,
}

impl Prepared {
    pub fn free(self, engine: &mut dyn Engine) {
        (self.release)(engine);
    }
}

fn prepare_matmul(engine: &mut dyn Engine, n: usize) -> Result<Prepared, Box<dyn Error>> {
    let a = engine.tensor_from("bench.a", n, n, &seeded_uniform(1, n * n, 1.0))?;
    let b = engine.tensor_from("bench.b", n, n, &seeded_uniform(2, n * n, 1.0))?;
    let c = engine.alloc("bench.c", n, n)?;
    let mut recording = Recording::new();
    recording.matmul(a, b, c, false, false)?;
    Ok(Prepared {
        recording,
        probe: c,
        release: Box::new(move |engine| [a, b, c].into_iter().for_each(|t| engine.free(t))),
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
    };
    defense.apply(&base, 0)
}

/// Uploads the benchmark model and records `steps` Adam steps (C and W~ both trained where
/// defended) on one fixed batch; the probe is the loss.
pub fn prepare_attack_steps(
    engine: &mut dyn Engine,
    defended: bool,
    steps: usize,
) -> Result<Prepared, Box<dyn Error>> {
    let device = DeviceModel::upload(engine, &attack_model(defended)?)?;
    let ws = Workspace::alloc(engine, &device, BATCH, 1)?;
    engine.upload(ws.inputs, &seeded_uniform(1, BATCH * 64, 1.0))?;
    let labels: Vec<f64> = (0..BATCH).map(|i| (i % 10) as f64).collect();
    engine.upload(ws.targets, &labels)?;
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
        release: Box::new(move |engine| {
            optimizer.free(engine);
            grads.free(engine);
            ws.free(engine);
            device.free(engine);
        }),
    })
}

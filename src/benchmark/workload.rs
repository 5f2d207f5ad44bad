//! What is measured: a square matmul (GFLOP/s, 2n^3 flops) and Adam steps of an MLP 64-W-W-10,
//! undefended or with every layer defended (steps/s, with the step's matmul FLOPs beside, so
//! the cost curves can show GFLOP/s too).

use crate::defense::{DefenseError, LayerSelection, SpecDef};
use crate::engine::{Allocation, Engine, Owned, Recording, Tensor};
use crate::model::{
    ActivationChoice, DeviceModel, Gradients, HessianVectorProduct, HostModel, Loss, ModelSpec,
    Trainable, Workspace, graph,
};
use crate::selftest::seeded_uniform;
use crate::training::{OptimizerKind, OptimizerState};
use std::any::Any;
use std::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// C = A B with n x n operands.
    Matmul { n: usize },
    /// Adam steps of an MLP on one fixed batch.
    AttackSteps(AttackShape),
}

/// The attack-step workload's model and batch: the MLP 64-W-W-10 (ReLU), undefended or with
/// every layer defended by SpecDef at alpha 1e4 (C and W~ both trained).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttackShape {
    pub width: usize,
    pub batch: usize,
    pub defended: bool,
}

impl AttackShape {
    /// The README's workload: the default model's widths, batch 128.
    pub const fn standard(defended: bool) -> Self {
        Self {
            width: 256,
            batch: 128,
            defended,
        }
    }

    pub fn widths(self) -> Vec<usize> {
        vec![INPUTS, self.width, self.width, CLASSES]
    }

    /// `64-256-256-10 batch 128, SpecDef a=1e4`.
    pub fn name(self) -> String {
        let widths: Vec<String> = self.widths().iter().map(|w| w.to_string()).collect();
        format!(
            "attack steps {} batch {}, {}",
            widths.join("-"),
            self.batch,
            if self.defended {
                "SpecDef a=1e4"
            } else {
                "undefended"
            }
        )
    }

    /// The shape a `name` was made from, for records read back (a peer's included).
    pub fn from_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("attack steps ")?;
        let (widths, rest) = rest.split_once(" batch ")?;
        let (batch, form) = rest.split_once(", ")?;
        let widths: Vec<usize> = widths
            .split('-')
            .map(|w| w.parse().ok())
            .collect::<Option<_>>()?;
        let shape = Self {
            width: *widths.get(1)?,
            batch: batch.parse().ok()?,
            defended: form != "undefended",
        };
        (shape.name() == name).then_some(shape)
    }

    /// A file name for the workload: `w256-b128-undefended`.
    pub fn slug(self) -> String {
        let form = if self.defended {
            "defended"
        } else {
            "undefended"
        };
        format!("w{}-b{}-{form}", self.width, self.batch)
    }
}

/// The digits task's shape: 8x8 inputs, 10 classes.
const INPUTS: usize = 64;
const CLASSES: usize = 10;
/// Attack steps per submission, as attacks run them (a loss read every 50 steps) ...
pub const STEPS_PER_RUN: usize = 50;
/// ... unless 50 steps would be more matmul work than this: large shapes run fewer steps per
/// submission, so one run stays around a second on a CPU and calibration can pick a sample.
const MAX_FLOP_PER_RUN: f64 = 4e9;
/// The learning rate of the timed steps: small, so the weights barely move while timed.
pub const BENCH_LR: f64 = 1e-5;

/// Which workloads `specdef bench --suite` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Suite {
    /// Square matmuls 256 to 1024 and the README's attack step, undefended and defended.
    Standard,
    /// Attack steps against width (256 to 2048, batch 128) and batch (32 to 1024, width 256),
    /// undefended and defended, and the all-core matmul peak: the cost curves.
    Curves,
    /// The attack steps of `curves` alone: what the JAX peer benchmark also runs.
    Peer,
}

impl Suite {
    pub fn workloads(self) -> Vec<Workload> {
        match self {
            Suite::Standard => Workload::standard(),
            Suite::Curves => {
                let mut workloads = Self::Peer.workloads();
                workloads.push(Workload::Matmul { n: 2048 });
                workloads
            }
            Suite::Peer => {
                let mut shapes = Vec::new();
                for defended in [false, true] {
                    shapes.extend([256, 512, 1024, 2048].map(|width| AttackShape {
                        width,
                        batch: 128,
                        defended,
                    }));
                    shapes.extend([32, 64, 256, 512, 1024].map(|batch| AttackShape {
                        width: 256,
                        batch,
                        defended,
                    }));
                }
                shapes.into_iter().map(Workload::AttackSteps).collect()
            }
        }
    }
}

impl Workload {
    /// The default set: what the targets name, small enough for a software adapter.
    pub fn standard() -> Vec<Workload> {
        vec![
            Workload::Matmul { n: 256 },
            Workload::Matmul { n: 512 },
            Workload::Matmul { n: 1024 },
            Workload::AttackSteps(AttackShape::standard(false)),
            Workload::AttackSteps(AttackShape::standard(true)),
        ]
    }

    pub fn name(self) -> String {
        match self {
            Workload::Matmul { n } => format!("matmul {n}x{n}x{n}"),
            Workload::AttackSteps(shape) => shape.name(),
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Workload::Matmul { .. } => "GFLOP/s",
            Workload::AttackSteps { .. } => "steps/s",
        }
    }

    pub fn prepare(self, engine: &mut dyn Engine) -> Result<Prepared, String> {
        let prepared = match self {
            Workload::Matmul { n } => prepare_matmul(engine, n),
            Workload::AttackSteps(shape) => prepare_attack_steps(engine, shape, None),
        };
        prepared.map_err(|e| format!("preparing {}: {e}", self.name()))
    }
}

/// A workload on an engine: the recording to run and the tensor to read back after it. It owns
/// the workload's tensors (through `owners`), which are freed when it is dropped.
pub struct Prepared {
    pub recording: Recording,
    /// One step of `recording` (all of it where a run is one step): what the plan's figures
    /// per step are read from.
    pub step: Recording,
    pub probe: Tensor,
    /// Work of one run of the recording, in the unit's numerator (GFLOP, steps).
    pub work_per_run: f64,
    /// Matmul FLOPs of one step (attack steps only).
    pub flop_per_step: Option<f64>,
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
        step: recording.clone(),
        recording,
        probe: c,
        work_per_run: 2.0 * (n as f64).powi(3) / 1e9,
        flop_per_step: None,
        _owners: vec![Box::new(owner)],
    })
}

/// The attack-step workload's model: seeded He initialisation, defended where asked.
pub fn attack_model(shape: AttackShape) -> Result<HostModel, DefenseError> {
    let spec = ModelSpec {
        widths: shape.widths(),
        activation: ActivationChoice::Relu,
    };
    let base = HostModel::init(&spec, 0);
    if !shape.defended {
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

/// The workload's fixed batch: seeded inputs uniform in [-1, 1] and labels cycling 0..9.
pub fn attack_batch(shape: AttackShape) -> (Vec<f64>, Vec<f64>) {
    let inputs = seeded_uniform(1, shape.batch * INPUTS, 1.0);
    let labels = (0..shape.batch).map(|i| (i % CLASSES) as f64).collect();
    (inputs, labels)
}

/// The benchmark model on the engine with its fixed batch.
fn benchmark_batch(
    engine: &mut dyn Engine,
    shape: AttackShape,
) -> Result<(Owned<DeviceModel>, Owned<Workspace>), Box<dyn Error>> {
    upload_batch(engine, &attack_model(shape)?, shape, &attack_batch(shape).0)
}

/// `model` on the engine with the shape's batch, its inputs as given.
fn upload_batch(
    engine: &mut dyn Engine,
    model: &HostModel,
    shape: AttackShape,
    inputs: &[f64],
) -> Result<(Owned<DeviceModel>, Owned<Workspace>), Box<dyn Error>> {
    let device = DeviceModel::upload(engine, model)?;
    let ws = Workspace::alloc(engine, &device, shape.batch, 1)?;
    let (_, labels) = attack_batch(shape);
    engine.upload(ws.inputs, inputs)?;
    engine.upload(ws.targets, &labels)?;
    Ok((device, ws))
}

/// The benchmark model, its batch, gradients and Adam state on an engine: what an attack step
/// needs (C and W~ both trained where defended).
struct AttackState {
    optimizer: OptimizerState,
    grads: Owned<Gradients>,
    ws: Owned<Workspace>,
    device: Owned<DeviceModel>,
}

impl AttackState {
    fn upload(
        engine: &mut dyn Engine,
        (device, ws): (Owned<DeviceModel>, Owned<Workspace>),
    ) -> Result<Self, Box<dyn Error>> {
        let grads = Gradients::alloc(engine, &device)?;
        let optimizer = OptimizerState::new(
            engine,
            OptimizerKind::Adam,
            grads.trainable_pairs(&device, Trainable::default()),
        )?;
        Ok(Self {
            optimizer,
            grads,
            ws,
            device,
        })
    }

    /// Step `step` (from 1, Adam's bias correction counts it): forward, loss, backward, update.
    fn record_step(&self, recording: &mut Recording, step: u32) -> Result<(), Box<dyn Error>> {
        graph::forward(recording, &self.device, &self.ws)?;
        graph::cross_entropy(recording, &self.ws)?;
        graph::backward(
            recording,
            &self.device,
            &self.ws,
            &self.grads,
            Trainable::default(),
        )?;
        self.optimizer.record_step(recording, BENCH_LR, step)?;
        Ok(())
    }
}

/// Uploads the benchmark model and records Adam steps on one fixed batch; the probe is the loss
/// summed over the batch (after the last step's forward). `steps` per run: as given, else
/// `STEPS_PER_RUN` or fewer for large shapes.
pub fn prepare_attack_steps(
    engine: &mut dyn Engine,
    shape: AttackShape,
    steps: Option<usize>,
) -> Result<Prepared, Box<dyn Error>> {
    let inputs = attack_batch(shape).0;
    prepare_attack_steps_of(engine, &attack_model(shape)?, shape, &inputs, steps)
}

/// `prepare_attack_steps` of a model already built (building a defended one costs seconds at
/// large widths) and the inputs given.
pub fn prepare_attack_steps_of(
    engine: &mut dyn Engine,
    model: &HostModel,
    shape: AttackShape,
    inputs: &[f64],
    steps: Option<usize>,
) -> Result<Prepared, Box<dyn Error>> {
    let uploaded = upload_batch(engine, model, shape, inputs)?;
    let state = AttackState::upload(engine, uploaded)?;
    let mut one_step = Recording::new();
    state.record_step(&mut one_step, 1)?;
    let flop_per_step = one_step.matmul_flop();
    let steps = steps.unwrap_or_else(|| {
        ((MAX_FLOP_PER_RUN / flop_per_step).floor() as usize).clamp(1, STEPS_PER_RUN)
    });
    let mut recording = Recording::new();
    for step in 1..=steps {
        state.record_step(&mut recording, step as u32)?;
    }
    Ok(Prepared {
        recording,
        step: one_step,
        probe: state.ws.loss_sum,
        work_per_run: steps as f64,
        flop_per_step: Some(flop_per_step),
        _owners: vec![Box::new(state)],
    })
}

/// The mean loss of each of the first `steps` attack steps (computed before each update) from
/// `model` and `inputs` (the shape's, or the same rounded as a peer reads them), read step by
/// step: what a peer implementation of the same workload must reproduce.
pub fn attack_losses(
    engine: &mut dyn Engine,
    model: &HostModel,
    shape: AttackShape,
    inputs: &[f64],
    steps: usize,
) -> Result<Vec<f64>, Box<dyn Error>> {
    let uploaded = upload_batch(engine, model, shape, inputs)?;
    let state = AttackState::upload(engine, uploaded)?;
    let mut losses = Vec::with_capacity(steps);
    for step in 1..=steps {
        let mut recording = Recording::new();
        state.record_step(&mut recording, step as u32)?;
        engine.run(&recording)?;
        losses.push(engine.read_one(state.ws.loss_sum)?[0] / shape.batch as f64);
    }
    Ok(losses)
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
    let (device, ws) = benchmark_batch(engine, AttackShape::standard(defended))?;
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
        step: one,
        probe: ws.loss_sum,
        work_per_run: repeats as f64,
        flop_per_step: None,
        _owners: vec![owner, Box::new(ws), Box::new(device)],
    })
}

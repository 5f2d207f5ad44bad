//! Optimisation steps per second of the default MLP (64-256-256-10, batch 128, Adam), undefended
//! and with every layer defended (C and W~ both trained), on the CPU engine in f32 and the GPU
//! engine. Each iteration runs 50 steps in one submission and reads the loss once, as attacks do.
//! For the GPU it also prints the sum of the step's kernel device times (GPU timestamps), the
//! floor that steps/s is compared with.
//!
//!     cargo bench --bench attack_step

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use specdef::attack::{OptimizerKind, OptimizerState};
use specdef::defense::{LayerSelection, SpecDef};
use specdef::engine::cpu::CpuEngine32;
use specdef::engine::gpu::GpuEngine;
use specdef::engine::{Engine, Recording};
use specdef::model::{
    ActivationChoice, DeviceModel, Gradients, HostModel, ModelSpec, Trainable, Workspace, graph,
};
use specdef::selftest::seeded_uniform;
use std::time::Duration;

const BATCH: usize = 128;
const STEPS_PER_SUBMISSION: usize = 50;

fn model(defended: bool) -> HostModel {
    let spec = ModelSpec {
        widths: vec![64, 256, 256, 10],
        activation: ActivationChoice::Relu,
    };
    let base = HostModel::init(&spec, 0);
    if !defended {
        return base;
    }
    SpecDef {
        alpha: 1e4,
        k: 25,
        layers: LayerSelection::All,
        compensate: true,
    }
    .apply(&base, 0)
    .expect("defence")
}

/// Uploads a model and records `steps` Adam steps on one batch; returns the recording, the
/// tensor holding the loss, and the recording of a single step.
fn prepare(
    engine: &mut dyn Engine,
    defended: bool,
    steps: usize,
) -> (Recording, Recording, specdef::Tensor) {
    let device = DeviceModel::upload(engine, &model(defended)).expect("upload");
    let ws = Workspace::alloc(engine, &device, BATCH, 1).expect("workspace");
    engine
        .upload(ws.inputs, &seeded_uniform(1, BATCH * 64, 1.0))
        .expect("inputs");
    let labels: Vec<f64> = (0..BATCH).map(|i| (i % 10) as f64).collect();
    engine.upload(ws.targets, &labels).expect("labels");
    let grads = Gradients::alloc(engine, &device).expect("gradients");
    let pairs = grads.trainable_pairs(&device, Trainable::default());
    let optimizer = OptimizerState::new(engine, OptimizerKind::Adam, pairs).expect("optimizer");
    let mut one = Recording::new();
    graph::forward(&mut one, &device, &ws).expect("forward");
    graph::cross_entropy(&mut one, &ws).expect("loss");
    graph::backward(&mut one, &device, &ws, &grads, Trainable::default()).expect("backward");
    let mut many = one.clone();
    optimizer.record_step(&mut one, 1e-5, 1).expect("step");
    for step in 0..steps {
        if step > 0 {
            graph::forward(&mut many, &device, &ws).expect("forward");
            graph::cross_entropy(&mut many, &ws).expect("loss");
            graph::backward(&mut many, &device, &ws, &grads, Trainable::default())
                .expect("backward");
        }
        optimizer
            .record_step(&mut many, 1e-5, step as u32 + 1)
            .expect("step");
    }
    (many, one, ws.loss_sum)
}

fn bench_engine(c: &mut Criterion, name: &str, engine: &mut dyn Engine) {
    println!("{name}: {}", engine.info());
    let mut group = c.benchmark_group("attack_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(STEPS_PER_SUBMISSION as u64));
    for defended in [false, true] {
        let (steps, _, loss) = prepare(engine, defended, STEPS_PER_SUBMISSION);
        let variant = if defended { "defended" } else { "undefended" };
        group.bench_with_input(BenchmarkId::new(name, variant), &defended, |b, _| {
            b.iter(|| {
                engine.run(&steps).expect("run");
                engine.read_one(loss).expect("read")
            })
        });
    }
    group.finish();
}

fn attack_step(c: &mut Criterion) {
    bench_engine(c, "cpu_f32", &mut CpuEngine32::new());
    match GpuEngine::new() {
        Ok(mut gpu) => {
            if gpu.has_timestamps() {
                for defended in [false, true] {
                    let (_, one, _) = prepare(&mut gpu, defended, 1);
                    // Warm the pipelines, then time one step's kernels.
                    gpu.run(&one).expect("warm-up");
                    let timings = gpu.run_timed(&one).expect("timed step");
                    let total_ms: f64 = timings.iter().map(|t| t.device_ns).sum::<f64>() / 1e6;
                    println!(
                        "gpu {}: {} kernels per step, {total_ms:.3} ms of device time per step ({:.0} steps/s if kernels were all it cost)",
                        if defended { "defended" } else { "undefended" },
                        timings.len(),
                        1e3 / total_ms
                    );
                }
            } else {
                println!("gpu: no TIMESTAMP_QUERY, kernel device time not measured");
            }
            bench_engine(c, "gpu", &mut gpu);
        }
        Err(e) => println!("gpu: skipped ({e})"),
    }
}

criterion_group!(benches, attack_step);
criterion_main!(benches);

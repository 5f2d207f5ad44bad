//! The cost of a Hessian-vector product against a gradient, per engine: the default MLP
//! (64-256-256-10, batch 128), undefended and with every layer defended at alpha 1e4, one
//! gradient (forward, loss, backward) against one H v by forward-over-reverse (which computes
//! the gradient on the way). Ten of each per submission, the loss read once. The target
//! is H v <= 3 gradients on the same engine; the ratio is printed at the end.
//!
//!     cargo bench --bench hvp

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use specdef::benchmark::{Derivative, prepare_derivative};
use specdef::engine::Engine;
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::gpu::GpuEngine;
use std::time::{Duration, Instant};

const REPEATS: usize = 10;

/// Seconds per repeat of a prepared workload, from a short timed loop (for the ratio line).
fn seconds_per_repeat(engine: &mut dyn Engine, defended: bool, derivative: Derivative) -> f64 {
    let prepared = prepare_derivative(engine, defended, derivative, REPEATS).expect("prepare");
    engine.run(&prepared.recording).expect("warm-up");
    engine.read_one(prepared.probe).expect("read");
    let (started, mut runs) = (Instant::now(), 0);
    while runs < 3 || started.elapsed() < Duration::from_secs(2) {
        engine.run(&prepared.recording).expect("run");
        engine.read_one(prepared.probe).expect("read");
        runs += 1;
    }
    // `prepared` is dropped here, after the timing: its tensors are freed with it.
    started.elapsed().as_secs_f64() / (runs * REPEATS) as f64
}

fn bench_engine(c: &mut Criterion, name: &str, engine: &mut dyn Engine) {
    println!("{name}: {}", engine.info());
    let mut group = c.benchmark_group("hvp");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(REPEATS as u64));
    for defended in [false, true] {
        for derivative in [Derivative::Gradient, Derivative::HessianVectorProduct] {
            let prepared =
                prepare_derivative(engine, defended, derivative, REPEATS).expect("prepare");
            let variant = format!(
                "{:?}/{}",
                derivative,
                if defended { "defended" } else { "undefended" }
            );
            group.bench_with_input(BenchmarkId::new(name, variant), &defended, |b, _| {
                b.iter(|| {
                    engine.run(&prepared.recording).expect("run");
                    engine.read_one(prepared.probe).expect("read")
                })
            });
        }
    }
    group.finish();
    for defended in [false, true] {
        let gradient = seconds_per_repeat(engine, defended, Derivative::Gradient);
        let hvp = seconds_per_repeat(engine, defended, Derivative::HessianVectorProduct);
        println!(
            "{name} {}: gradient {:.3} ms, H v {:.3} ms, ratio {:.2} (target <= 3)",
            if defended { "defended" } else { "undefended" },
            gradient * 1e3,
            hvp * 1e3,
            hvp / gradient
        );
    }
}

fn hvp(c: &mut Criterion) {
    bench_engine(c, "cpu_f32", &mut CpuEngine32::new());
    bench_engine(c, "cpu_f64", &mut CpuEngine64::new());
    match GpuEngine::new() {
        Ok(mut gpu) => bench_engine(c, "gpu", &mut gpu),
        Err(e) => println!("gpu: skipped ({e})"),
    }
}

criterion_group!(benches, hvp);
criterion_main!(benches);

//! Optimisation steps per second of the default MLP (64-256-256-10, batch 128, Adam), undefended
//! and with every layer defended at alpha 1e4 (C and W~ both trained), on the CPU engine in f32
//! and the GPU engine: the workload of the in-app harness (`specdef::benchmark`). Each iteration runs 50 steps in one submission and reads the loss once, as attacks do.
//! For the GPU it also prints the sum of the step's kernel device times (GPU timestamps), the
//! floor that steps/s is compared with.
//!
//!     cargo bench --bench attack_step

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use specdef::benchmark::{AttackShape, prepare_attack_steps};
use specdef::engine::Engine;
use specdef::engine::cpu::CpuEngine32;
use specdef::engine::gpu::GpuEngine;
use std::time::Duration;

const STEPS_PER_SUBMISSION: usize = 50;

fn bench_engine(c: &mut Criterion, name: &str, engine: &mut dyn Engine) {
    println!("{name}: {}", engine.info());
    let mut group = c.benchmark_group("attack_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(STEPS_PER_SUBMISSION as u64));
    for defended in [false, true] {
        let steps = prepare_attack_steps(
            engine,
            AttackShape::standard(defended),
            Some(STEPS_PER_SUBMISSION),
        )
        .expect("prepare");
        let variant = if defended { "defended" } else { "undefended" };
        group.bench_with_input(BenchmarkId::new(name, variant), &defended, |b, _| {
            b.iter(|| {
                engine.run(&steps.recording).expect("run");
                engine.read_one(steps.probe).expect("read")
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
                    let one =
                        prepare_attack_steps(&mut gpu, AttackShape::standard(defended), Some(1))
                            .expect("prepare");
                    // Warm the pipelines, then time one step's kernels.
                    gpu.run(&one.recording).expect("warm-up");
                    let timings = gpu.run_timed(&one.recording).expect("timed step");
                    drop(one);
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

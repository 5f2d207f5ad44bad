//! The in-app benchmark harness (also `specdef bench`): calibrated samples, statistics and the
//! record schema, blocking on the CPU engine and polled without blocking on the GPU, as the
//! browser drives it.

mod common;

use specdef::benchmark::{
    AttackShape, BENCH_SCHEMA, BenchRecord, BenchSession, BenchSettings, Workload, run_blocking,
    to_json_lines,
};
use specdef::engine::Engine;
use specdef::engine::cpu::CpuEngine32;

fn small() -> (Vec<Workload>, BenchSettings) {
    (
        vec![
            Workload::Matmul { n: 64 },
            Workload::AttackSteps(AttackShape::standard(true)),
        ],
        BenchSettings {
            // Calibrated on the second warm-up sample, after first-run costs.
            warmup_samples: 2,
            samples: 3,
            min_sample_seconds: 0.05,
        },
    )
}

fn check(records: &[BenchRecord], engine: &dyn Engine, settings: BenchSettings) {
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].workload, "matmul 64x64x64");
    assert_eq!(records[0].unit, "GFLOP/s");
    assert_eq!(records[1].unit, "steps/s");
    for r in records {
        assert_eq!(r.schema, BENCH_SCHEMA);
        assert_eq!(r.engine, engine.info().engine);
        assert_eq!(r.platform, "native");
        assert_eq!(r.samples.len(), settings.samples);
        assert!(r.samples.iter().all(|s| s.is_finite() && *s > 0.0), "{r:?}");
        let mut sorted = r.samples.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!((r.min, r.median, r.max), (sorted[0], sorted[1], sorted[2]));
        assert!(r.runs_per_sample >= 1);
    }
    let text = to_json_lines(records).unwrap();
    let back: Vec<BenchRecord> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(back, records);
}

#[test]
fn the_harness_calibrates_samples_and_records_them_on_the_cpu() {
    let (workloads, settings) = small();
    let mut engine = CpuEngine32::new();
    let mut seen = 0;
    let records = run_blocking(&mut engine, workloads, settings, |_| seen += 1).unwrap();
    assert_eq!(seen, 2, "each record reported as it is made");
    check(&records, &engine, settings);
    // A 64^3 matmul takes microseconds on the CPU: calibration must batch runs into samples.
    assert!(records[0].runs_per_sample > 1, "{:?}", records[0]);
}

#[test]
fn the_harness_polls_the_gpu_without_blocking() {
    let Some(mut gpu) = common::gpu() else {
        return;
    };
    let (workloads, settings) = small();
    let mut session = BenchSession::start(&*gpu, workloads, settings);
    let mut waits = 0;
    while !session.is_done() {
        if !session.advance(&mut *gpu, false).unwrap() {
            waits += 1;
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        assert!(waits < 1_000_000, "the harness never finished");
    }
    println!("{waits} polls found a readback in flight");
    assert!(waits > 0, "the non-blocking path was not exercised");
    check(session.records(), &*gpu, settings);
}

#[test]
fn every_suite_workload_name_reads_back_as_its_shape() {
    use specdef::benchmark::Suite;
    for suite in [Suite::Standard, Suite::Curves, Suite::Peer] {
        for workload in suite.workloads() {
            if let Workload::AttackSteps(shape) = workload {
                assert_eq!(AttackShape::from_name(&workload.name()), Some(shape));
            }
        }
    }
    assert_eq!(AttackShape::from_name("matmul 256x256x256"), None);
    assert_eq!(
        AttackShape::from_name("attack steps 64-256-256-10 batch x, undefended"),
        None
    );
}

#[test]
fn an_attack_step_counts_the_flops_of_its_products() {
    use specdef::benchmark::prepare_attack_steps;
    let shape = AttackShape {
        width: 32,
        batch: 8,
        defended: false,
    };
    let prepared = prepare_attack_steps(&mut CpuEngine32::new(), shape, Some(3)).unwrap();
    assert_eq!(prepared.work_per_run, 3.0);
    // Written out: each weight's product forward, its gradient, and the gradient flowing to
    // its input (none for the first layer, whose input is data); biases as rank-1 products.
    let b = shape.batch as f64;
    let layers = [(64.0, 32.0), (32.0, 32.0), (32.0, 10.0)];
    let weights: f64 = layers.iter().map(|(i, o)| 2.0 * b * i * o).sum();
    let products = 3.0 * weights - 2.0 * b * 64.0 * 32.0;
    let biases: f64 = layers.iter().map(|(_, o)| 2.0 * b * o).sum();
    let counted = prepared.flop_per_step.unwrap();
    assert!(
        counted >= products && counted <= products + 2.0 * biases,
        "counted {counted}, products {products}, biases {biases}"
    );
}

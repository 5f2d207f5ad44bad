//! A self-test anyone can run on their machine (`specdef selftest`): every kernel family on an
//! engine against the f64 CPU reference, with the tolerance its arithmetic implies, and the
//! matmul throughput of the engine. The integration tests cover more shapes; this is the quick
//! check of a new adapter or driver.

use crate::engine::cpu::CpuEngine64;
use crate::engine::{Activation, BinaryOp, Engine, EngineError, Recording, ReduceAxis, Reduction};
use crate::tolerance::{Agreement, Tolerance};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A kernel computation that any engine can run: records, runs and reads back its result.
pub struct ParityCase {
    pub name: &'static str,
    pub tolerance: Tolerance,
    body: fn(&mut dyn Engine) -> Result<Vec<f64>, EngineError>,
}

/// Seeded values, uniform in [-scale, scale].
pub fn seeded_uniform(seed: u64, len: usize, scale: f64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-scale..=scale)).collect()
}

const M: usize = 96;
const N: usize = 80;
const K: usize = 112;

fn matmul_tn(e: &mut dyn Engine) -> Result<Vec<f64>, EngineError> {
    let a = e.tensor_from("a", K, M, &seeded_uniform(1, K * M, 1.0))?;
    let b = e.tensor_from("b", K, N, &seeded_uniform(2, K * N, 1.0))?;
    let c = e.alloc("c", M, N)?;
    e.run(Recording::new().matmul(a, b, c, true, false)?)?;
    e.read_one(c)
}

fn gelu_and_grad(e: &mut dyn Engine) -> Result<Vec<f64>, EngineError> {
    let x = e.tensor_from("x", M, N, &seeded_uniform(3, M * N, 4.0))?;
    let g = e.tensor_from("g", M, N, &seeded_uniform(4, M * N, 1.0))?;
    let y = e.alloc("y", M, N)?;
    let gx = e.alloc("gx", M, N)?;
    let mut rec = Recording::new();
    rec.activate(Activation::Gelu, x, y)?;
    rec.activate_grad(Activation::Gelu, x, g, gx)?;
    e.run(&rec)?;
    Ok(e.read(&[y, gx])?.concat())
}

fn mul_then_axpy(e: &mut dyn Engine) -> Result<Vec<f64>, EngineError> {
    let a = e.tensor_from("a", M, N, &seeded_uniform(5, M * N, 1.0))?;
    let b = e.tensor_from("b", M, N, &seeded_uniform(6, M * N, 1.0))?;
    let out = e.alloc("out", M, N)?;
    let mut rec = Recording::new();
    rec.binary(BinaryOp::Mul, a, b, out)?;
    rec.axpy(-0.25, a, out)?;
    e.run(&rec)?;
    e.read_one(out)
}

const SUM_COLS: usize = 5000;

fn sum(axis: ReduceAxis, e: &mut dyn Engine) -> Result<Vec<f64>, EngineError> {
    let x = e.tensor_from("x", M, SUM_COLS, &seeded_uniform(7, M * SUM_COLS, 1.0))?;
    let out = match axis {
        ReduceAxis::PerRow => e.alloc("rows", M, 1)?,
        ReduceAxis::Whole => e.alloc("whole", 1, 1)?,
    };
    e.run(Recording::new().reduce(Reduction::Sum, axis, x, out)?)?;
    e.read_one(out)
}

/// Partial sums of `terms` uniform [-1, 1] values grow like sqrt(terms / 3).
fn sum_tolerance(terms: usize) -> Tolerance {
    Tolerance::f32_sum(terms, (terms as f64 / 3.0).sqrt())
}

fn softmax_cross_entropy(e: &mut dyn Engine) -> Result<Vec<f64>, EngineError> {
    let labels: Vec<f64> = (0..M).map(|i| (i % 10) as f64).collect();
    let logits = e.tensor_from("logits", M, 10, &seeded_uniform(8, M * 10, 5.0))?;
    let labels = e.tensor_from("labels", M, 1, &labels)?;
    let loss = e.alloc("loss", M, 1)?;
    let grad = e.alloc("grad", M, 10)?;
    e.run(Recording::new().softmax_cross_entropy(logits, labels, loss, grad, 1.0 / M as f64)?)?;
    Ok(e.read(&[loss, grad])?.concat())
}

fn transpose(e: &mut dyn Engine) -> Result<Vec<f64>, EngineError> {
    let x = e.tensor_from("x", M, N, &seeded_uniform(9, M * N, 1.0))?;
    let out = e.alloc("out", N, M)?;
    e.run(Recording::new().transpose(x, out)?)?;
    e.read_one(out)
}

pub fn parity_cases() -> Vec<ParityCase> {
    vec![
        ParityCase {
            name: "matmul (A^T B)",
            tolerance: Tolerance::f32_sum(K, (K as f64).sqrt() / 3.0),
            body: matmul_tn,
        },
        ParityCase {
            name: "gelu + gelu'",
            tolerance: Tolerance::f32_transcendental(1.0),
            body: gelu_and_grad,
        },
        ParityCase {
            name: "mul + axpy",
            tolerance: Tolerance::f32_sum(2, 1.0),
            body: mul_then_axpy,
        },
        ParityCase {
            name: "sum per row",
            tolerance: sum_tolerance(SUM_COLS),
            body: |e| sum(ReduceAxis::PerRow, e),
        },
        ParityCase {
            name: "sum whole (two passes)",
            tolerance: sum_tolerance(M * SUM_COLS),
            body: |e| sum(ReduceAxis::Whole, e),
        },
        ParityCase {
            name: "softmax cross-entropy",
            tolerance: Tolerance::f32_transcendental(1.0).plus(Tolerance::f32_sum(10, 5.0)),
            body: softmax_cross_entropy,
        },
        ParityCase {
            name: "transpose",
            tolerance: Tolerance::f32_rounding(),
            body: transpose,
        },
    ]
}

/// Runs the case on `engine` and compares it with the f64 CPU reference.
pub fn check_case(case: &ParityCase, engine: &mut dyn Engine) -> Result<Agreement, String> {
    let reference = (case.body)(&mut CpuEngine64::new()).map_err(|e| e.to_string())?;
    let actual = (case.body)(engine).map_err(|e| e.to_string())?;
    case.tolerance
        .check(&actual, &reference)
        .map_err(|e| e.to_string())
}

/// GFLOP/s of an `n x n` matmul on the engine: the median of `repeats` timed runs after one
/// warm-up, each ended by reading one element back (so the GPU work is complete).
#[cfg(not(target_arch = "wasm32"))]
pub fn matmul_gflops(
    engine: &mut dyn Engine,
    n: usize,
    repeats: usize,
) -> Result<f64, EngineError> {
    let mut owner = crate::engine::Allocation::new(engine);
    let a = owner.tensor_from(engine, "a", n, n, &seeded_uniform(10, n * n, 1.0))?;
    let b = owner.tensor_from(engine, "b", n, n, &seeded_uniform(11, n * n, 1.0))?;
    let c = owner.alloc(engine, "c", n, n)?;
    let probe = owner.alloc(engine, "probe", 1, 1)?;
    let mut rec = Recording::new();
    rec.matmul(a, b, c, false, false)?;
    // Reading a 1x1 sum of C keeps the readback out of the timing.
    rec.reduce(Reduction::Max, ReduceAxis::Whole, c, probe)?;
    engine.run(&rec)?;
    engine.read_one(probe)?;
    let mut seconds = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = std::time::Instant::now();
        engine.run(&rec)?;
        engine.read_one(probe)?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(2.0 * (n as f64).powi(3) / seconds[seconds.len() / 2] / 1e9)
}

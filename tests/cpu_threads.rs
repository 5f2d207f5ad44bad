//! The CPU engine on several worker threads computes bit for bit what it computes on one: faer
//! splits a product by blocks of the output, never along the sum, and element-wise updates are
//! split by elements. Checked on products of every transposition and awkward sizes around the
//! parallel threshold, and on whole Adam steps of the benchmark model, whose defended form
//! amplifies any difference in rounding by alpha within a step or two.

use specdef::benchmark::{AttackShape, attack_batch, attack_losses, attack_model};
use specdef::engine::cpu::{CpuEngine, CpuReal, PARALLEL_MIN_FLOP};
use specdef::engine::{Engine, Recording};
use specdef::selftest::seeded_uniform;

const THREADS: usize = 2;

/// The bits of every value, so that equality means bit-identical (f32 reads back exactly in f64).
fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// `c = 0.5 op(a) op(b) + 0.25 c` on an engine, read back.
fn product<T: CpuReal>(
    engine: &mut CpuEngine<T>,
    (m, n, k): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
) -> Vec<f64> {
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
    let a = engine
        .tensor_from("a", a_rows, a_cols, &seeded_uniform(1, m * k, 1.0))
        .unwrap();
    let b = engine
        .tensor_from("b", b_rows, b_cols, &seeded_uniform(2, k * n, 1.0))
        .unwrap();
    let c = engine
        .tensor_from("c", m, n, &seeded_uniform(3, m * n, 1.0))
        .unwrap();
    let mut recording = Recording::new();
    recording
        .matmul_scaled(a, b, c, trans_a, trans_b, 0.5, 0.25)
        .unwrap();
    engine.run(&recording).unwrap();
    engine.read_one(c).unwrap()
}

fn products_agree<T: CpuReal>() {
    let mut one = CpuEngine::<T>::with_threads(1);
    let mut many = CpuEngine::<T>::with_threads(THREADS);
    assert_eq!(many.threads(), THREADS);
    assert!(many.info().driver.contains(&format!("{THREADS} threads")));
    // Around the threshold, odd sizes (partial blocks of faer's kernels), tall and wide.
    let shapes = [
        (128, 256, 64),
        (129, 257, 65),
        (127, 255, 300),
        (1000, 9, 300),
        (7, 1500, 301),
        (300, 300, 12),
        (64, 64, 257),
    ];
    for (m, n, k) in shapes {
        assert!(
            2 * m * n * k >= PARALLEL_MIN_FLOP,
            "({m}, {n}, {k}) would stay on one thread"
        );
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let expected = product(&mut one, (m, n, k), trans_a, trans_b);
            let actual = product(&mut many, (m, n, k), trans_a, trans_b);
            assert_eq!(
                bits(&actual),
                bits(&expected),
                "{} ({m} x {n} x {k}, trans {trans_a} {trans_b}) differs on {THREADS} threads",
                T::ENGINE_NAME
            );
        }
    }
}

#[test]
fn products_are_bit_identical_on_several_threads_f32() {
    products_agree::<f32>();
}

#[test]
fn products_are_bit_identical_on_several_threads_f64() {
    products_agree::<f64>();
}

fn adam_steps_agree<T: CpuReal>(shape: AttackShape) {
    let model = attack_model(shape).unwrap();
    let inputs = attack_batch(shape).0;
    let losses = |threads| {
        let mut engine = CpuEngine::<T>::with_threads(threads);
        attack_losses(&mut engine, &model, shape, &inputs, 4).unwrap()
    };
    let (expected, actual) = (losses(1), losses(THREADS));
    assert!(expected.iter().all(|l| l.is_finite()), "{expected:?}");
    assert_eq!(
        bits(&actual),
        bits(&expected),
        "{} {}: losses {actual:?} on {THREADS} threads, {expected:?} on one",
        T::ENGINE_NAME,
        shape.name()
    );
}

#[test]
fn adam_steps_are_bit_identical_on_several_threads() {
    for defended in [false, true] {
        // Width 256: products above the threshold and Adam updates split in chunks (65536
        // entries in the middle layer); batch 32 adds products below the threshold.
        for batch in [128, 32] {
            let shape = AttackShape {
                width: 256,
                batch,
                defended,
            };
            adam_steps_agree::<f32>(shape);
            adam_steps_agree::<f64>(shape);
        }
    }
}

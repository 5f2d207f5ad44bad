//! Spectrum tools on Hessian-vector products (power iteration, Lanczos, Hutchinson's trace)
//! against the dense Hessian of tiny models, formed column by column from the same products on
//! the f64 engine and eigendecomposed in f64 by faer; then on the f32 engines (CPU and GPU)
//! against those exact values; and the submissions and readbacks each method makes.

mod common;

use common::{Call, CallLog, Logging, gpu, rng, uniform};
use specdef::data::teacher_student;
use specdef::defense::{LayerSelection, SpecDef};
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::{Op, Tensor};
use specdef::model::{
    ActivationChoice, DeviceModel, HessianVectorProduct, HostModel, LanczosSettings, Loss,
    ModelSpec, PowerSettings, TraceSettings, Trainable, Workspace, hutchinson_trace, lanczos,
    power_iteration, rademacher_probes,
};
use specdef::tolerance::rms;
use specdef::{Engine, Tolerance};
use std::rc::Rc;

/// A model, one batch and a loss: one Hessian.
struct Problem {
    name: &'static str,
    model: HostModel,
    inputs: Vec<f64>,
    targets: Vec<f64>,
    target_cols: usize,
    loss: Loss,
}

const BATCH: usize = 8;

fn defended(model: &HostModel, alpha: f64) -> HostModel {
    SpecDef {
        alpha,
        k: 1,
        layers: LayerSelection::All,
        compensate: true,
        compensation: Default::default(),
    }
    .apply(model, 0)
    .unwrap()
}

/// A tanh MLP 3-4-3 under cross-entropy, undefended and SpecDef-defended; another with inputs
/// that saturate tanh, where the eigenvalue of largest magnitude is negative; a linear layer
/// 4 -> 2 under half the squared error (a quadratic loss: H = I_2 (x) G, every eigenvalue
/// twice), and the same layer defended ([W~, C], no longer quadratic).
fn problems() -> Vec<Problem> {
    let mlp = HostModel::init(
        &ModelSpec {
            widths: vec![3, 4, 3],
            activation: ActivationChoice::Tanh,
        },
        11,
    );
    let inputs = uniform(&mut rng(12), BATCH * 3, 1.5);
    let labels: Vec<f64> = (0..BATCH).map(|i| (i % 3) as f64).collect();
    let saturated = HostModel::init(
        &ModelSpec {
            widths: vec![3, 4, 3],
            activation: ActivationChoice::Tanh,
        },
        2,
    );
    let saturating_inputs = uniform(&mut rng(102), BATCH * 3, 3.0);
    let other_labels: Vec<f64> = (0..BATCH).map(|i| ((7 * i + 2) % 3) as f64).collect();
    let linear = HostModel::init(
        &ModelSpec {
            widths: vec![4, 2],
            activation: ActivationChoice::Identity,
        },
        13,
    );
    let data = teacher_student(BATCH, &[4, 3, 2], 14);
    let classification = |name, model| Problem {
        name,
        model,
        inputs: inputs.clone(),
        targets: labels.clone(),
        target_cols: 1,
        loss: Loss::CrossEntropy,
    };
    let regression = |name, model| Problem {
        name,
        model,
        inputs: data.inputs.clone(),
        targets: data.targets.clone(),
        target_cols: data.outputs,
        loss: Loss::SquaredError,
    };
    vec![
        classification("tanh MLP, cross-entropy", mlp.clone()),
        classification("defended tanh MLP, cross-entropy", defended(&mlp, 5.0)),
        Problem {
            name: "tanh MLP on saturating inputs, cross-entropy",
            model: saturated,
            inputs: saturating_inputs,
            targets: other_labels,
            target_cols: 1,
            loss: Loss::CrossEntropy,
        },
        regression("linear layer, squared error", linear.clone()),
        regression(
            "defended linear layer, squared error",
            defended(&linear, 10.0),
        ),
    ]
}

/// Runs `body` with the problem's Hessian-vector product prepared on `engine`.
fn with_product<R>(
    engine: &mut dyn Engine,
    problem: &Problem,
    body: impl FnOnce(&mut dyn Engine, &HessianVectorProduct) -> R,
) -> R {
    let device = DeviceModel::upload(engine, &problem.model).unwrap();
    let batch = problem.inputs.len() / problem.model.spec.widths[0];
    let ws = Workspace::alloc(engine, &device, batch, problem.target_cols).unwrap();
    engine.upload(ws.inputs, &problem.inputs).unwrap();
    engine.upload(ws.targets, &problem.targets).unwrap();
    let product =
        HessianVectorProduct::prepare(engine, &device, &ws, problem.loss, Trainable::default())
            .unwrap();
    body(engine, &product)
}

/// The dense Hessian (row-major, n x n) and its eigenvalues, ascending, in f64.
struct Exact {
    n: usize,
    hessian: Vec<f64>,
    eigenvalues: Vec<f64>,
}

impl Exact {
    /// Column i is H e_i, from the product on the f64 engine; symmetrised after checking that
    /// only rounding separates H from H^T.
    fn of(problem: &Problem) -> Self {
        let columns = with_product(&mut CpuEngine64::new(), problem, |e, product| {
            let lens: Vec<usize> = product.slots().iter().map(|s| s.1.len()).collect();
            let n: usize = lens.iter().sum();
            (0..n)
                .map(|i| {
                    let mut unit = vec![0.0; n];
                    unit[i] = 1.0;
                    let hv = product.apply(e, &split(&unit, &lens)).unwrap();
                    hv.concat()
                })
                .collect::<Vec<_>>()
        });
        let n = columns.len();
        let entry = |i: usize, j: usize| columns[j][i];
        let largest = columns.iter().flatten().fold(0.0f64, |a, x| a.max(x.abs()));
        let asymmetry = (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .fold(0.0f64, |a, (i, j)| a.max((entry(i, j) - entry(j, i)).abs()));
        // f64 forward-over-reverse: H_ij and H_ji are sums of a few dozen products each.
        assert!(
            asymmetry <= 1e-12 * largest,
            "{}: H is not symmetric: |H - H^T| = {asymmetry:e}, max |H| = {largest:e}",
            problem.name
        );
        let hessian: Vec<f64> = (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| 0.5 * (entry(i, j) + entry(j, i)))
            .collect();
        let eigenvalues = faer::Mat::from_fn(n, n, |i, j| hessian[i * n + j])
            .self_adjoint_eigenvalues(faer::Side::Lower)
            .unwrap();
        Self {
            n,
            hessian,
            eigenvalues,
        }
    }

    fn largest(&self) -> f64 {
        self.eigenvalues[self.n - 1]
    }

    fn smallest(&self) -> f64 {
        self.eigenvalues[0]
    }

    /// The eigenvalue of largest magnitude, with its sign.
    fn dominant(&self) -> f64 {
        if self.largest().abs() >= self.smallest().abs() {
            self.largest()
        } else {
            self.smallest()
        }
    }

    fn sigma_1(&self) -> f64 {
        self.dominant().abs()
    }

    fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.hessian[i * self.n + i]).sum()
    }

    fn quadratic_form(&self, z: &[f64]) -> f64 {
        (0..self.n)
            .map(|i| {
                z[i] * (0..self.n)
                    .map(|j| self.hessian[i * self.n + j] * z[j])
                    .sum::<f64>()
            })
            .sum()
    }

    /// The variance of one Rademacher sample z^T H z: 2 sum_{i != j} H_ij^2.
    fn rademacher_variance(&self) -> f64 {
        let off_diagonal: f64 = (0..self.n)
            .flat_map(|i| (0..self.n).map(move |j| (i, j)))
            .filter(|(i, j)| i != j)
            .map(|(i, j)| self.hessian[i * self.n + j].powi(2))
            .sum();
        2.0 * off_diagonal
    }

    /// The distance from `value` to the nearest eigenvalue.
    fn distance_to_spectrum(&self, value: f64) -> f64 {
        (self.eigenvalues.iter())
            .map(|e| (e - value).abs())
            .fold(f64::INFINITY, f64::min)
    }
}

fn split(flat: &[f64], lens: &[usize]) -> Vec<Vec<f64>> {
    let mut rest = flat;
    lens.iter()
        .map(|&len| {
            let (head, tail) = rest.split_at(len);
            rest = tail;
            head.to_vec()
        })
        .collect()
}

/// Runs `body` on the f32 CPU engine and, where there is one, the GPU engine.
fn on_f32_engines(mut body: impl FnMut(&mut dyn Engine)) {
    body(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        body(&mut *gpu);
    }
}

/// Tight enough that the estimate's error (about the last change over 1 - (lambda_2 /
/// lambda_1)^2) is far below the 1e-6 asserted, loose enough for f64's rounding of the quotient.
fn f64_power_settings() -> PowerSettings {
    PowerSettings {
        tolerance: 1e-13,
        max_iterations: 20_000,
        ..PowerSettings::default()
    }
}

#[test]
fn the_tiny_models_have_the_spectra_the_tests_rely_on() {
    let mut negative_dominant = 0;
    for problem in problems() {
        let exact = Exact::of(&problem);
        // A Hessian of scale zero would make every relative check vacuous.
        assert!(
            exact.sigma_1() > 1e-3,
            "{}: {:?}",
            problem.name,
            exact.eigenvalues
        );
        if problem.loss == Loss::CrossEntropy {
            // Shifting every logit of a row alike leaves the loss unchanged: the last layer's
            // bias and weight have a null direction per hidden unit and one more, so the
            // Hessian is singular (Lanczos breaks down before n steps there).
            let zeros = (exact.eigenvalues.iter())
                .filter(|e| e.abs() <= 1e-12 * exact.sigma_1())
                .count();
            assert!(zeros >= 5, "{}: {:?}", problem.name, exact.eigenvalues);
        }
        if exact.dominant() < 0.0 {
            negative_dominant += 1;
        }
    }
    // So the sign of sigma_1's estimate is tested both ways.
    assert_eq!(negative_dominant, 1);
}

#[test]
fn power_iteration_finds_sigma_1_with_its_sign_on_the_f64_engine() {
    for problem in problems() {
        let exact = Exact::of(&problem);
        let settings = f64_power_settings();
        let found = with_product(&mut CpuEngine64::new(), &problem, |e, product| {
            power_iteration(e, product, &settings).unwrap()
        });
        assert!(found.converged, "{}: {found:?}", problem.name);
        assert_eq!(found.iterations, found.history.len());
        assert_eq!(found.estimate, *found.history.last().unwrap());
        // Whole chunks only.
        assert_eq!(found.iterations % settings.chunk, 0, "{}", problem.name);
        // 1e-6 relative, as asked of sigma_1; the sign must be the dominant eigenvalue's.
        Tolerance::new(0.0, 1e-6)
            .check(&[found.estimate], &[exact.dominant()])
            .unwrap_or_else(|e| panic!("{}: {e}", problem.name));
        assert_eq!(found.sigma_1(), found.estimate.abs());
    }
}

#[test]
fn power_iteration_stops_at_max_iterations_without_convergence() {
    let problem = &problems()[1];
    let settings = PowerSettings {
        chunk: 7,
        max_iterations: 10,
        // Only an exactly repeated quotient would settle.
        tolerance: 0.0,
        patience: 3,
        ..PowerSettings::default()
    };
    let found = with_product(&mut CpuEngine64::new(), problem, |e, product| {
        power_iteration(e, product, &settings).unwrap()
    });
    // A chunk of 7, then the last 3.
    assert_eq!(found.iterations, 10);
    assert_eq!(found.history.len(), 10);
    assert!(!found.converged, "{found:?}");
}

#[test]
fn full_lanczos_reproduces_the_extreme_eigenvalues_on_the_f64_engine() {
    for problem in problems() {
        let exact = Exact::of(&problem);
        let settings = LanczosSettings {
            steps: exact.n,
            ..LanczosSettings::default()
        };
        let found = with_product(&mut CpuEngine64::new(), &problem, |e, product| {
            lanczos(e, product, &settings).unwrap()
        });
        let scale = exact.sigma_1();
        // 1e-6 relative; eigenvalues near zero are compared against the spectrum's scale.
        let tolerance = Tolerance::new(1e-6 * scale, 1e-6);
        let name = problem.name;
        tolerance
            .check(
                &[found.largest(1)[0], found.smallest(1)[0], found.sigma_1()],
                &[exact.largest(), exact.smallest(), exact.dominant()],
            )
            .unwrap_or_else(|e| panic!("{name}: {e}; {found:?}"));
        // Every Ritz value is an eigenvalue once the Krylov space is exhausted.
        for &ritz in &found.ritz_values {
            let distance = exact.distance_to_spectrum(ritz);
            assert!(
                distance <= 1e-6 * scale,
                "{name}: Ritz value {ritz:e} is {distance:e} off"
            );
        }
        assert!(found.ritz_values.is_sorted(), "{name}: {found:?}");
        if problem.name == "linear layer, squared error" {
            // H = I_2 (x) G with G 5x5: at most 5 distinct eigenvalues, so the recurrence must
            // break down by step 5 of the 10 asked for.
            assert!(found.broke_down && found.steps <= 5, "{name}: {found:?}");
        }
        if found.broke_down {
            assert!(found.steps < settings.steps, "{name}: {found:?}");
            assert_eq!(found.ritz_values.len(), found.steps);
        }
    }
}

#[test]
fn partial_lanczos_ritz_values_lie_within_their_residual_bounds_of_the_spectrum() {
    for problem in problems() {
        let exact = Exact::of(&problem);
        let settings = LanczosSettings {
            steps: 6,
            seed: 3,
            ..LanczosSettings::default()
        };
        let found = with_product(&mut CpuEngine64::new(), &problem, |e, product| {
            lanczos(e, product, &settings).unwrap()
        });
        let scale = exact.sigma_1();
        for (&ritz, &bound) in found.ritz_values.iter().zip(&found.residual_bounds) {
            // Kahan's bound: some eigenvalue lies within the Ritz vector's residual norm (plus
            // f64 rounding, relative to the spectrum's scale).
            let distance = exact.distance_to_spectrum(ritz);
            assert!(
                distance <= bound + 1e-10 * scale,
                "{}: Ritz value {ritz:e} is {distance:e} from the spectrum, bound {bound:e}",
                problem.name
            );
            // Ritz values of a symmetric matrix lie within its spectrum's range.
            assert!(
                ritz >= exact.smallest() - 1e-10 * scale && ritz <= exact.largest() + 1e-10 * scale,
                "{}: Ritz value {ritz:e} outside [{:e}, {:e}]",
                problem.name,
                exact.smallest(),
                exact.largest()
            );
        }
    }
}

#[test]
fn hutchinson_on_the_f64_engine_is_the_mean_of_the_dense_quadratic_forms_of_its_probes() {
    for problem in problems() {
        let exact = Exact::of(&problem);
        let settings = TraceSettings {
            seed: 21,
            probes: 12,
        };
        let found = with_product(&mut CpuEngine64::new(), &problem, |e, product| {
            hutchinson_trace(e, product, &settings).unwrap()
        });
        let expected: Vec<f64> = rademacher_probes(settings.seed, settings.probes, exact.n)
            .map(|z| exact.quadratic_form(&z))
            .collect();
        let mean = expected.iter().sum::<f64>() / expected.len() as f64;
        let variance = (expected.iter()).map(|x| (x - mean).powi(2)).sum::<f64>()
            / (expected.len() - 1) as f64;
        let std_error = (variance / expected.len() as f64).sqrt();
        // Both are f64 sums of n^2 products of the same values in different orders.
        let scale = rms(&expected).max(exact.sigma_1());
        let tolerance = Tolerance::new(1e-9 * scale, 1e-9);
        tolerance
            .check(&found.samples, &expected)
            .and_then(|_| tolerance.check(&[found.mean, found.std_error], &[mean, std_error]))
            .unwrap_or_else(|e| panic!("{}: {e}", problem.name));
        assert_eq!(found.probes, settings.probes);
    }
}

#[test]
fn hutchinson_with_many_probes_is_within_a_few_standard_errors_of_the_trace() {
    for problem in &problems()[..2] {
        let exact = Exact::of(problem);
        let settings = TraceSettings {
            seed: 22,
            probes: 1000,
        };
        let found = with_product(&mut CpuEngine64::new(), problem, |e, product| {
            hutchinson_trace(e, product, &settings).unwrap()
        });
        // Four standard errors: a seeded draw, so this either always or never holds.
        assert!(
            (found.mean - exact.trace()).abs() <= 4.0 * found.std_error,
            "{}: {} +- {} against the trace {}",
            problem.name,
            found.mean,
            found.std_error,
            exact.trace()
        );
        // The sample standard error against the exact one: over 1000 probes it is within a few
        // per cent; 20% leaves room for heavy tails.
        let exact_std_error = (exact.rademacher_variance() / settings.probes as f64).sqrt();
        Tolerance::new(0.0, 0.2)
            .check(&[found.std_error], &[exact_std_error])
            .unwrap_or_else(|e| panic!("{}: standard error {e}", problem.name));
    }
}

#[test]
fn the_f32_engines_match_the_exact_spectrum_within_1e_3() {
    let problems = problems();
    let exact: Vec<Exact> = problems.iter().map(Exact::of).collect();
    on_f32_engines(|e| {
        let engine = e.info();
        for (problem, exact) in problems.iter().zip(&exact) {
            let scale = exact.sigma_1();
            // 1e-3 relative to each value and to the spectrum's scale (f32 products and
            // reductions over ~50 parameters, iterated).
            let tolerance = Tolerance::new(1e-3 * scale, 1e-3);
            let context = |what: &str| format!("{} on {engine}: {what}", problem.name);
            let power = with_product(e, problem, |e, product| {
                power_iteration(e, product, &PowerSettings::default()).unwrap()
            });
            tolerance
                .check(&[power.estimate], &[exact.dominant()])
                .unwrap_or_else(|err| panic!("{}: {err}; {power:?}", context("power iteration")));
            let steps = LanczosSettings {
                steps: exact.n,
                ..LanczosSettings::default()
            };
            let krylov = with_product(e, problem, |e, product| {
                lanczos(e, product, &steps).unwrap()
            });
            tolerance
                .check(
                    &[krylov.largest(1)[0], krylov.smallest(1)[0]],
                    &[exact.largest(), exact.smallest()],
                )
                .unwrap_or_else(|err| panic!("{}: {err}; {krylov:?}", context("lanczos")));
            let probes = TraceSettings {
                seed: 23,
                probes: 8,
            };
            let trace = with_product(e, problem, |e, product| {
                hutchinson_trace(e, product, &probes).unwrap()
            });
            let expected: Vec<f64> = rademacher_probes(probes.seed, probes.probes, exact.n)
                .map(|z| exact.quadratic_form(&z))
                .collect();
            // Each z^T H z sums n^2 terms of +-H_ij: relative to their scale, not to a value
            // that cancels to near zero.
            let scale = rms(&expected).max(exact.sigma_1());
            Tolerance::new(1e-3 * scale, 1e-3)
                .check(&trace.samples, &expected)
                .unwrap_or_else(|err| panic!("{}: {err}", context("hutchinson")));
        }
    });
}

/// What `body` did on a logging engine, with the product of the defended MLP prepared there:
/// its result, the product's ops, and the calls it made (the model's and batch's uploads left
/// out).
struct Logged<R> {
    result: R,
    product_ops: Vec<Op>,
    blocks: usize,
    calls: Vec<Call>,
}

fn logged<R>(body: impl FnOnce(&mut dyn Engine, &HessianVectorProduct) -> R) -> Logged<R> {
    let log = CallLog::default();
    let mut engine = Logging {
        inner: CpuEngine64::new(),
        log: Rc::clone(&log),
    };
    let (result, product_ops, blocks) = with_product(&mut engine, &problems()[1], |e, product| {
        log.borrow_mut().clear();
        let result = body(e, product);
        (
            result,
            product.recording.ops().to_vec(),
            product.slots().len(),
        )
    });
    Logged {
        result,
        product_ops,
        blocks,
        calls: log.take(),
    }
}

impl<R> Logged<R> {
    /// Runs and reads, uploads left out.
    fn submissions(&self) -> Vec<&Call> {
        self.calls.iter().filter(|c| **c != Call::Upload).collect()
    }

    fn uploads(&self) -> usize {
        self.calls.iter().filter(|c| **c == Call::Upload).count()
    }

    /// How many products `ops` holds, counted by the product's first op.
    fn products_in(&self, ops: &[Op]) -> usize {
        let first = &self.product_ops[0];
        let count = |ops: &[Op]| ops.iter().filter(|op| *op == first).count();
        count(ops) / count(&self.product_ops)
    }
}

#[test]
fn power_iteration_runs_each_chunk_as_one_submission_and_reads_once_per_chunk() {
    let settings = PowerSettings {
        chunk: 20,
        max_iterations: 60,
        // Never settles, so all three chunks run.
        patience: usize::MAX,
        ..PowerSettings::default()
    };
    let logged = logged(|e, product| power_iteration(e, product, &settings).unwrap());
    assert_eq!(logged.result.iterations, 60);
    let submissions = logged.submissions();
    assert_eq!(
        submissions.len(),
        6,
        "three runs and three reads: {submissions:?}"
    );
    for pair in submissions.chunks(2) {
        match pair {
            [Call::Run(ops), Call::Read(20)] => assert_eq!(logged.products_in(ops), 20),
            other => {
                panic!("expected a run of 20 products, then a read of 20 quotients, got {other:?}")
            }
        }
    }
    // The start vector only, one upload per parameter block, before the first run.
    assert_eq!(logged.uploads(), logged.blocks);
    assert_eq!(logged.calls[logged.blocks - 1], Call::Upload);
}

#[test]
fn lanczos_is_one_submission_and_one_read() {
    let steps = 9;
    let settings = LanczosSettings {
        steps,
        ..LanczosSettings::default()
    };
    let logged = logged(|e, product| lanczos(e, product, &settings).unwrap());
    assert_eq!(logged.result.alphas.len(), steps);
    match &logged.submissions()[..] {
        // Every step's alpha and beta in one read.
        [Call::Run(ops), Call::Read(read)] => {
            assert_eq!(logged.products_in(ops), steps);
            assert_eq!(*read, 2 * steps);
        }
        other => panic!("expected one run and one read, got {other:?}"),
    }
    // The start vector, into the first Lanczos vector and the product's input.
    assert_eq!(logged.uploads(), 2 * logged.blocks);
}

#[test]
fn hutchinson_runs_once_per_probe_and_reads_once() {
    let probes = 5;
    let settings = TraceSettings { seed: 1, probes };
    let logged = logged(|e, product| hutchinson_trace(e, product, &settings).unwrap());
    assert_eq!(logged.result.samples.len(), probes);
    let submissions = logged.submissions();
    assert_eq!(submissions.len(), probes + 1, "{submissions:?}");
    for call in &submissions[..probes] {
        match call {
            Call::Run(ops) => assert_eq!(logged.products_in(ops), 1),
            other => panic!("expected a run per probe, got {other:?}"),
        }
    }
    assert_eq!(*submissions[probes], Call::Read(probes));
    // Each probe uploaded block by block.
    assert_eq!(logged.uploads(), probes * logged.blocks);
}

/// `curvature::measure` (what `specdef curvature` prints) on the classification problems:
/// sigma_1 within 1e-6 of the dense f64 value on the f64 engine and 1e-3 on the f32 engines,
/// Lanczos's extremes likewise, every block's sigma_1 a lower bound of sigma_1(H), and the
/// block shares summing to one.
#[test]
fn the_curvature_report_agrees_with_the_dense_hessian() {
    use specdef::curvature::{CurvatureSettings, measure};
    use specdef::data::Dataset;
    let problems: Vec<Problem> = problems()
        .into_iter()
        .filter(|p| p.loss == Loss::CrossEntropy)
        .collect();
    let check = |engine: &mut dyn Engine, relative: f64| {
        for problem in &problems {
            let exact = Exact::of(problem);
            let batch = Dataset {
                inputs: problem.inputs.clone(),
                labels: problem.targets.iter().map(|&l| l as usize).collect(),
                features: problem.model.spec.widths[0],
            };
            let settings = CurvatureSettings {
                power: if relative < 1e-5 {
                    f64_power_settings()
                } else {
                    PowerSettings::default()
                },
                lanczos: LanczosSettings {
                    steps: exact.n,
                    ..LanczosSettings::default()
                },
                top_blocks: usize::MAX,
                ..CurvatureSettings::default()
            };
            let report = measure(engine, &problem.model, &batch, &settings).unwrap();
            let context = format!("{} on {}", problem.name, engine.info());
            let scale = exact.sigma_1();
            Tolerance::new(relative * scale, relative)
                .check(
                    &[
                        report.sigma_1,
                        report.top_eigenvalues[0],
                        report.bottom_eigenvalues[0],
                    ],
                    &[exact.sigma_1(), exact.largest(), exact.smallest()],
                )
                .unwrap_or_else(|err| panic!("{context}: {err}"));
            assert_eq!(report.parameters, exact.n, "{context}");
            assert!(
                (report.predicted_stable_sgd_lr * report.sigma_1 - 2.0).abs() < 1e-12,
                "{context}"
            );
            for block in &report.blocks {
                let sigma = block.sigma_1.expect("every block measured");
                assert!(
                    sigma <= scale * (1.0 + relative),
                    "{context}: block {} x {} has sigma_1 {sigma} > {scale}",
                    block.rows,
                    block.cols
                );
            }
            assert!(report.block_lower_bound > 0.0, "{context}");
            let shares: f64 = report.blocks.iter().map(|b| b.share).sum();
            assert!(
                (shares - 1.0).abs() < 1e-9,
                "{context}: shares sum to {shares}"
            );
        }
    };
    check(&mut CpuEngine64::new(), 1e-6);
    on_f32_engines(|engine| check(engine, 1e-3));
}

/// Power iteration on `D H D` (Adam's preconditioned sharpness, `P^-1 H` with `D = P^-1/2`)
/// against the dense eigenvalues of `D H D` for a seeded positive diagonal `D`: within 1e-6 on
/// the f64 engine, 1e-3 on the f32 engines.
#[test]
fn preconditioned_power_iteration_finds_the_largest_eigenvalue_of_d_h_d() {
    use specdef::model::preconditioned_power_iteration;
    for problem in &problems()[..2] {
        let exact = Exact::of(problem);
        let n = exact.n;
        let d: Vec<f64> = uniform(&mut rng(31), n, 1.0)
            .iter()
            .map(|u| 0.2 + u.abs() * 3.0)
            .collect();
        let scaled = faer::Mat::from_fn(n, n, |i, j| d[i] * exact.hessian[i * n + j] * d[j]);
        let eigenvalues = scaled.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
        let expected = eigenvalues[0].abs().max(eigenvalues[n - 1].abs());
        let check = |engine: &mut dyn Engine, settings: &PowerSettings, relative: f64| {
            let found = with_product(engine, problem, |e, product| {
                let lens: Vec<usize> = product.slots().iter().map(|s| s.1.len()).collect();
                let blocks = split(&d, &lens);
                let scaling: Vec<Tensor> = product
                    .slots()
                    .iter()
                    .zip(&blocks)
                    .map(|(slot, values)| {
                        let (rows, cols) = slot.1.shape();
                        e.tensor_from("test.scaling", rows, cols, values).unwrap()
                    })
                    .collect();
                preconditioned_power_iteration(e, product, &scaling, settings).unwrap()
            });
            let context = format!("{} on {}", problem.name, engine.info());
            assert!(found.converged, "{context}: {found:?}");
            Tolerance::new(relative * expected, relative)
                .check(&[found.sigma_1()], &[expected])
                .unwrap_or_else(|err| panic!("{context}: {err}"));
        };
        check(&mut CpuEngine64::new(), &f64_power_settings(), 1e-6);
        on_f32_engines(|engine| check(engine, &PowerSettings::default(), 1e-3));
        // The scaling changes the answer: D H D's top eigenvalue is not H's.
        assert!((expected - exact.sigma_1()).abs() > 1e-3 * expected);
    }
}

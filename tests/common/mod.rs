//! Shared by the integration tests: the GPU engine (or a printed reason why there is none), the
//! one-body-per-engine runner, and seeded test data.
#![allow(dead_code)] // each test binary uses a different part

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use specdef::defense::{CompensationForm, LayerSelection, SpecDef};
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::gpu::GpuEngine;
use specdef::engine::{EngineError, EngineInfo, Op, Recording, ReleaseQueue, Tensor};
use specdef::model::{
    ActivationChoice, FactorOf, FactorRole, HostModel, LoraOf, Matrix, ModelSpec,
};
use specdef::scenario::{RunSettings, Scenario, ScenarioOutcome, run_scenario};
use specdef::{Engine, Tolerance};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The backend the GPU tests must run on: WGPU_BACKEND when set, else the platform's native API.
fn expected_backend() -> String {
    if let Ok(backend) = std::env::var("WGPU_BACKEND") {
        return backend.to_lowercase();
    }
    match std::env::consts::OS {
        "macos" | "ios" => "metal",
        "windows" => "dx12",
        _ => "vulkan",
    }
    .to_string()
}

fn gpu_required() -> bool {
    std::env::var("SPECDEF_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Skips (returns None, with the reason printed) or, under SPECDEF_REQUIRE_GPU=1, fails.
fn unavailable(reason: String) -> Option<Mutex<GpuEngine>> {
    if gpu_required() {
        panic!("SPECDEF_REQUIRE_GPU=1 but {reason}");
    }
    eprintln!("skipping GPU tests: {reason}");
    None
}

static GPU: OnceLock<Option<Mutex<GpuEngine>>> = OnceLock::new();

/// The GPU engine shared by the tests of one binary (one device, pipelines compiled once), or
/// None where this machine has no suitable adapter.
pub fn gpu() -> Option<MutexGuard<'static, GpuEngine>> {
    let slot = GPU.get_or_init(|| match GpuEngine::new() {
        Err(e) => unavailable(format!("no GPU engine: {e}")),
        Ok(engine) => {
            let backend = engine.adapter_info().backend.to_str().to_lowercase();
            let expected = expected_backend();
            if backend != expected {
                unavailable(format!(
                    "the adapter '{}' runs on {backend}, not the expected {expected}",
                    engine.adapter_info().name
                ))
            } else {
                eprintln!("GPU tests run on {}", engine.info());
                Some(Mutex::new(engine))
            }
        }
    });
    // A test that panicked while holding the engine leaves it usable for the others.
    slot.as_ref()
        .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// Runs one test body on every engine and compares each result with the f64 CPU reference:
/// `body` returns the values to compare (it records, runs and reads back on the engine it gets).
pub fn check_on_every_engine(
    what: &str,
    tolerance: Tolerance,
    body: impl Fn(&mut dyn Engine) -> Vec<f64>,
) {
    let reference = body(&mut CpuEngine64::new());
    let check = |engine: &mut dyn Engine| {
        let name = engine.info().engine;
        let actual = body(engine);
        if let Err(e) = tolerance.check(&actual, &reference) {
            panic!("{what} on {name}: {e}");
        }
    };
    check(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        check(&mut *gpu);
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform values in [-scale, scale].
pub fn uniform(rng: &mut ChaCha8Rng, len: usize, scale: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-scale..=scale)).collect()
}

/// Runs a scenario to the end (no cache) with progress and notes discarded.
pub fn run_quietly(
    engine: &mut dyn Engine,
    scenario: &Scenario,
    variant: Option<&str>,
) -> ScenarioOutcome {
    let (mut progress, mut log) = (|_: usize, _: usize, _: &str| {}, |_: &str| {});
    run_scenario(
        engine,
        scenario,
        &mut RunSettings {
            variant: variant.map(String::from),
            cache_dir: None,
            progress: &mut progress,
            log: &mut log,
        },
    )
    .unwrap()
}

/// The input width of the small models' tasks (`small_spec`).
pub const SMALL_FEATURES: usize = 6;

/// The small model of the defences' tests: 6-9-7-4 with tanh.
pub fn small_spec() -> ModelSpec {
    ModelSpec {
        widths: vec![SMALL_FEATURES, 9, 7, 4],
        activation: ActivationChoice::Tanh,
    }
}

/// Training settings from TOML text.
pub fn train_settings(text: &str) -> specdef::training::TrainSettings {
    toml::from_str(text).expect("train settings")
}

/// A task a model can learn: inputs uniform in [-1, 1] around `shift`, labelled `first` where
/// the first input is below `shift` and `first + 1` above (harmful and utility tasks differ in
/// mean and in classes, as digits 5-9 and 0-4 do).
pub fn learnable_task(seed: u64, rows: usize, shift: f64, first: usize) -> specdef::data::Dataset {
    let inputs = uniform(&mut rng(seed), rows * SMALL_FEATURES, 1.0);
    specdef::data::Dataset {
        labels: (inputs.chunks(SMALL_FEATURES))
            .map(|row| first + usize::from(row[0] > 0.0))
            .collect(),
        inputs: inputs.iter().map(|v| v + shift).collect(),
        features: SMALL_FEATURES,
    }
}

/// The gradient by central differences of the host loss, parameter by parameter.
pub fn numeric_gradient(model: &HostModel, loss: &dyn Fn(&HostModel) -> f64) -> Vec<f64> {
    let keys: Vec<_> = model.parameters().into_iter().map(|(k, _)| k).collect();
    let mut gradient = Vec::new();
    for key in keys {
        let count = model
            .parameters()
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap()
            .1
            .values
            .len();
        for i in 0..count {
            let h = 1e-6;
            let mut plus = model.clone();
            plus.parameter_mut(key).unwrap().values[i] += h;
            let mut minus = model.clone();
            minus.parameter_mut(key).unwrap().values[i] -= h;
            gradient.push((loss(&plus) - loss(&minus)) / (2.0 * h));
        }
    }
    gradient
}

/// Every parameter of the model, in registry order, as one vector.
pub fn flat(model: &HostModel) -> Vec<f64> {
    (model.parameters().into_iter())
        .flat_map(|(_, m)| m.values.clone())
        .collect()
}

/// Runs a scenario to the end on the f32 CPU engine (with `cache_dir` as the model cache),
/// keeping its notes.
pub fn run_with_notes(
    scenario: &Scenario,
    cache_dir: Option<std::path::PathBuf>,
) -> (ScenarioOutcome, Vec<String>) {
    let mut notes = Vec::new();
    let (mut progress, mut log) = (
        |_: usize, _: usize, _: &str| {},
        |note: &str| notes.push(note.to_string()),
    );
    let outcome = run_scenario(
        &mut CpuEngine32::new(),
        scenario,
        &mut RunSettings {
            variant: None,
            cache_dir,
            progress: &mut progress,
            log: &mut log,
        },
    )
    .unwrap();
    (outcome, notes)
}

/// A model with every layer form: layer 0 a weight with a LoRA branch, layer 1 a 3-factor chain
/// whose middle factor has a LoRA branch, layer 2 SpecDef's [W~, C] with an injected layer after.
/// Widths 6-9-7-4 with `activation`.
pub fn every_form_model(activation: ActivationChoice) -> HostModel {
    let spec = ModelSpec {
        widths: vec![6, 9, 7, 4],
        activation,
    };
    let mut model = HostModel::init(&spec, 21);
    let mut r = rng(22);
    let mut matrix = |rows: usize, cols: usize, scale: f64| {
        Matrix::new(rows, cols, uniform(&mut r, rows * cols, scale))
    };
    let factor = |role, matrix, lora| FactorOf {
        role,
        matrix,
        lora,
        locked: false,
    };
    let lora = |a, b| Some(LoraOf { a, b, scale: 0.5 });
    // Non-zero biases so their gradients are not trivially checked at zero.
    for layer in &mut model.layers {
        layer.bias = Matrix::new(
            1,
            layer.bias.cols,
            uniform(&mut rng(23), layer.bias.cols, 0.3),
        );
    }
    model.layers[0].factors[0].lora = lora(matrix(2, 6, 0.5), matrix(9, 2, 0.5));
    model.layers[1].factors = vec![
        factor(
            FactorRole::Factor { index: 1, of: 3 },
            matrix(5, 9, 0.6),
            None,
        ),
        factor(
            FactorRole::Factor { index: 2, of: 3 },
            matrix(8, 5, 0.6),
            lora(matrix(3, 5, 0.5), matrix(8, 3, 0.5)),
        ),
        factor(
            FactorRole::Factor { index: 3, of: 3 },
            matrix(7, 8, 0.6),
            None,
        ),
    ];
    let defended = SpecDef {
        alpha: 10.0,
        k: 2,
        layers: LayerSelection::Indices(vec![2]),
        compensate: true,
        compensation: CompensationForm::Thin,
    }
    .apply(&model, 0)
    .unwrap();
    let mut model = defended;
    model.layers[2]
        .factors
        .push(factor(FactorRole::Injected, Matrix::identity(4), None));
    model.validate().unwrap();
    model
}

/// What a method asked of the engine, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Upload,
    /// A run, with its ops.
    Run(Vec<Op>),
    /// A read of this many tensors.
    Read(usize),
}

pub type CallLog = Rc<RefCell<Vec<Call>>>;

/// An engine with every upload, run and read logged where the test can see it while the engine
/// is lent out as `&mut dyn Engine`.
pub struct Logging<E: Engine> {
    pub inner: E,
    pub log: CallLog,
}

impl<E: Engine> Engine for Logging<E> {
    fn info(&self) -> EngineInfo {
        self.inner.info()
    }

    fn alloc(&mut self, label: &str, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        self.inner.alloc(label, rows, cols)
    }

    fn free(&mut self, tensor: Tensor) {
        self.inner.free(tensor)
    }

    fn release_queue(&self) -> ReleaseQueue {
        self.inner.release_queue()
    }

    fn upload(&mut self, tensor: Tensor, values: &[f64]) -> Result<(), EngineError> {
        self.log.borrow_mut().push(Call::Upload);
        self.inner.upload(tensor, values)
    }

    fn run(&mut self, recording: &Recording) -> Result<(), EngineError> {
        self.log
            .borrow_mut()
            .push(Call::Run(recording.ops().to_vec()));
        self.inner.run(recording)
    }

    fn read(&mut self, tensors: &[Tensor]) -> Result<Vec<Vec<f64>>, EngineError> {
        self.log.borrow_mut().push(Call::Read(tensors.len()));
        self.inner.read(tensors)
    }
}

/// Runs the `specdef` binary with `args` and the environment variables `envs`.
pub fn specdef_command(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_specdef"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("running specdef")
}

/// The standard output of a command that must have succeeded (its stderr in the failure).
pub fn succeeded(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The quick scenario cut short for tests that check what a run records, not what it finds:
/// 40 pretraining steps, 20 attack steps, learning rates 1e-2 and 1e-1.
pub fn short_quick() -> Scenario {
    let mut scenario = Scenario::builtin(Some("quick")).unwrap();
    scenario.pretrain.steps = 40;
    scenario.attack.steps = 20;
    scenario.attack.lr_grid = specdef::scenario::LrGrid {
        from: 1e-2,
        to: 1e-1,
        per_decade: 1,
    };
    scenario
}

/// A fresh, empty folder for one test case: `specdef-KIND-PID-CASE` in the temporary folder.
pub fn scratch(kind: &str, case: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("specdef-{kind}-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The specdef binary with its pretraining cache in `cache` and no scheduler's shard index in
/// its environment (a test run inside a Slurm job must not turn into a shard).
pub fn specdef_cli(cache: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_specdef"));
    command.env("SPECDEF_CACHE_DIR", cache);
    for name in [
        "SLURM_ARRAY_TASK_ID",
        "JOB_COMPLETION_INDEX",
        "SPECDEF_SHARD_COUNT",
    ] {
        command.env_remove(name);
    }
    command
}

/// `|got - want| / |want|` in the Euclidean norm.
pub fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    let norm = want.iter().map(|w| w * w).sum::<f64>().sqrt().max(1e-300);
    let diff = (got.iter().zip(want))
        .map(|(g, w)| (g - w).powi(2))
        .sum::<f64>();
    diff.sqrt() / norm
}

/// Whether `path` (a file scripts/fetch-transformer.sh fetches) exists; where it does not, the
/// reason is printed and the test should return, or, under SPECDEF_REQUIRE_TRANSFORMER=1 (CI),
/// it panics with the reason.
pub fn fetched(path: &std::path::Path) -> bool {
    if path.is_file() {
        return true;
    }
    let why = format!(
        "{} is missing: {}",
        path.display(),
        specdef::transformer_files::FETCH_HINT
    );
    if std::env::var("SPECDEF_REQUIRE_TRANSFORMER").as_deref() == Ok("1") {
        panic!("{why} (SPECDEF_REQUIRE_TRANSFORMER=1)");
    }
    eprintln!("skipping: {why}");
    false
}

/// The smallest scenario that runs every phase: one block, a couple of steps each.
pub const TINY_TRANSFORMER: &str = r#"
name = "tiny-transformer"
seed = 3

[encoder]
blocks = 1
tokens = 16
test_size = 12

[release]
optimizer = "adam"
lr = 3e-4
steps = 4
eval_every = 4
batch_size = 4

[suppression]
optimizer = "adam"
lr = 3e-4
steps = 2
eval_every = 2
batch_size = 4

[defense]
alphas = [1e4]
k = 25
layers = "0, 1, 2, 3"

[attack]
optimizers = ["adam", "adahessian"]
lr_grid = { from = 1e-3, to = 1e-3, per_decade = 1 }
steps = 2
eval_every = 1
batch_size = 4
target_accuracy = 0.99

[adaptive]
attacks = ["fusion"]
optimizers = ["sgd"]

[controls]
parts = ["biases-and-norms"]
optimizers = ["adam"]
"#;

/// The tiny transformer scenario's released classifier, made once per test binary by `specdef
/// release-transformer` (about half a minute in a debug build), or None (with the reason
/// printed) where the transformer files are not fetched.
pub fn tiny_released() -> Option<&'static std::path::Path> {
    use specdef::transformer_files::{model_dir, wordnet_dir};
    static RELEASED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    if !fetched(&model_dir().join("model.safetensors"))
        || !fetched(&wordnet_dir().join("data.noun"))
    {
        return None;
    }
    Some(RELEASED.get_or_init(|| {
        let dir = scratch("tiny-released", "release");
        let file = dir.join("tiny.toml");
        std::fs::write(&file, TINY_TRANSFORMER).unwrap();
        let out = dir.join("released.safetensors");
        let args = [
            "release-transformer",
            file.to_str().unwrap(),
            "--engine",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ];
        let stdout = succeeded(specdef_command(&args, &[]));
        assert!(stdout.contains("harmful accuracy"), "{stdout}");
        out
    }))
}

/// How far the transformer demo's sentence probabilities from an f32 engine (a GPU, WebGPU) may
/// be from the f64 engine's, before and after the attack, for the undefended model (`defended`
/// false) and its SpecDef twin at alpha 1e4, whose f32 rounding is alpha times larger and grows
/// through the attack's steps. Measured: tiny release, lavapipe, 3 Adam steps at 1e-3: 8e-9 and
/// 4e-7 undefended, 3e-6 and 2e-4 defended; the 2-block release, SwiftShader WebGPU, 10 Adam
/// steps at 1e-4: 2e-8 and 2e-6 undefended, 7e-5 and 5.5e-3 defended.
pub fn demo_tolerance(defended: bool) -> (f64, f64) {
    if defended { (1e-3, 2e-2) } else { (1e-4, 1e-3) }
}

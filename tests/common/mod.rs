//! Shared by the integration tests: the GPU engine (or a printed reason why there is none), the
//! one-body-per-engine runner, and seeded test data.
#![allow(dead_code)] // each test binary uses a different part

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::gpu::GpuEngine;
use specdef::scenario::{RunSettings, Scenario, ScenarioOutcome, run_scenario};
use specdef::{Engine, Tolerance};
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

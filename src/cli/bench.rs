//! `specdef bench` (the in-app harness natively, one suite of workloads, JSON lines out; or the
//! suite's attack steps written out for a peer implementation to run) and `specdef bench-plot`
//! (the cost curves of any number of such files).

use anyhow::{Context, Result};
use serde::Serialize;
use specdef::benchmark::{
    self, AttackShape, BENCH_LR, BenchRecord, BenchSettings, Suite, Workload, attack_batch,
    attack_losses, attack_model, prepare_attack_steps_of,
};
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::fusion::Fusion;
use specdef::engine::gpu::GpuEngine;
use specdef::engine_choice::EngineChoice;
use specdef::model::HostModel;
use specdef::training::{OptimizerHyper, OptimizerKind};
use specdef::{Engine, report};
use std::path::Path;

/// The most measured samples per workload (the `curves` suite takes minutes at 5).
const MAX_SAMPLES: usize = 1000;

pub fn bench(
    engines: &[EngineChoice],
    suite: Suite,
    out: &Path,
    samples: usize,
    unfused: bool,
) -> Result<()> {
    anyhow::ensure!(
        (1..=MAX_SAMPLES).contains(&samples),
        "--samples must be 1..={MAX_SAMPLES}, got {samples}"
    );
    crate::writable(out)?;
    let settings = BenchSettings {
        samples,
        ..BenchSettings::default()
    };
    let workloads = suite.workloads();
    let measure = |engine: &mut dyn Engine| {
        println!("{}", engine.info());
        benchmark::run_blocking(engine, workloads.clone(), settings, |record| {
            println!("  {}", record.summary())
        })
        .map_err(anyhow::Error::msg)
    };
    let mut records = Vec::new();
    for &choice in engines {
        if choice == EngineChoice::Gpu {
            // Concretely typed, so the same device also times the kernels.
            match GpuEngine::new() {
                Ok(mut gpu) => {
                    if unfused {
                        gpu.set_fusion(Fusion::Off);
                    }
                    let mut measured = measure(&mut gpu)?;
                    add_kernel_times(&mut gpu, &workloads, &mut measured)?;
                    records.extend(measured);
                }
                Err(e) => println!("gpu: skipped ({e:#})\n"),
            }
        } else {
            records.extend(measure(crate::open(choice)?.as_mut())?);
        }
    }
    report::write_atomically(out, benchmark::to_json_lines(&records)?.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The GPU's own time for one run of each workload, where the device has timestamp queries.
fn add_kernel_times(
    gpu: &mut GpuEngine,
    workloads: &[Workload],
    records: &mut [BenchRecord],
) -> Result<()> {
    if !gpu.has_timestamps() {
        println!("gpu: no timestamp queries; kernel times not measured");
        return Ok(());
    }
    for workload in workloads {
        let prepared = workload.prepare(gpu).map_err(anyhow::Error::msg)?;
        gpu.run(&prepared.recording)?;
        let timings = gpu.run_timed(&prepared.recording)?;
        let ms = timings.iter().map(|t| t.device_ns).sum::<f64>() / 1e6;
        println!(
            "  {:<28} {ms:.3} ms of kernel time per run",
            workload.name()
        );
        records
            .iter_mut()
            .filter(|r| r.workload == workload.name())
            .for_each(|r| r.kernel_ms_per_run = Some(ms));
    }
    Ok(())
}

/// The schema of `workloads.json`, what a peer implementation reads (benches/peers/).
pub const PEER_SCHEMA: &str = "specdef.peer/1";
/// Steps whose losses a peer must reproduce before it is timed.
const REFERENCE_STEPS: usize = 5;

#[derive(Serialize)]
struct PeerManifest {
    schema: &'static str,
    crate_version: &'static str,
    /// How the files' tensors are laid out and what one step computes.
    layout: &'static str,
    workloads: Vec<PeerWorkload>,
}

#[derive(Serialize)]
struct PeerWorkload {
    /// The `workload` string of specdef's bench records for the same work.
    name: String,
    file: String,
    widths: Vec<usize>,
    batch: usize,
    defended: bool,
    activation: &'static str,
    optimizer: PeerOptimizer,
    steps_per_run: usize,
    flop_per_step: Option<f64>,
    /// The f32 CPU engine's mean loss in steps 1..=5, each before its update. Two f32
    /// implementations drift apart within a few defended steps (alpha amplifies rounding)...
    reference_losses: Vec<f64>,
    /// ... so the f64 engine's, from the file's f32 values exactly, is what a peer running in
    /// f64 must match closely.
    reference_losses_f64: Vec<f64>,
}

#[derive(Serialize)]
struct PeerOptimizer {
    kind: &'static str,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

const PEER_LAYOUT: &str = "layer{i}.factor{j}: F32 [out_j, in_j], j in chain order from the \
    input side, so layer i computes y = x F0^T F1^T ... + layer{i}.bias (F32 [out]), ReLU after \
    every layer but the last; inputs: F32 [batch, 64]; labels: I64 [batch]. One step: mean \
    softmax cross-entropy, its gradient, then Adam with bias correction on every factor and bias.";

/// Writes the suite's attack-step workloads to `dir` as a peer implementation needs them: one
/// safetensors file per workload and `workloads.json` (written last: a folder without it is an
/// interrupted export).
pub fn export_peer(suite: Suite, dir: &Path) -> Result<()> {
    specdef::atomic_file::create_folder(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let manifest_path = dir.join("workloads.json");
    crate::writable(&manifest_path)?;
    let mut workloads = Vec::new();
    let mut engine = CpuEngine32::new();
    // The attack step's Adam: OptimizerState::new's, the defaults of the attack's optimiser.
    let adam = OptimizerHyper::default();
    for workload in suite.workloads() {
        let Workload::AttackSteps(shape) = workload else {
            continue;
        };
        eprintln!("exporting {}", shape.name());
        let context = || format!("exporting {}", shape.name());
        let model = attack_model(shape).with_context(context)?;
        let inputs = attack_batch(shape).0;
        let file = format!("{}.safetensors", shape.slug());
        let bytes = peer_tensors(&model, shape, &inputs).with_context(context)?;
        report::write_atomically(&dir.join(&file), &bytes)
            .with_context(|| format!("writing {}", dir.join(&file).display()))?;
        let prepared = prepare_attack_steps_of(&mut engine, &model, shape, &inputs, None)
            .map_err(|e| anyhow::anyhow!("{}: {e}", shape.name()))?;
        let losses = |engine: &mut dyn Engine, model: &HostModel, inputs: &[f64]| {
            attack_losses(engine, model, shape, inputs, REFERENCE_STEPS)
                .map_err(|e| anyhow::anyhow!("{}: {e}", shape.name()))
        };
        let reference_losses = losses(&mut engine, &model, &inputs)?;
        let reference_losses_f64 = losses(
            &mut CpuEngine64::new(),
            &round_to_f32(&model),
            &inputs.iter().map(|&v| v as f32 as f64).collect::<Vec<_>>(),
        )?;
        workloads.push(PeerWorkload {
            name: shape.name(),
            file,
            widths: shape.widths(),
            batch: shape.batch,
            defended: shape.defended,
            activation: "relu",
            optimizer: PeerOptimizer {
                kind: "adam",
                lr: BENCH_LR,
                beta1: adam.beta1,
                beta2: adam.beta2,
                eps: adam.eps,
                weight_decay: adam.weight_decay_for(OptimizerKind::Adam),
            },
            steps_per_run: prepared.work_per_run as usize,
            flop_per_step: prepared.flop_per_step,
            reference_losses,
            reference_losses_f64,
        });
    }
    anyhow::ensure!(
        !workloads.is_empty(),
        "the {suite:?} suite has no attack-step workloads to export"
    );
    let manifest = PeerManifest {
        schema: PEER_SCHEMA,
        crate_version: env!("CARGO_PKG_VERSION"),
        layout: PEER_LAYOUT,
        workloads,
    };
    report::write_atomically(
        &manifest_path,
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )
    .with_context(|| format!("writing {}", manifest_path.display()))?;
    println!(
        "wrote {} workloads to {}",
        manifest.workloads.len(),
        dir.display()
    );
    Ok(())
}

/// The model as the f32 engine holds it, in f64.
fn round_to_f32(model: &HostModel) -> HostModel {
    let mut rounded = model.clone();
    for layer in &mut rounded.layers {
        let matrices = layer.factors.iter_mut().map(|f| &mut f.matrix);
        for matrix in matrices.chain([&mut layer.bias]) {
            matrix.values.iter_mut().for_each(|v| *v = *v as f32 as f64);
        }
    }
    rounded
}

/// The workload's initial model and batch as a safetensors file, in f32 as the engine runs them.
fn peer_tensors(model: &HostModel, shape: AttackShape, inputs: &[f64]) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let labels = attack_batch(shape).1;
    let f32_bytes = |values: &[f64]| -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect()
    };
    let mut named: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        for (j, factor) in layer.factors.iter().enumerate() {
            anyhow::ensure!(factor.lora.is_none(), "a LoRA branch has no peer form");
            let m = &factor.matrix;
            named.push((
                format!("layer{i}.factor{j}"),
                Dtype::F32,
                vec![m.rows, m.cols],
                f32_bytes(&m.values),
            ));
        }
        named.push((
            format!("layer{i}.bias"),
            Dtype::F32,
            vec![layer.bias.values.len()],
            f32_bytes(&layer.bias.values),
        ));
    }
    named.push((
        "inputs".to_string(),
        Dtype::F32,
        vec![shape.batch, inputs.len() / shape.batch],
        f32_bytes(inputs),
    ));
    let labels: Vec<u8> = labels
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    named.push(("labels".to_string(), Dtype::I64, vec![shape.batch], labels));
    let views = named
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = [("format".to_string(), PEER_SCHEMA.to_string())]
        .into_iter()
        .collect();
    Ok(safetensors::tensor::serialize(views, Some(metadata))?)
}

/// `specdef bench-plot`: the cost curves of the records in `files`.
pub fn plot(files: &[std::path::PathBuf], out: &Path) -> Result<()> {
    crate::writable(out)?;
    let mut records = Vec::new();
    for file in files {
        let text =
            specdef::input_file::read_text_bounded(file, specdef::input_file::MAX_RECORDS_BYTES)
                .with_context(|| format!("reading {}", file.display()))?;
        for (line, json) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let record: BenchRecord = serde_json::from_str(json).with_context(|| {
                format!("{} line {}: not a bench record", file.display(), line + 1)
            })?;
            (record.validate())
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", file.display(), line + 1))?;
            records.push(record);
        }
    }
    let svg = report::cost_plot::cost_curves(&records)
        .map_err(|e| anyhow::anyhow!("plotting {}: {e}", out.display()))?;
    report::write_atomically(out, svg.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} ({} records)", out.display(), records.len());
    Ok(())
}

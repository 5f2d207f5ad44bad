//! The specdef command line. The work is in the library; this file parses arguments, picks the
//! engine, shows progress and prints.

mod cli;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use specdef::app::ScenarioChoice;
use specdef::benchmark::Suite;
use specdef::defense::{CompensationForm, LayerSelection, SpecDef};
use specdef::engine::gpu::GpuEngine;
use specdef::engine_choice::{self, EngineChoice};
use specdef::model::{DeviceModel, HostModel, file};
use specdef::report;
use specdef::run_folder::{self, ResultFolder};
use specdef::scenario::{DEFAULT_SCENARIO, RunSettings, Scenario, TaskData, run_scenario};
use specdef::training::{OptimizerKind, train};
use specdef::{Engine, selftest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "specdef",
    version,
    about = "SpecDef training resistance and the attacks against it, on wgpu with an f64 CPU reference"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (default: the built-in one) and write the results (the default command).
    Run {
        /// A scenario TOML file; the built-in scenario when absent.
        scenario: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        /// Folder for runs.jsonl, runs.csv and the tables.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// The scenario's `quick` variant: a small version in well under a minute.
        #[arg(long)]
        quick: bool,
        /// Another named variant of the scenario; without a scenario file, `transformer`,
        /// `transformer-quick` or `transformer-full` run the pretrained-encoder scenario.
        #[arg(long, conflicts_with = "quick")]
        variant: Option<String>,
        /// The transformer scenario only: start from this released classifier (`specdef
        /// release-transformer` of the same scenario) instead of releasing it again.
        #[arg(long, value_name = "FILE")]
        released: Option<PathBuf>,
    },
    /// Run a scenario's sweep (`[sweep]`: seeds, the attack grid or a random search), whole or
    /// one shard of it, resuming where an earlier run of it stopped. Without --shard the shard
    /// comes from a Slurm array (SLURM_ARRAY_TASK_ID/COUNT) or a Kubernetes indexed Job
    /// (JOB_COMPLETION_INDEX with --shard-count). A whole sweep ends by writing OUT/results.
    Sweep {
        /// A scenario TOML file; the built-in scenario when absent.
        scenario: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        /// The sweep's folder (a shard's state goes to OUT/shard-I-of-N).
        #[arg(long, default_value = "out/sweep")]
        out: PathBuf,
        #[arg(long)]
        quick: bool,
        #[arg(long, conflicts_with = "quick")]
        variant: Option<String>,
        /// Run the I-th (from 0) of N contiguous slices of the sweep's run list.
        #[arg(long, value_name = "I/N")]
        shard: Option<specdef::sweep::Shard>,
        /// N where the environment gives only the index (JOB_COMPLETION_INDEX); also read from
        /// SPECDEF_SHARD_COUNT.
        #[arg(long, value_name = "N")]
        shard_count: Option<usize>,
    },
    /// Merge sweep folders (shards' state folders, or folders holding shard-* folders) into one
    /// result folder; refuses other scenarios or versions, lists missing and duplicated runs.
    Merge {
        #[arg(required = true, value_name = "DIR")]
        folders: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Write the result folder even where runs are missing.
        #[arg(long)]
        partial: bool,
    },
    /// Train the released model of a scenario on its utility task and save it.
    Train {
        scenario: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        #[arg(long)]
        quick: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Apply SpecDef to a model file.
    Defend {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        alpha: f64,
        #[arg(long, default_value_t = 25)]
        k: usize,
        /// all, indices like 0,2, or random:N
        #[arg(long, default_value = "all")]
        layers: LayerSelection,
        /// The ablation: scale singular values without compensation layers.
        #[arg(long)]
        no_compensation: bool,
        /// The compensation form: full (I + (1/alpha - 1) U_k U_k^T) or thin (U S S~^-1 U^T).
        #[arg(long, value_enum, default_value = "full")]
        compensation: CompensationChoice,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare two result files run for run (exit code 0 only when every run agrees).
    Compare {
        first: PathBuf,
        second: PathBuf,
        /// Steps to target may differ by this many steps.
        #[arg(long, default_value_t = 0)]
        steps_band: usize,
        /// Final losses agree within loss_abs + loss_rel * |loss|.
        #[arg(long, default_value_t = 1e-2)]
        loss_rel: f64,
        #[arg(long, default_value_t = 1e-3)]
        loss_abs: f64,
        /// Accuracies agree within this absolute difference.
        #[arg(long, default_value_t = 0.02)]
        accuracy_abs: f64,
        /// Judge only each attack's outcome (target reached, steps to target, utility after the
        /// defence) and report the losses and accuracies without judging them: for files of
        /// different precisions (f32 against f64), whose losses differ at large alpha by nature.
        #[arg(long)]
        outcomes_only: bool,
    },
    /// List models, defences, attacks and scenarios.
    List,
    /// Check every kernel family against the f64 reference and measure matmul throughput.
    Selftest {
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [EngineChoice::Gpu, EngineChoice::Cpu])]
        engine: Vec<EngineChoice>,
        /// The side of the timed square matmul (1 to 8192: three 8192^2 f32 matrices are 805 MB).
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=8192))]
        matmul_size: u32,
    },
    /// Measure matmul GFLOP/s and attack steps/s with the in-app harness (the browser's too), and
    /// write them as JSON lines (schema specdef.bench/1).
    Bench {
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [EngineChoice::Gpu, EngineChoice::Cpu])]
        engine: Vec<EngineChoice>,
        /// Which workloads: `curves` and `peer` take minutes (widths to 2048, batches to 1024).
        #[arg(long, value_enum, default_value_t = Suite::Standard)]
        suite: Suite,
        #[arg(long, default_value = "out/bench.jsonl")]
        out: PathBuf,
        /// Measured samples per workload (after 2 warm-up samples).
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// Run the GPU engine's recordings unfused, one dispatch per recorded op (the "before"
        /// of the fusion figures; results agree within the parity tests' tolerances).
        #[arg(long)]
        unfused: bool,
        /// Measure nothing: write the suite's attack-step workloads (initial model, batch,
        /// optimiser, the first steps' losses) to this folder for a peer implementation to run
        /// the same work (benches/peers/).
        #[arg(long, value_name = "DIR")]
        export_peer: Option<PathBuf>,
    },
    /// What the GPU engine itself costs, for tuning it on a GPU: a dependent dispatch against
    /// an independent one, and a plain product at the shape of each product of the default and
    /// width-2048 steps and at 2048^3, in each tile configuration (device time where the adapter
    /// has timestamp queries). JSON lines (schema specdef.gpu_costs/1).
    BenchGpu {
        #[arg(long, default_value = "out/gpu_costs.jsonl")]
        out: PathBuf,
        /// Dispatches in each chain (dependent and independent).
        #[arg(long, default_value_t = 2000)]
        dispatches: usize,
        /// Measured samples of each figure (after one warm-up run); their median is recorded.
        #[arg(long, default_value_t = 9)]
        samples: usize,
        /// Only the default step's products, no 2048^3 (a check that runs in seconds, also on
        /// a software adapter).
        #[arg(long)]
        quick: bool,
    },
    /// Plot steps/s and GFLOP/s against model width and batch (log-log) from `specdef bench
    /// --suite curves` files and peers' files of the same schema, with the CPU's peak matmul
    /// GFLOP/s as the ceiling.
    BenchPlot {
        #[arg(required = true, value_name = "BENCH.jsonl")]
        files: Vec<PathBuf>,
        #[arg(long, default_value = "out/cost_curves.svg")]
        out: PathBuf,
    },
    /// One self-contained HTML page (figures inlined, no network) and its markdown twin from a
    /// run's records: the paper's claims beside what was measured, the figures, the main table,
    /// the success windows, the adaptive attacks, the strongest attack under a utility bound.
    Report {
        /// The folder `specdef run --out` wrote (its runs.jsonl), or a JSON-lines file.
        #[arg(value_name = "RESULTS")]
        results: PathBuf,
        /// Where report.html, report.md and the figures go (default: beside the records).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The loss Hessian of a model on a stated batch: sigma_1, the extreme eigenvalues, the
    /// trace, the heaviest blocks, a lower bound and the predicted largest stable SGD step.
    Curvature {
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        batch: cli::curvature::BatchArgs,
        #[command(flatten)]
        freeze: cli::curvature::FreezeArgs,
        #[command(flatten)]
        adam: cli::curvature::AdamArgs,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        /// Power iteration stops once the Rayleigh quotient moved by at most this (relative) in
        /// 3 iterations in a row. Below ~1e-6 the f32 engines' rounding keeps it moving.
        #[arg(long, default_value_t = 1e-5)]
        tolerance: f64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// sigma_1 of the loss Hessian against SpecDef's alpha (compensation trainable and frozen),
    /// with fitted log-log slopes: writes sigma_vs_alpha.json and sigma_vs_alpha.svg.
    CurvatureAlpha {
        /// The released (undefended) model, e.g. from `specdef train`.
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_delimiter = ',', default_values_t = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6])]
        alphas: Vec<f64>,
        #[arg(long, default_value_t = 25)]
        k: usize,
        #[command(flatten)]
        batch: cli::curvature::BatchArgs,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        #[arg(long, default_value = "out/curvature")]
        out: PathBuf,
    },
    /// For SGD on every model of a scenario (undefended and each defence): the largest learning
    /// rate that does not diverge, by bisection between the grid's last stable and first
    /// diverging rate, beside the prediction 2 / sigma_1.
    StableStep {
        /// The released (undefended) model, e.g. from `specdef train`.
        #[arg(long)]
        model: PathBuf,
        /// The scenario whose defences, attack budget and grid are used (the built-in one).
        #[arg(long, value_name = "SCENARIO.toml")]
        scenario: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        /// Bisect until first diverging / largest stable is at most this.
        #[arg(long, default_value_t = 1.1)]
        ratio: f64,
        /// Also write the rows as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Write a task's data as a safetensors file (`inputs` n x d, `labels` n), so a batch can be
    /// checked with another tool (and read back by `specdef curvature --data`).
    ExportData {
        #[arg(long, value_enum)]
        task: cli::curvature::TaskChoice,
        #[arg(long, value_enum)]
        split: cli::curvature::SplitChoice,
        #[arg(long, value_name = "SCENARIO.toml")]
        scenario: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Does this machine reproduce the reference? Runs the quick scenario on the engine and
    /// compares its outcomes with the f64 reference records built in (exit code 1 where any run
    /// differs). Regenerate the reference with
    /// `specdef run --quick --engine cpu64 --out reference/quick-cpu64`.
    Verify {
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        /// Compare with these records instead of the built-in reference.
        #[arg(long, value_name = "runs.jsonl")]
        reference: Option<PathBuf>,
    },
    /// Print each text's token ids and mean-pooled sentence embedding from the pretrained
    /// encoder (all-MiniLM-L6-v2, fetched by scripts/fetch-transformer.sh) as JSON lines.
    Embed {
        /// The model folder (config.json, model.safetensors, tokenizer.json); default
        /// $SPECDEF_TRANSFORMER_DIR/all-MiniLM-L6-v2, else cache/transformer/all-MiniLM-L6-v2.
        #[arg(long, value_name = "FOLDER")]
        model: Option<PathBuf>,
        /// Keep only the first LAYERS blocks (all six by default).
        #[arg(long)]
        layers: Option<usize>,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Fine-tune the pretrained encoder's first blocks with a fresh head on WordNet topics,
    /// undefended or with SpecDef on its attention maps (--alpha); writes the summary and the
    /// loss per step as JSON lines. Needs scripts/fetch-transformer.sh.
    /// The transformer scenario's release and suppression alone: fine-tune the encoder's first
    /// blocks and a ten-topic head, suppress the harmful topics, and save the released
    /// classifier (safetensors, F32; what the browser demo and `run --released` start from).
    ReleaseTransformer {
        /// A transformer scenario file; the built-in one when absent.
        scenario: Option<PathBuf>,
        /// transformer (the default without a file), transformer-quick or transformer-full, or
        /// a variant of the file.
        #[arg(long)]
        variant: Option<String>,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        /// Default cache/transformer/released.safetensors (in $SPECDEF_TRANSFORMER_DIR where
        /// set), where the app's demo and `specdef transformer-demo` look for it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The app's transformer demo: a sentence's class probabilities before and after a short
    /// attack on the harmful topics, on the released classifier and on its SpecDef twin.
    TransformerDemo {
        /// The sentence (the task's texts read "lemma: gloss").
        #[arg(default_value_t = specdef::transformer_scenario::DemoSettings::default().text)]
        text: String,
        /// The released classifier (`specdef release-transformer`); default
        /// cache/transformer/released.safetensors.
        #[arg(long, value_name = "FILE")]
        released: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        /// sgd, momentum, nesterov, adam, adamw, muon or adahessian.
        #[arg(long, default_value = "adam")]
        optimizer: String,
        #[arg(long, default_value_t = 1e-4)]
        lr: f64,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Also write the outcome as JSON (what the browser page publishes).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    TransformerFinetune {
        #[command(flatten)]
        settings: cli::transformer::FinetuneSettings,
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        #[arg(long, default_value = "out/transformer-finetune.jsonl")]
        out: PathBuf,
    },
    /// Print the adapter the GPU engine would use, and its limits.
    Info,
    /// Open the app in a window: pick a scenario, run it, watch the loss and the tables.
    Gui {
        /// Compute on the f32 CPU engine instead of the window's GPU device.
        #[arg(long)]
        cpu: bool,
        /// Start the quick scenario as soon as the window opens.
        #[arg(long)]
        run_quick: bool,
        /// Show a results file (JSON lines from `specdef run` or the app).
        #[arg(long, value_name = "FILE")]
        open: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompensationChoice {
    Full,
    Thin,
}

/// The engine `--engine` asks for, by the library's policy; its note (why the CPU engine computes
/// where `auto` looked for a GPU) goes to stderr. Only `gpu` without an adapter fails.
fn open(choice: EngineChoice) -> Result<Box<dyn Engine>> {
    let opened = engine_choice::open(choice).context("opening the GPU engine")?;
    if let Some(note) = opened.note {
        eprintln!("note: {note}");
    }
    Ok(opened.engine)
}

/// Refuses an output path that cannot be written, before the work that would fill it.
fn writable(out: &Path) -> Result<()> {
    specdef::atomic_file::check_writable(out)
        .with_context(|| format!("cannot write {}", out.display()))
}

fn load_scenario(path: Option<&Path>, variant: Option<&str>) -> Result<Scenario> {
    let parsed = match path {
        None => Scenario::builtin(variant),
        Some(path) => {
            let text = specdef::input_file::read_text_bounded(
                path,
                specdef::input_file::MAX_SCENARIO_BYTES,
            )
            .with_context(|| format!("reading scenario {}", path.display()))?;
            Scenario::parse(&text, variant, &path.display().to_string())
        }
    };
    parsed.map_err(anyhow::Error::msg)
}

fn run(
    scenario_path: Option<&Path>,
    choice: EngineChoice,
    out: &Path,
    variant: Option<String>,
    released: Option<&Path>,
) -> Result<()> {
    if let Some(transformer) = cli::transformer_run::chosen(scenario_path, variant.as_deref())? {
        return cli::transformer_run::run(&transformer, choice, out, variant, released);
    }
    if released.is_some() {
        anyhow::bail!(
            "--released starts a transformer scenario from a released classifier; this scenario is the digits one"
        );
    }
    let scenario = load_scenario(scenario_path, variant.as_deref())?;
    // Claimed before the work: a second run into the folder, or a folder that cannot be
    // written, is refused now rather than after the runs.
    let folder = ResultFolder::claim(out)?;
    let mut engine = open(choice)?;
    println!(
        "scenario {}{} on {}",
        scenario.name,
        variant
            .as_ref()
            .map_or(String::new(), |v| format!(" ({v})")),
        engine.info()
    );
    let outcome = run_with_progress(engine.as_mut(), &scenario, variant)?;
    publish(folder, &outcome.records, &outcome.defenses, out)
}

/// Prints a run's tables and publishes its result set into the claimed folder `out`.
fn publish(
    folder: ResultFolder,
    records: &[specdef::scenario::RunRecord],
    defenses: &[specdef::scenario::DefenseSummary],
    out: &Path,
) -> Result<()> {
    println!("\n{}", run_folder::tables(records, defenses));
    let written = folder.publish(records, defenses)?;
    for note in &written.skipped_figures {
        eprintln!("note: {note}");
    }
    println!("wrote {}/: {}", out.display(), written.files.join(", "));
    Ok(())
}

/// Runs a scenario with a progress bar (hidden without a terminal) and its notes on stderr.
fn run_with_progress(
    engine: &mut dyn Engine,
    scenario: &Scenario,
    variant: Option<String>,
) -> Result<specdef::scenario::ScenarioOutcome> {
    Ok(with_progress(variant, |settings| {
        run_scenario(engine, scenario, settings)
    })?)
}

/// Calls `work` with run settings that show a progress bar of the attack runs (hidden without
/// a terminal), send notes to stderr and cache the pretrained model in the default place.
fn with_progress<T>(variant: Option<String>, work: impl FnOnce(&mut RunSettings<'_>) -> T) -> T {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} attack runs, {elapsed} elapsed, about {eta} left {msg}",
        )
        .expect("valid template"),
    );
    // Where the bar is hidden (stderr not a terminal: CI logs, `nohup`, a pipe), a line per
    // finished block of runs (one model under one optimiser) with the time left.
    let started = std::time::Instant::now();
    let mut block = String::new();
    let mut progress = |done: usize, total: usize, what: &str| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(what.to_string());
        // An attack's description ends in its learning rate; the rest names its block.
        let Some((next, _)) = what.rsplit_once(" lr=") else {
            return;
        };
        if bar.is_hidden() && next != block {
            if done > 0 && !block.is_empty() {
                let elapsed = started.elapsed().as_secs_f64();
                let left = elapsed * (total - done.min(total)) as f64 / done as f64;
                eprintln!(
                    "{done}/{total} attack runs, {elapsed:.0} s elapsed, about {left:.0} s left: \
                     finished {block}"
                );
            }
            block = next.to_string();
        }
    };
    // Notes (cache hits, retraining and why) reach stderr even where the bar is hidden (no TTY).
    let mut log = |line: &str| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let result = work(&mut RunSettings {
        variant,
        cache_dir: specdef::scenario::default_cache_dir(),
        progress: &mut progress,
        log: &mut log,
    });
    bar.finish_and_clear();
    result
}

fn train_released(
    scenario_path: Option<&Path>,
    choice: EngineChoice,
    quick: bool,
    out: &Path,
) -> Result<()> {
    let scenario = load_scenario(scenario_path, quick.then_some("quick"))?;
    writable(out)?;
    let mut engine = open(choice)?;
    let data = TaskData::load(&scenario)?;
    let host = HostModel::init(&scenario.model, scenario.seed);
    let device = DeviceModel::upload(engine.as_mut(), &host)?;
    // As a scenario run makes it: pretraining, then (relearning) the suppression stage.
    let outcome = train(
        engine.as_mut(),
        &device,
        &data.release_train,
        &data.release_test,
        &scenario.pretrain,
        scenario.seed,
    )?;
    let mut done = format!(
        "pretrained for {} steps (accuracy {:.3})",
        outcome.steps_run, outcome.final_accuracy
    );
    if let (Some(settings), Some(set)) = (scenario.release.suppression(), &data.suppression_train) {
        let suppressed = train(
            engine.as_mut(),
            &device,
            set,
            &data.utility_test,
            settings,
            scenario.seed,
        )?;
        done.push_str(&format!(
            ", then the harmful task suppressed for {} steps",
            suppressed.steps_run
        ));
    }
    let trained = device.download(engine.as_mut())?;
    let mut accuracy_on = |set: &specdef::data::Dataset| -> Result<f64> {
        let logits = specdef::model::predict(engine.as_mut(), &trained, &set.inputs)?;
        Ok(specdef::training::accuracy(&logits, &set.labels))
    };
    let (utility, harmful) = (
        accuracy_on(&data.utility_test)?,
        accuracy_on(&data.harmful_test)?,
    );
    file::save(out, &trained, "none")?;
    println!(
        "{done} on {}: utility accuracy {utility:.3}, harmful accuracy {harmful:.3} ({}); wrote {}",
        engine.info(),
        scenario.release.name(),
        out.display()
    );
    Ok(())
}

fn defend(model: &Path, defense: SpecDef, seed: u64, out: &Path) -> Result<()> {
    let (host, existing) = file::load(model)?;
    if existing != "none" {
        bail!("{} is already defended ({existing})", model.display());
    }
    writable(out)?;
    let defended = defense.apply(&host, seed)?;
    file::save(out, &defended, &serde_json::to_string(&defense)?)?;
    println!(
        "defended layers {:?} (alpha {:e}, k {}): {} -> {} parameters; wrote {}",
        defended.defended_layers(),
        defense.alpha,
        defense.k,
        host.parameter_count(),
        defended.parameter_count(),
        out.display()
    );
    Ok(())
}

fn read_records(path: &Path) -> Result<Vec<specdef::scenario::RunRecord>> {
    let text = specdef::input_file::read_text_bounded(path, specdef::input_file::MAX_RECORDS_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    let records =
        report::from_json_lines(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if records.is_empty() {
        bail!(
            "{}: no run records (an empty file; give the runs.jsonl a run or merge wrote)",
            path.display()
        );
    }
    Ok(records)
}

/// Disagreeing files are a result, not an error: the report says what differs, the exit code 1.
fn compare(first: &Path, second: &Path, settings: report::CompareSettings) -> Result<ExitCode> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let comparison = report::compare(&read_records(first)?, &read_records(second)?, &settings);
    print!("{}", comparison.report());
    Ok(if comparison.all_agree() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn list() {
    println!(
        "models:     MLP and deep linear networks: [model] widths = [64, ...], activation = relu | gelu | gelu_erf | tanh | identity"
    );
    println!(
        "defences:   none; specdef (alpha, k, layers = all | 0,2 | random:N, compensation = full | thin); the ablation (compensate = false)"
    );
    let optimizers: Vec<&str> = OptimizerKind::ALL.iter().map(|o| o.name()).collect();
    println!(
        "attacks:    {} over a log-spaced learning-rate grid; schedules constant | cosine | linear_warmup",
        optimizers.join(", ")
    );
    println!(
        "adaptive:   [adaptive] attacks = fusion, injection[-unlocked], factorisation[-locked | -fused][:p], lora-weight | lora-compensation | lora-both | lora-fused[:rank]"
    );
    println!(
        "benign:     [trainability] optimizers: fine-tuning on the mirrored utility digits; [data] heldout_fraction: harmful images no attack is judged on"
    );
    println!(
        "scenarios:  built-in digits-main-table, variants: {}",
        Scenario::variant_names(DEFAULT_SCENARIO).join(", ")
    );
    let transformer = specdef::transformer_scenario::TRANSFORMER_SCENARIO;
    println!(
        "            built-in minilm-wordnet-relearning (--variant transformer), variants: {} \
         (as transformer-NAME; needs scripts/fetch-transformer.sh)",
        Scenario::variant_names(transformer).join(", ")
    );
}

/// The engine, or None (with the reason printed) where the GPU engine was asked for and this
/// machine has no adapter: a listed engine that is missing is skipped, not fatal.
fn open_unless_no_gpu(choice: EngineChoice) -> Result<Option<Box<dyn Engine>>> {
    match open(choice) {
        Ok(engine) => Ok(Some(engine)),
        Err(e) if choice == EngineChoice::Gpu => {
            println!("gpu: skipped ({e:#})\n");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn run_selftest(engines: &[EngineChoice], matmul_size: u32) -> Result<()> {
    let matmul_size = matmul_size as usize;
    let mut failures = 0;
    for &choice in engines {
        let Some(mut engine) = open_unless_no_gpu(choice)? else {
            continue;
        };
        println!("{}", engine.info());
        for case in selftest::parity_cases() {
            match selftest::check_case(&case, engine.as_mut()) {
                Ok(agreement) => println!(
                    "  ok    {:<24} max |error| {:.2e}  ({:.0}% of tolerance)",
                    case.name,
                    agreement.max_abs_error,
                    100.0 * agreement.worst_ratio
                ),
                Err(e) => {
                    failures += 1;
                    println!("  FAIL  {:<24} {e}", case.name);
                }
            }
        }
        let gflops = selftest::matmul_gflops(engine.as_mut(), matmul_size, 5)?;
        println!("  matmul {matmul_size}^3: {gflops:.1} GFLOP/s\n");
    }
    anyhow::ensure!(failures == 0, "{failures} kernel checks failed");
    Ok(())
}

fn print_info() -> Result<()> {
    let engine = GpuEngine::new().context("opening the GPU engine")?;
    let limits = engine.limits();
    println!("{}", engine.info());
    println!(
        "  max_storage_buffer_binding_size {} bytes, max_buffer_size {} bytes",
        limits.max_storage_buffer_binding_size, limits.max_buffer_size
    );
    println!(
        "  max_compute_invocations_per_workgroup {}, max_compute_workgroup_storage_size {} bytes",
        limits.max_compute_invocations_per_workgroup, limits.max_compute_workgroup_storage_size
    );
    println!(
        "  GPU timestamps: {}",
        if engine.has_timestamps() { "yes" } else { "no" }
    );
    Ok(())
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    specdef::engine::cpu::Workers::check_environment().map_err(anyhow::Error::msg)?;
    let done = |result: Result<()>| result.map(|_| ExitCode::SUCCESS);
    match cli.command.unwrap_or(Command::Run {
        scenario: None,
        engine: EngineChoice::Auto,
        out: PathBuf::from("out"),
        quick: false,
        variant: None,
        released: None,
    }) {
        Command::Run {
            scenario,
            engine,
            out,
            quick,
            variant,
            released,
        } => done(run(
            scenario.as_deref(),
            engine,
            &out,
            variant.or(quick.then(|| "quick".to_string())),
            released.as_deref(),
        )),
        Command::Sweep {
            scenario,
            engine,
            out,
            quick,
            variant,
            shard,
            shard_count,
        } => done(cli::sweep::sweep(
            scenario.as_deref(),
            engine,
            &out,
            variant.or(quick.then(|| "quick".to_string())),
            shard,
            shard_count,
        )),
        Command::Merge {
            folders,
            out,
            partial,
        } => done(cli::sweep::merge(&folders, &out, partial)),
        Command::Train {
            scenario,
            engine,
            quick,
            out,
        } => done(train_released(scenario.as_deref(), engine, quick, &out)),
        Command::Defend {
            model,
            alpha,
            k,
            layers,
            no_compensation,
            compensation,
            seed,
            out,
        } => done(defend(
            &model,
            SpecDef {
                alpha,
                k,
                layers,
                compensate: !no_compensation,
                compensation: match compensation {
                    CompensationChoice::Full => CompensationForm::Full,
                    CompensationChoice::Thin => CompensationForm::Thin,
                },
            },
            seed,
            &out,
        )),
        Command::Compare {
            first,
            second,
            steps_band,
            loss_rel,
            loss_abs,
            accuracy_abs,
            outcomes_only,
        } => compare(
            &first,
            &second,
            report::CompareSettings {
                steps_band,
                loss: specdef::Tolerance::new(loss_abs, loss_rel),
                accuracy_abs,
                outcomes_only,
            },
        ),
        Command::List => {
            list();
            Ok(ExitCode::SUCCESS)
        }
        Command::Selftest {
            engine,
            matmul_size,
        } => done(run_selftest(&engine, matmul_size)),
        Command::Bench {
            engine,
            suite,
            out,
            samples,
            unfused,
            export_peer,
        } => done(match export_peer {
            Some(dir) => cli::bench::export_peer(suite, &dir),
            None => cli::bench::bench(&engine, suite, &out, samples, unfused),
        }),
        Command::BenchGpu {
            out,
            dispatches,
            samples,
            quick,
        } => done(cli::gpu_costs::bench_gpu(&out, dispatches, samples, quick)),
        Command::BenchPlot { files, out } => done(cli::bench::plot(&files, &out)),
        Command::Report { results, out } => done(cli::report::report(&results, out.as_deref())),
        Command::Curvature {
            model,
            batch,
            freeze,
            adam,
            engine,
            tolerance,
            json,
        } => done(cli::curvature::curvature(
            &model, &batch, &freeze, &adam, engine, tolerance, json,
        )),
        Command::CurvatureAlpha {
            model,
            alphas,
            k,
            batch,
            engine,
            out,
        } => done(cli::curvature::curvature_alpha(
            &model, &alphas, k, &batch, engine, &out,
        )),
        Command::StableStep {
            model,
            scenario,
            engine,
            ratio,
            json,
        } => done(cli::curvature::stable_step(
            &model,
            scenario.as_deref(),
            engine,
            ratio,
            json.as_deref(),
        )),
        Command::ExportData {
            task,
            split,
            scenario,
            out,
        } => done(cli::curvature::export_data(
            task,
            split,
            scenario.as_deref(),
            &out,
        )),
        Command::Verify { engine, reference } => cli::verify::verify(engine, reference.as_deref()),
        Command::Embed {
            model,
            layers,
            engine,
            texts,
        } => done(cli::embed::embed(model.as_deref(), layers, engine, &texts)),
        Command::ReleaseTransformer {
            scenario,
            variant,
            engine,
            out,
        } => done(cli::transformer_run::release(
            scenario.as_deref(),
            variant.as_deref(),
            engine,
            &out.unwrap_or_else(specdef::transformer_files::released_path),
        )),
        Command::TransformerDemo {
            text,
            released,
            engine,
            optimizer,
            lr,
            steps,
            out,
        } => done(
            cli::transformer_demo::optimizer(&optimizer).and_then(|optimizer| {
                let released = released.unwrap_or_else(specdef::transformer_files::released_path);
                let settings = specdef::transformer_scenario::DemoSettings {
                    text,
                    optimizer,
                    lr,
                    steps,
                };
                cli::transformer_demo::demo(&released, engine, settings, out.as_deref())
            }),
        ),
        Command::TransformerFinetune {
            settings,
            engine,
            out,
        } => done(cli::transformer::finetune(&settings, engine, &out)),
        Command::Info => done(print_info()),
        Command::Gui {
            cpu,
            run_quick,
            open,
        } => done(
            specdef::app::run_native(cpu, run_quick.then_some(ScenarioChoice::Quick), open)
                .map_err(|e| anyhow::anyhow!("opening the window: {e}")),
        ),
    }
}

//! `specdef curvature`, `specdef curvature-alpha`, `specdef stable-step` and
//! `specdef export-data`: the Hessian's spectrum of a released model on a stated batch, its
//! growth with SpecDef's alpha, and the largest stable SGD step against 2 / sigma_1.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use specdef::attack::AdaptiveAttack;
use specdef::curvature::{self, AdamRun, CurvatureReport, CurvatureSettings, SigmaPoint};
use specdef::data::{Dataset, file as data_file};
use specdef::defense::{CompensationForm, LayerSelection, SpecDef};
use specdef::engine_choice::EngineChoice;
use specdef::model::spectrum::{LanczosSettings, PowerSettings};
use specdef::model::{DeviceModel, ParamGroup, Trainable, file};
use specdef::scenario::{Scenario, TaskData};
use specdef::training::OptimizerHyper;
use specdef::training::{OptimizerKind, train};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TaskChoice {
    Harmful,
    Utility,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SplitChoice {
    Train,
    Test,
}

/// Which batch the Hessian is of.
#[derive(Args, Clone, Debug)]
pub struct BatchArgs {
    /// The task whose loss the Hessian is of (the scenario's classes).
    #[arg(long, value_enum, default_value = "harmful")]
    pub task: TaskChoice,
    #[arg(long, value_enum, default_value = "train")]
    pub split: SplitChoice,
    /// The first N rows of the split (the attack's batch size by default).
    #[arg(long, default_value_t = 128, conflicts_with = "data")]
    pub samples: usize,
    /// Read the batch from a data file (`inputs` n x d, `labels` n) instead.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// The scenario whose data split and classes define the task (the built-in one by default).
    #[arg(long, value_name = "SCENARIO.toml")]
    pub scenario: Option<PathBuf>,
}

/// What the Hessian is over.
#[derive(Args, Clone, Debug)]
pub struct FreezeArgs {
    /// Parameter groups held fixed (weights, biases, compensation, factors, injected, lora).
    #[arg(long, value_delimiter = ',', value_parser = parse_group)]
    pub freeze: Vec<ParamGroup>,
    /// Rewrite the model as this adaptive attack does first (fusion, injection[-unlocked],
    /// factorisation[-locked|-fused][:p], lora-weight|compensation|both|fused[:r]) and measure
    /// the Hessian over the parameters that attack trains (less any --freeze).
    #[arg(long, value_name = "ATTACK")]
    pub adaptive: Option<AdaptiveAttack>,
}

impl FreezeArgs {
    fn trainable(&self) -> Trainable {
        let kept: Vec<ParamGroup> = ParamGroup::ALL
            .into_iter()
            .filter(|g| !self.freeze.contains(g))
            .collect();
        Trainable::only(&kept)
    }
}

fn parse_group(name: &str) -> Result<ParamGroup, String> {
    ParamGroup::ALL
        .into_iter()
        .find(|g| g.name() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = ParamGroup::ALL.iter().map(|g| g.name()).collect();
            format!(
                "unknown parameter group {name:?} (known: {})",
                known.join(", ")
            )
        })
}

fn scenario(path: Option<&Path>) -> Result<Scenario> {
    crate::load_scenario(path, None)
}

fn split(data: &TaskData, task: TaskChoice, split: SplitChoice) -> &Dataset {
    match (task, split) {
        (TaskChoice::Harmful, SplitChoice::Train) => &data.harmful_train,
        (TaskChoice::Harmful, SplitChoice::Test) => &data.harmful_test,
        (TaskChoice::Utility, SplitChoice::Train) => &data.utility_train,
        (TaskChoice::Utility, SplitChoice::Test) => &data.utility_test,
    }
}

impl BatchArgs {
    /// The batch, and how to name it in reports.
    fn load(&self) -> Result<(Dataset, String)> {
        if let Some(path) = &self.data {
            let bytes =
                specdef::input_file::read_bounded(path, specdef::input_file::MAX_TENSOR_FILE_BYTES)
                    .with_context(|| format!("reading {}", path.display()))?;
            let data = data_file::decode(&bytes)
                .with_context(|| format!("data file {}", path.display()))?;
            return Ok((data, path.display().to_string()));
        }
        if self.samples == 0 {
            bail!("--samples must be at least 1");
        }
        let task_data = TaskData::load(&scenario(self.scenario.as_deref())?)?;
        let rows = split(&task_data, self.task, self.split);
        let n = self.samples.min(rows.len());
        let indices: Vec<usize> = (0..n).collect();
        let name = format!(
            "the first {n} rows of the {:?} task's {:?} split",
            self.task, self.split
        )
        .to_lowercase();
        Ok((rows.select(&indices), name))
    }
}

pub fn export_data(
    task: TaskChoice,
    which: SplitChoice,
    scenario_path: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let data = TaskData::load(&scenario(scenario_path)?)?;
    let rows = split(&data, task, which);
    let bytes = data_file::encode(rows)?;
    specdef::atomic_file::write_atomically(out, &bytes)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} rows x {} features of the {task:?} task's {which:?} split to {}",
        rows.len(),
        rows.features,
        out.display()
    );
    Ok(())
}

/// Adam's preconditioned sharpness, measured after a full-batch Adam run on the batch.
#[derive(Args, Clone, Debug)]
pub struct AdamArgs {
    /// Also measure lambda_max(P^-1 H) after `--adam-steps` full-batch Adam steps at this rate
    /// (PyTorch's betas and eps), beside Cohen et al.'s (2 + 2 beta1) / ((1 - beta1) lr).
    #[arg(long, value_name = "LR")]
    pub adam_lr: Option<f64>,
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub adam_steps: usize,
}

pub fn curvature(
    model_path: &Path,
    batch: &BatchArgs,
    freeze: &FreezeArgs,
    adam: &AdamArgs,
    choice: EngineChoice,
    tolerance: f64,
    json: bool,
) -> Result<()> {
    let max_lr = specdef::scenario::MAX_LR;
    if let Some(lr) = adam.adam_lr
        && !(lr.is_finite() && lr > 0.0 && lr <= max_lr)
    {
        bail!("--adam-lr must be a number in (0, {max_lr:e}], got {lr}");
    }
    let max_steps = curvature::MAX_ADAM_STEPS;
    if adam.adam_lr.is_some() && !(1..=max_steps).contains(&adam.adam_steps) {
        bail!(
            "--adam-steps must be 1..={max_steps} (Adam's preconditioner needs a step; all steps \
             are one recording), got {}",
            adam.adam_steps
        );
    }
    if !(tolerance.is_finite() && tolerance > 0.0) {
        bail!("--tolerance must be a positive number, got {tolerance}");
    }
    let (model, defense) = file::load(model_path)?;
    // The adaptive attacker's rewrite, training what that attack trains.
    let (model, trainable) = match freeze.adaptive {
        None => (model, freeze.trainable()),
        Some(attack) => {
            // Alpha as the model shows it (SpecDef scales sigma_1 of W~ by alpha), for p.
            let sigmas = specdef::scenario::layer_sigmas(&model).map_err(anyhow::Error::msg)?;
            let alpha = (sigmas.iter())
                .map(|l| l.stored / l.effective)
                .fold(1.0, f64::max);
            let rewritten = (attack.apply(&model, alpha, 0)).map_err(|e| {
                anyhow::anyhow!("--adaptive {attack} on {}: {e}", model_path.display())
            })?;
            let frozen = freeze.trainable();
            let trains = attack.trainable(Trainable::default());
            let both = ParamGroup::ALL
                .into_iter()
                .filter(|&g| trains.trains(g) && frozen.trains(g));
            (rewritten, Trainable::only(&both.collect::<Vec<_>>()))
        }
    };
    let (data, batch_name) = batch.load()?;
    let mut engine = crate::open(choice)?;
    let settings = CurvatureSettings {
        trainable,
        power: PowerSettings {
            tolerance,
            ..PowerSettings::default()
        },
        ..CurvatureSettings::default()
    };
    let mut report = curvature::measure(engine.as_mut(), &model, &data, &settings)
        .with_context(|| format!("measuring the Hessian of {}", model_path.display()))?;
    // A NaN or infinite sigma_1 is no measurement: the loss or its Hessian overflowed.
    if !report.sigma_1.is_finite() {
        bail!(
            "sigma_1 of the Hessian of {} on {batch_name} is {} after {} iterations: the loss or \
             its curvature overflowed (inputs or weights too large for the engine's precision); \
             nothing to report",
            model_path.display(),
            report.sigma_1,
            report.power_iterations
        );
    }
    if let Some(lr) = adam.adam_lr {
        let run = AdamRun {
            lr,
            steps: adam.adam_steps,
            hyper: OptimizerHyper::default(),
        };
        report.adam = Some(curvature::adam_sharpness(
            engine.as_mut(),
            &model,
            &data,
            settings.trainable,
            &run,
            &settings.power,
        )?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, model_path, &defense, &batch_name);
    }
    Ok(())
}

fn print_report(report: &CurvatureReport, model: &Path, defense: &str, batch: &str) {
    println!("{} ({defense}) on {batch}", model.display());
    println!("  engine: {}", report.engine);
    println!(
        "  Hessian over {} parameters; sigma_1 {:.6e} (power iteration, {} iterations, {})",
        report.parameters,
        report.sigma_1,
        report.power_iterations,
        if report.power_converged {
            "converged"
        } else {
            "NOT converged"
        }
    );
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.4e}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  top eigenvalues [{}], bottom [{}] (Lanczos, {} steps)",
        list(&report.top_eigenvalues),
        list(&report.bottom_eigenvalues),
        report.lanczos_steps
    );
    println!(
        "  trace {:.6e} +- {:.1e} (Hutchinson)",
        report.trace, report.trace_std_error
    );
    println!("  heaviest blocks H_ij (share of ||H||_F^2 with H_ji, sigma_1 where measured):");
    for block in report.blocks.iter().take(6) {
        let sigma = block
            .sigma_1
            .map_or(String::new(), |s| format!(", sigma_1 {s:.3e}"));
        println!(
            "    {} x {}: ||.||_F {:.3e} ({:.1}%){sigma}",
            block.rows,
            block.cols,
            block.frobenius,
            100.0 * block.share
        );
    }
    println!(
        "  lower bound from the blocks: sigma_1(H) >= {:.6e}",
        report.block_lower_bound
    );
    if !report.compensation_bounds.is_empty() {
        println!(
            "  closed-form bound from each SpecDef layer's C block (sigma_r(W~)^2 x lambda_max \
             of the output side weighted by the inputs' alignment with W~'s r-th right singular \
             vector, the best r; src/compensation_bound.rs):"
        );
    }
    for b in &report.compensation_bounds {
        println!(
            "    layer {}: sigma_1(H) >= {:.4e} = {:.4e}^2 x {:.4e} (r = {}, mean cos^2 {:.3}); \
             {:.1}% of the measured sigma_1(H)",
            b.layer,
            b.bound,
            b.sigma_weight,
            b.output_curvature,
            b.direction,
            b.mean_cos2,
            100.0 * b.bound / report.sigma_1
        );
    }
    for why in &report.compensation_bounds_skipped {
        println!("    not evaluated: {why}");
    }
    println!("  layer factors' sigma_1 (the B of PAPER.md section 2's bound):");
    for f in &report.factor_spectra {
        println!(
            "    layer {} {}: {:.4e} (effective weight {:.4e})",
            f.layer, f.role, f.sigma_1, f.effective_sigma_1
        );
    }
    println!(
        "  predicted largest stable SGD step 2 / sigma_1 = {:.4e}",
        report.predicted_stable_sgd_lr
    );
    if let Some(adam) = &report.adam {
        println!(
            "  after {} full-batch Adam steps at lr {:.1e} (loss {:.4} -> {:.4}): preconditioned sharpness {:.4e}{} against (2 + 2 beta1) / ((1 - beta1) lr) = {:.4e} (ratio {:.2})",
            adam.steps,
            adam.lr,
            adam.loss_before,
            adam.loss_after,
            adam.preconditioned_sharpness,
            if adam.power_converged {
                ""
            } else {
                " (NOT converged)"
            },
            adam.edge_of_stability,
            adam.preconditioned_sharpness / adam.edge_of_stability
        );
    }
}

/// sigma_1 against alpha, with C trainable and frozen.
pub fn curvature_alpha(
    model_path: &Path,
    alphas: &[f64],
    k: usize,
    batch: &BatchArgs,
    choice: EngineChoice,
    out: &Path,
) -> Result<()> {
    let (model, defense) = file::load(model_path)?;
    if defense != "none" {
        bail!(
            "{} is already defended ({defense}); give the released model",
            model_path.display()
        );
    }
    if k == 0 {
        bail!("--k must be at least 1");
    }
    let max_alpha = specdef::scenario::MAX_ALPHA;
    if let Some(bad) = (alphas.iter()).find(|a| !(a.is_finite() && (1.0..=max_alpha).contains(*a)))
    {
        bail!("--alphas: every alpha must be a number in [1, {max_alpha:e}], got {bad:e}");
    }
    if let Some(repeated) =
        (alphas.iter().enumerate()).find_map(|(i, a)| alphas[..i].contains(a).then_some(a))
    {
        bail!("--alphas lists {repeated} twice");
    }
    if alphas.len() < 2 {
        bail!(
            "--alphas: a slope needs at least two alphas, got {}",
            alphas.len()
        );
    }
    specdef::atomic_file::check_writable(&out.join("sigma_vs_alpha.json"))
        .with_context(|| format!("cannot write into {}", out.display()))?;
    let (data, batch_name) = batch.load()?;
    let mut engine = crate::open(choice)?;
    println!(
        "sigma_1 of the loss Hessian on {batch_name}, {}",
        engine.info()
    );
    // Lanczos and the blocks are not needed here; power iteration is the measurement.
    let settings = |trainable| CurvatureSettings {
        trainable,
        lanczos: LanczosSettings {
            steps: 4,
            ..LanczosSettings::default()
        },
        block_probes: 2,
        top_blocks: 1,
        ..CurvatureSettings::default()
    };
    let mut points = Vec::new();
    for &alpha in alphas {
        let defended = SpecDef {
            alpha,
            k,
            layers: LayerSelection::All,
            compensate: true,
            compensation: CompensationForm::Full,
        }
        .apply(&model, 0)
        .with_context(|| format!("--alphas {alpha}"))?;
        let mut point = SigmaPoint {
            alpha,
            ..Default::default()
        };
        for (frozen, slot) in [(false, &mut point.c_trainable), (true, &mut point.c_frozen)] {
            let trainable = if frozen {
                Trainable::only(&[ParamGroup::Weights, ParamGroup::Biases])
            } else {
                Trainable::default()
            };
            let report =
                curvature::measure(engine.as_mut(), &defended, &data, &settings(trainable))?;
            *slot = report.sigma_1;
            if !frozen {
                point.block_lower_bound = report.block_lower_bound;
                point.closed_form_bound = (report.compensation_bounds.iter())
                    .map(|b| b.bound)
                    .fold(0.0, f64::max);
            }
        }
        point.weight_sigma_1 = curvature::factor_spectra(&defended)?
            .iter()
            .filter(|f| f.role == "weight")
            .map(|f| f.sigma_1)
            .fold(0.0, f64::max);
        println!(
            "  alpha {alpha:>8.0e}: sigma_1 {:.4e} (C trainable), {:.4e} (C frozen); block bound {:.4e}; closed-form bound {:.4e}; max sigma_1(W~) {:.4e}",
            point.c_trainable,
            point.c_frozen,
            point.block_lower_bound,
            point.closed_form_bound,
            point.weight_sigma_1
        );
        points.push(point);
    }
    let fits = curvature::sigma_slopes(&points);
    println!(
        "log-log slopes over alpha >= 10: C trainable {:.2}, C frozen {:.2}",
        fits.c_trainable + 0.0,
        fits.c_frozen + 0.0
    );
    specdef::atomic_file::create_folder(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "model": model_path.display().to_string(),
        "batch": batch_name,
        "engine": engine.info().to_string(),
        "k": k,
        "points": points,
        "slopes": fits,
    }))?;
    for (name, bytes) in [
        ("sigma_vs_alpha.json", json),
        (
            "sigma_vs_alpha.svg",
            specdef::report::sigma_plot::sigma_vs_alpha(&points, &fits)
                .map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?,
        ),
    ] {
        let path = out.join(name);
        specdef::atomic_file::write_atomically(&path, bytes.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// For SGD on every model of the scenario: the largest learning rate that does not diverge,
/// by bisection between the grid's last stable and first diverging rate, beside 2 / sigma_1.
pub fn stable_step(
    model_path: &Path,
    scenario_path: Option<&Path>,
    choice: EngineChoice,
    ratio: f64,
    json_out: Option<&Path>,
) -> Result<()> {
    if !(ratio.is_finite() && ratio > 1.0) {
        bail!("--ratio must be a number > 1, got {ratio}");
    }
    let scenario = scenario(scenario_path)?;
    if let Some(path) = json_out {
        specdef::atomic_file::check_writable(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let (model, defense) = file::load(model_path)?;
    if defense != "none" {
        bail!(
            "{} is already defended ({defense}); give the released model",
            model_path.display()
        );
    }
    let data = TaskData::load(&scenario)?;
    let batch_rows = scenario
        .attack
        .batch_size
        .unwrap_or(data.harmful_train.len());
    let indices: Vec<usize> = (0..batch_rows.min(data.harmful_train.len())).collect();
    let batch = data.harmful_train.select(&indices);
    let mut engine = crate::open(choice)?;
    println!(
        "largest stable SGD step ({} steps, divergence: loss > {} or non-finite), to a ratio of {ratio}; {}",
        scenario.attack.steps,
        scenario.attack.divergence_loss,
        engine.info()
    );
    let grid = scenario.attack.lr_grid.values();
    let mut rows = Vec::new();
    for defense in scenario.defense.defenses() {
        let defended = defense.apply(&model, scenario.seed)?;
        let label = defense.label();
        let diverges = |engine: &mut dyn specdef::Engine, lr: f64| -> Result<bool> {
            let device = DeviceModel::upload(engine, &defended)?;
            let settings = specdef::training::TrainSettings {
                target_accuracy: None,
                ..scenario.attack.settings(OptimizerKind::Sgd, lr)
            };
            let outcome = train(
                engine,
                &device,
                &data.harmful_train,
                &data.harmful_test,
                &settings,
                scenario.seed,
            )?;
            Ok(outcome.diverged_at.is_some())
        };
        let search =
            specdef::stable_step::bisect(&grid, ratio, |lr| diverges(engine.as_mut(), lr))?;
        let sigma_1 = curvature::measure(
            engine.as_mut(),
            &defended,
            &batch,
            &CurvatureSettings {
                trainable: scenario.attack.trainable,
                lanczos: LanczosSettings {
                    steps: 4,
                    ..LanczosSettings::default()
                },
                block_probes: 1,
                top_blocks: 0,
                ..CurvatureSettings::default()
            },
        )?
        .sigma_1;
        let row = specdef::stable_step::StableStepRow::new(label, search, sigma_1);
        println!("  {}", row.summary());
        rows.push(row);
    }
    if let Some(path) = json_out {
        let json = serde_json::to_string_pretty(&rows)?;
        specdef::atomic_file::write_atomically(path, json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

//! TAR (issue: the defences SpecDef is compared with). Its meta-learning loop is checked
//! against the composition of single SGD steps in f64 (one outer step: the simulated attack's
//! inner steps, the weighted tamper-resistance gradients at the attacked copy, the retain
//! gradient), its stated property on every engine (the harmful loss a simulated attack leaves
//! rises with training), and a scenario runs it as a baseline.

mod common;

use common::{
    SMALL_FEATURES, flat, gpu, learnable_task, run_with_notes, short_quick, small_spec,
    train_settings,
};
use specdef::data::Dataset;
use specdef::defense::{Defense, StageData, Tar, TrainingStage};
use specdef::engine::Engine;
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::linalg::Matrix;
use specdef::model::{DeviceModel, HostModel};
use specdef::training::{SimulatedAttacks, mean_cross_entropy, train};

const FEATURES: usize = SMALL_FEATURES;
const CLASSES: usize = 4;

fn attacks(text: &str) -> SimulatedAttacks {
    toml::from_str(text).expect("simulated attacks")
}

/// Trains the TAR stage on `base` on `engine` and reads the model back.
fn trained(engine: &mut dyn Engine, tar: &Tar, base: &HostModel, data: StageData) -> HostModel {
    let device = DeviceModel::upload(engine, base).unwrap();
    let mut run = tar.start(engine, &device, base, data, 0).unwrap();
    run.run_to_end(engine).unwrap();
    assert!(run.is_finished());
    assert_eq!(run.outcome().diverged_at, None);
    device.download(engine).unwrap()
}

/// `steps` steps of `optimizer` (fresh state) at `lr` on the whole of `data` (cross-entropy),
/// in f64.
fn fine_tuned(
    model: &HostModel,
    data: &Dataset,
    optimizer: &str,
    lr: f64,
    steps: usize,
) -> HostModel {
    let mut engine = CpuEngine64::new();
    let device = DeviceModel::upload(&mut engine, model).unwrap();
    let run = train_settings(&format!(
        "optimizer = '{optimizer}'\nlr = {lr}\nsteps = {steps}\neval_every = {steps}"
    ));
    train(&mut engine, &device, data, data, &run, 0).unwrap();
    device.download(&mut engine).unwrap()
}

/// The mean cross-entropy gradient on `data` at `model`, from one SGD step at lr 1.
fn gradient(model: &HostModel, data: &Dataset) -> Vec<f64> {
    let after = flat(&fine_tuned(model, data, "sgd", 1.0, 1));
    flat(model).iter().zip(after).map(|(a, b)| a - b).collect()
}

/// Two outer steps of SGD, each against a fresh two-step momentum attack with a
/// tamper-resistance gradient after each inner step (weights e^-lambda, then 1): the model
/// moves by `-outer_lr (tamper_weight (e^-lambda g1 + g2) + retain_weight g_retain)`, where g_i
/// is the tamper-resistance gradient at the copy after i momentum steps from the model (the
/// optimiser's state zero again at each outer step) and g_retain the retain gradient at the
/// model itself.
#[test]
fn outer_steps_are_weighted_sums_of_first_order_meta_gradients_on_every_engine() {
    let base = HostModel::init(&small_spec(), 21);
    let (harmful, utility) = (
        learnable_task(61, 12, 0.5, 2),
        learnable_task(62, 12, -0.5, 0),
    );
    let (inner_lr, outer_lr, lambda) = (0.3, 0.05, 0.5_f64);
    let tar = Tar {
        attacks: attacks(&format!(
            "optimizer = 'momentum'\nlrs = [{inner_lr}]\nsteps = 2\nsubsample = 1\n\
             schedule_lambda = {lambda}"
        )),
        tamper_weight: 4.0,
        retain_weight: 1.5,
        train: train_settings(&format!(
            "optimizer = 'sgd'\nlr = {outer_lr}\nsteps = 2\neval_every = 1"
        )),
    };
    let tamper = harmful.with_every_label(CLASSES);
    let outer_step = |model: &HostModel| -> HostModel {
        let first = fine_tuned(model, &harmful, "momentum", inner_lr, 1);
        let second = fine_tuned(model, &harmful, "momentum", inner_lr, 2);
        let (g1, g2) = (gradient(&first, &tamper), gradient(&second, &tamper));
        let g_retain = gradient(model, &utility);
        let mut next = model.clone();
        let mut i = 0;
        for (key, _) in model.parameters() {
            for v in &mut next.parameter_mut(key).unwrap().values {
                let tamper_sum = (-lambda).exp() * g1[i] + g2[i];
                *v -= outer_lr * (tar.tamper_weight * tamper_sum + tar.retain_weight * g_retain[i]);
                i += 1;
            }
        }
        next
    };
    let expected = flat(&outer_step(&outer_step(&base)));
    let moved: f64 = (flat(&base).iter().zip(&expected))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(moved > 1e-3, "the steps move the model ({moved})");
    let data = StageData {
        utility: &utility,
        harmful: &harmful,
        eval: &utility,
    };
    let run = |engine: &mut dyn Engine, tolerance: f64| {
        let name = engine.info().engine;
        let got = flat(&trained(engine, &tar, &base, data));
        let error = (got.iter().zip(&expected))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!("{name}: largest difference from the composed steps {error:.2e}");
        assert!(error < tolerance, "{name}: {error:e} >= {tolerance:e}");
    };
    // f64 agrees to rounding; f32 to its precision on parameters of order 1.
    run(&mut CpuEngine64::new(), 1e-12);
    run(&mut CpuEngine32::new(), 1e-5);
    if let Some(mut gpu) = gpu() {
        run(&mut *gpu, 1e-5);
    }
}

/// TAR's stated property (Tamirisa et al. 2025, section 4): training against simulated attacks
/// raises the harmful loss such an attack leaves after its steps, beyond what training with the
/// retain term alone does, while the utility task stays.
#[test]
fn tar_raises_the_harmful_loss_a_simulated_attack_leaves_and_keeps_utility_on_every_engine() {
    let (harmful, utility) = (
        learnable_task(71, 40, 1.5, 2),
        learnable_task(72, 40, -1.5, 0),
    );
    // A released model that knows the utility task and not the harmful one.
    let base = {
        let mut engine = CpuEngine64::new();
        let device = DeviceModel::upload(&mut engine, &HostModel::init(&small_spec(), 17)).unwrap();
        let learn = train_settings("optimizer = 'adam'\nlr = 1e-2\nsteps = 200\neval_every = 200");
        train(&mut engine, &device, &utility, &utility, &learn, 0).unwrap();
        device.download(&mut engine).unwrap()
    };
    let simulated = "optimizer = 'adam'\nlrs = [1e-2]\nsteps = 16\nsubsample = 2\n\
                     schedule_lambda = 0.0625";
    let with_tamper_weight = |tamper_weight| Tar {
        attacks: attacks(simulated),
        tamper_weight,
        // Above the reference's 1: on this tiny model the tamper term would take the utility
        // task with it.
        retain_weight: 10.0,
        train: train_settings("optimizer = 'adam'\nlr = 1e-2\nsteps = 150\neval_every = 50"),
    };
    let data = StageData {
        utility: &utility,
        harmful: &harmful,
        eval: &utility,
    };
    // The simulated attack TAR trains against, run as an attacker would: 16 Adam steps at 1e-2.
    let attacked_loss = |model: &HostModel| {
        let mut engine = CpuEngine64::new();
        let device = DeviceModel::upload(&mut engine, model).unwrap();
        let attack = train_settings("optimizer = 'adam'\nlr = 1e-2\nsteps = 16\neval_every = 16");
        train(&mut engine, &device, &harmful, &harmful, &attack, 1).unwrap();
        let after = device.download(&mut engine).unwrap();
        let inputs = Matrix::new(harmful.len(), FEATURES, harmful.inputs.clone());
        mean_cross_entropy(&after.layer_output(&inputs, 2).values, &harmful.labels)
    };
    let utility_loss = |model: &HostModel| {
        let inputs = Matrix::new(utility.len(), FEATURES, utility.inputs.clone());
        mean_cross_entropy(&model.layer_output(&inputs, 2).values, &utility.labels)
    };
    let released = attacked_loss(&base);
    let retain_only = attacked_loss(&trained(
        &mut CpuEngine64::new(),
        &with_tamper_weight(0.0),
        &base,
        data,
    ));
    let tar = with_tamper_weight(4.0);
    let run = |engine: &mut dyn Engine| {
        let name = engine.info().engine;
        let after = trained(engine, &tar, &base, data);
        let attacked = attacked_loss(&after);
        let (before, kept) = (utility_loss(&base), utility_loss(&after));
        eprintln!(
            "{name}: harmful loss after the simulated attack {released:.3} released, \
             {retain_only:.3} retain only, {attacked:.3} with TAR; utility loss {before:.3} -> \
             {kept:.3}"
        );
        assert!(
            attacked > released + 0.2 && attacked > retain_only + 0.2,
            "{name}: {attacked} against {released} (released) and {retain_only} (retain only)"
        );
        assert!(
            kept < before + 0.1,
            "{name}: utility loss {before} -> {kept}"
        );
    };
    run(&mut CpuEngine64::new());
    run(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        run(&mut *gpu);
    }
}

#[test]
fn a_scenario_runs_its_tar_baseline_and_refuses_settings_that_do_not_fit() {
    let mut scenario = short_quick();
    let tar = Tar {
        attacks: attacks(
            "optimizer = 'adam'\nlrs = [1e-3]\nsteps = 4\nsubsample = 2\nschedule_lambda = 0.0625\nbatch_size = 64",
        ),
        tamper_weight: 4.0,
        retain_weight: 1.0,
        train: train_settings(
            "optimizer = 'adamw'\nlr = 1e-3\nsteps = 20\neval_every = 10\nbatch_size = 64",
        ),
    };
    for (field, broken) in [
        ("tar.attacks.subsample", {
            let mut t = tar.clone();
            t.attacks.subsample = 0;
            t
        }),
        ("tar.attacks.optimizer", {
            let mut t = tar.clone();
            t.attacks.optimizer = specdef::training::OptimizerKind::Sophia;
            t
        }),
        ("tar.attacks.lrs", {
            let mut t = tar.clone();
            t.attacks.lrs.clear();
            t
        }),
        ("tar.tamper_weight", {
            let mut t = tar.clone();
            t.tamper_weight = f64::NAN;
            t
        }),
        ("tar.train.optimizer", {
            let mut t = tar.clone();
            t.train.optimizer = specdef::training::OptimizerKind::Muon;
            t
        }),
    ] {
        scenario.defense.baselines = vec![Defense::Tar(Box::new(broken))];
        let e = scenario.validate().unwrap_err();
        assert!(
            e.contains("defense.baselines[0]") && e.contains(field),
            "{field}: {e}"
        );
    }
    scenario.defense.baselines = vec![Defense::Tar(Box::new(tar.clone()))];
    scenario.validate().unwrap();
    let (outcome, notes) = run_with_notes(&scenario, None);
    let baseline = (outcome.defenses.iter())
        .find(|d| d.defense == Defense::Tar(Box::new(tar.clone())))
        .expect("a summary of the TAR baseline");
    assert_eq!(baseline.label, "tar k=4");
    let runs: Vec<_> = (outcome.records.iter())
        .filter(|r| r.defense == "tar")
        .collect();
    let per_model = scenario.attack.optimizers.len() * scenario.attack.lr_grid.values().len();
    assert_eq!(runs.len(), per_model);
    for r in &runs {
        r.validate().unwrap();
        assert_eq!(
            r.defense_value().unwrap(),
            Defense::Tar(Box::new(tar.clone()))
        );
    }
    let note = (notes.iter()).find(|n| n.starts_with("tar k=4: trained for 20 steps"));
    assert!(note.is_some(), "{notes:?}");
    // The tamper-resistance loss is a curve of the baseline's training, beside loss and accuracy.
    let names: Vec<&str> = baseline.training.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["loss", "eval_accuracy", "tamper_loss"]);
    // Each batch holds whole images with every label, so its loss is their cross-entropy to
    // the uniform output: never below ln C (rows drawn one by one let training fit the labels
    // drawn, below it).
    let tamper = &baseline.training[2].points;
    assert!(!tamper.is_empty());
    let classes = *scenario.model.widths.last().unwrap();
    let floor = (classes as f64).ln() - 1e-4;
    assert!(tamper.iter().all(|p| p.1 >= floor), "{tamper:?}");
}

//! What the command line and the app share: the engine policy (`engine_choice`), the result
//! folder (`run_folder`), and the rule that picks an attack's best learning rate for the loss
//! plots and the app's curves (`report::fastest_run`). Records are written as a results file
//! would hold them; one test runs the quick scenario through the command line.

mod common;

use specdef::app::{LoadedResults, SpecdefApp};
use specdef::engine::cpu::CpuEngine32;
use specdef::engine_choice::{CpuReason, EngineChoice, EngineKind, backend_computes, decide, open};
use specdef::report::{self, ChosenBy, fastest_run};
use specdef::run_folder;
use specdef::scenario::{RunRecord, Scenario};
use wgpu::{AdapterInfo, Backend, DeviceType};

// ---------------------------------------------------------------------------------------------
// Records

/// One attack run as a results file holds it (older files' fields only: newer ones default).
/// The loss falls geometrically from 2.3 at `first_step` to `final_loss` at the run's last
/// step (its step to target, else 60); the accuracy is 0.5, and 0.95 where the run reached the
/// target 0.9, as a record's own curves must agree with its outcome.
fn record(
    alpha: Option<f64>,
    lr: f64,
    steps_to_target: Option<usize>,
    final_loss: Option<f64>,
    first_step: usize,
) -> RunRecord {
    let last = final_loss.unwrap_or(2.3);
    let end = steps_to_target.unwrap_or(60);
    let steps: Vec<usize> = (first_step..=end).step_by(10).collect();
    let span = (end - first_step).max(1) as f64;
    let loss_curve: Vec<(usize, Option<f64>)> = steps
        .iter()
        .map(|&s| {
            let t = (s - first_step) as f64 / span;
            (s, Some(2.3 * (last / 2.3).powf(t)))
        })
        .collect();
    let final_accuracy = if steps_to_target.is_some() { 0.95 } else { 0.5 };
    let accuracy_curve: Vec<(usize, f64)> = steps
        .iter()
        .map(|&s| (s, if s == end { final_accuracy } else { 0.5 }))
        .collect();
    let json = serde_json::json!({
        "schema": "specdef.run/1",
        "crate_version": "test",
        "scenario": "synthetic",
        "variant": null,
        "seed": 0,
        "engine": "cpu-f64",
        "backend": "cpu",
        "adapter": "host",
        "driver": "",
        "device_type": "host",
        "defense": if alpha.is_some() { "specdef" } else { "none" },
        "alpha": alpha,
        "k": alpha.map(|_| 4),
        "layers": alpha.map(|_| "all"),
        "parameter_count": 100,
        "function_error_max": 0.0,
        "function_error_mean": 0.0,
        "optimizer": "adam",
        "lr": lr,
        "schedule": "constant",
        "steps": 60,
        "batch_size": null,
        "eval_every": 10,
        "target_accuracy": 0.9,
        "train_weights": true,
        "train_biases": true,
        "train_compensation": false,
        "reached_target": steps_to_target.is_some(),
        "steps_to_target": steps_to_target,
        "diverged": final_loss.is_none(),
        "diverged_at": if final_loss.is_none() { Some(60) } else { None },
        "steps_run": steps_to_target.unwrap_or(60),
        "final_harmful_accuracy": final_accuracy,
        "final_loss": final_loss,
        "utility_before_defense": 0.9,
        "utility_after_defense": 0.9,
        "utility_after_attack": 0.5,
        "wall_ms": 1.0,
        "loss_curve": loss_curve,
        "accuracy_curve": accuracy_curve,
    });
    serde_json::from_value(json).expect("a results file's record")
}

/// Undefended Adam: lr 1e-2 reaches the target first (step 30) with a higher final loss than lr
/// 1e-1 (step 60); lr 1e-3 never reaches it and ends lowest of all. Defended (alpha 1e4): no lr
/// reaches the target; lr 1e-2 ends lowest.
fn adam_records() -> Vec<RunRecord> {
    vec![
        record(None, 1e-3, None, Some(0.001), 10),
        record(None, 1e-2, Some(30), Some(0.2), 10),
        record(None, 1e-1, Some(60), Some(0.005), 10),
        record(Some(1e4), 1e-3, None, Some(2.0), 10),
        record(Some(1e4), 1e-2, None, Some(1.5), 10),
        record(Some(1e4), 1e-1, None, None, 10),
    ]
}

fn undefended(records: &[RunRecord]) -> impl Iterator<Item = &RunRecord> {
    records.iter().filter(|r| r.defense == "none")
}

// ---------------------------------------------------------------------------------------------
// The best run

#[test]
fn the_best_run_is_the_fastest_to_the_target_not_the_lowest_final_loss() {
    let records = adam_records();
    let (best, chosen) = fastest_run(undefended(&records)).unwrap();
    assert_eq!((best.lr, chosen), (1e-2, ChosenBy::FastestToTarget));
    // The rule it replaces (the lowest final loss among runs with one) picks another run here.
    let lowest = undefended(&records)
        .filter(|r| r.final_loss.is_some())
        .min_by(|a, b| a.final_loss.unwrap().total_cmp(&b.final_loss.unwrap()))
        .unwrap();
    assert_ne!(lowest.lr, best.lr);
}

#[test]
fn equally_fast_runs_are_told_apart_by_the_lower_final_loss() {
    let records = vec![
        record(None, 1e-2, Some(30), Some(0.3), 10),
        record(None, 3e-2, Some(30), Some(0.1), 10),
        record(None, 1e-1, Some(40), Some(0.01), 10),
    ];
    let (best, chosen) = fastest_run(&records).unwrap();
    assert_eq!((best.lr, chosen), (3e-2, ChosenBy::FastestToTarget));
}

#[test]
fn where_no_run_reached_the_target_the_lowest_final_loss_is_chosen_and_said_to_be() {
    let records = adam_records();
    let defended = records.iter().filter(|r| r.defense == "specdef");
    let (best, chosen) = fastest_run(defended).unwrap();
    assert_eq!((best.lr, chosen), (1e-2, ChosenBy::LowestFinalLoss));
    let diverged = [record(None, 1e-1, None, None, 10)];
    assert!(fastest_run(&diverged).is_none());
}

// ---------------------------------------------------------------------------------------------
// The loss plot

/// The text elements of an SVG, trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|rest| {
            let body = &rest[rest.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

fn loss_plot(records: &[RunRecord]) -> String {
    let plots = report::plots::loss_curves(records).unwrap();
    assert_eq!(plots.len(), 1, "one optimiser, one plot");
    assert_eq!(plots[0].0, "loss_adam.svg");
    plots[0].1.clone()
}

#[test]
fn the_loss_plot_shows_each_defence_at_its_fastest_lr_and_says_where_none_reached_the_target() {
    let svg = loss_plot(&adam_records());
    let texts = svg_texts(&svg);
    let legend = |label: &str| {
        texts
            .iter()
            .find(|t| t.starts_with(&format!("{label} lr=")))
            .unwrap_or_else(|| panic!("no legend entry for {label} in {texts:?}"))
            .clone()
    };
    let none = legend("none");
    assert!(none.starts_with("none lr=1e-2"), "{none}");
    assert!(none.contains("step 30"), "{none}");
    let defended = legend("specdef a=1e4");
    assert!(defended.starts_with("specdef a=1e4 lr=1e-2"), "{defended}");
    assert!(defended.contains("not reached"), "{defended}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("lowest final loss where none reached it")),
        "the title says some series fell back: {texts:?}"
    );

    // Every run reached the target: no fallback in the title.
    let reached: Vec<RunRecord> = adam_records()
        .into_iter()
        .filter(|r| r.defense == "none" && r.reached_target)
        .collect();
    let texts = svg_texts(&loss_plot(&reached));
    assert!(
        !texts.iter().any(|t| t.contains("lowest final loss")),
        "{texts:?}"
    );
}

/// A tick label of the loss plot is a whole step (the x axis) or a power-of-ten form such as
/// `1e-3` or `2e-1` (the log y axis): a digit, `e`, an exponent.
fn is_tick_label(text: &str) -> bool {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    match text.split_once('e') {
        Some((mantissa, exponent)) => {
            mantissa.len() == 1
                && mantissa.chars().all(|c| c.is_ascii_digit())
                && exponent.trim_start_matches('-').parse::<u32>().is_ok()
        }
        None => false,
    }
}

#[test]
fn the_loss_plot_labels_its_log_axis_in_powers_of_ten_whatever_the_range() {
    // Final losses from far below the start to just below it: ranges over six decades, over one
    // (where the axis's own ticks are 0.1, 0.2, 0.30000000000000004, ...) and within one decade.
    for final_loss in [1e-5, 0.05, 1.2] {
        let svg = loss_plot(&[record(None, 1e-2, Some(30), Some(final_loss), 10)]);
        let texts = svg_texts(&svg);
        let numeric: Vec<&String> = texts
            .iter()
            .filter(|t| t.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        for text in &numeric {
            assert!(
                is_tick_label(text),
                "final loss {final_loss}: tick label {text:?} is not a whole step or a power-of-ten form; all: {texts:?}"
            );
        }
        let y_ticks: Vec<f64> = numeric
            .iter()
            .filter(|t| t.contains('e'))
            .map(|t| t.parse().unwrap())
            .collect();
        assert!(
            y_ticks.len() >= 2,
            "final loss {final_loss}: the log axis has too few labels: {texts:?}"
        );
        // The labels span the data: the highest at or above the start, the lowest at or below
        // the end.
        let max = y_ticks.iter().copied().fold(f64::MIN, f64::max);
        let min = y_ticks.iter().copied().fold(f64::MAX, f64::min);
        assert!(
            max >= 2.3 && min <= final_loss,
            "{y_ticks:?} for 2.3 .. {final_loss}"
        );
    }
}

/// The first point of the first loss curve (the first polyline 2 pixels wide; axes and ticks are
/// 1 pixel wide), in pixels.
fn first_curve_point(svg: &str) -> (f64, f64) {
    let curve = svg
        .split("<polyline")
        .skip(1)
        .map(|rest| &rest[..rest.find("/>").unwrap()])
        .find(|element| element.contains("stroke-width=\"2\""))
        .expect("a curve");
    let points = &curve[curve.find("points=\"").unwrap() + 8..];
    let first = points.split_whitespace().next().unwrap();
    let (x, y) = first.split_once(',').unwrap();
    (x.parse().unwrap(), y.parse().unwrap())
}

/// The x pixel of the tick label `label`.
fn tick_x(svg: &str, label: &str) -> f64 {
    svg.split("<text")
        .skip(1)
        .find(|rest| {
            rest.find('>').is_some_and(|i| {
                rest[i + 1..]
                    .trim_start()
                    .starts_with(&format!("{label}\n"))
            })
        })
        .and_then(|rest| {
            let x = &rest[rest.find("x=\"")? + 3..];
            x[..x.find('"')?].parse().ok()
        })
        .unwrap_or_else(|| panic!("no tick label {label}"))
}

#[test]
fn the_loss_curve_starts_where_the_records_start_on_an_axis_from_step_0() {
    // Records from the trainer today start at the first evaluation (step 10); one with the loss
    // before training (step 0) is drawn from step 0.
    for first_step in [0, 10] {
        let svg = loss_plot(&[record(None, 1e-2, Some(30), Some(0.1), first_step)]);
        let (x0, x10) = (tick_x(&svg, "0"), tick_x(&svg, "10"));
        let (x, _) = first_curve_point(&svg);
        let expected = x0 + (x10 - x0) * first_step as f64 / 10.0;
        assert!(
            (x - expected).abs() <= 1.5,
            "first step {first_step}: the curve starts at x={x}, step {first_step} is at x={expected}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The app's curves

fn app_viewing(records: &[RunRecord]) -> SpecdefApp {
    let mut app = SpecdefApp::new(Box::new(CpuEngine32::new()), "test engine".to_string());
    let text = report::to_json_lines(records).unwrap();
    app.view(LoadedResults::parse(
        "runs.jsonl".to_string(),
        Ok(text.into_bytes()),
    ));
    // Drawing the curves works with whatever was chosen.
    let ctx = egui::Context::default();
    let mut output = ctx.run_ui(egui::RawInput::default(), |ui| app.show(ui));
    output.textures_delta.clear();
    app
}

#[test]
fn the_apps_curves_show_the_attack_fastest_against_the_undefended_model_by_the_same_rule() {
    // Equally fast undefended attacks: the lower final loss (listed second) wins.
    let mut records = vec![
        record(None, 1e-2, Some(30), Some(0.3), 10),
        record(None, 3e-2, Some(30), Some(0.1), 10),
        record(None, 1e-1, Some(40), Some(0.01), 10),
    ];
    records.extend([1e-2, 3e-2, 1e-1].map(|lr| record(Some(1e4), lr, None, Some(1.0), 10)));
    let ((optimizer, lr), why) = app_viewing(&records).shown_attack().unwrap();
    assert_eq!((optimizer.as_str(), lr), ("adam", 3e-2));
    assert!(why.contains("fastest"), "{why}");

    // No undefended attack reached the target: the lowest final loss, said so (not the first).
    let records = vec![
        record(None, 1e-2, None, Some(0.9), 10),
        record(None, 1e-1, None, Some(0.4), 10),
    ];
    let ((_, lr), why) = app_viewing(&records).shown_attack().unwrap();
    assert_eq!(lr, 1e-1);
    assert!(why.contains("lowest final loss"), "{why}");
}

// ---------------------------------------------------------------------------------------------
// The engine policy

fn adapter(device_type: DeviceType, backend: Backend, name: &str) -> AdapterInfo {
    AdapterInfo {
        name: name.to_string(),
        ..AdapterInfo::new(device_type, backend)
    }
}

#[test]
fn auto_takes_a_hardware_gpu_and_skips_a_software_one_or_none_with_the_reason() {
    let hardware = adapter(DeviceType::DiscreteGpu, Backend::Vulkan, "some card");
    let decision = decide(EngineChoice::Auto, Ok(&hardware)).unwrap();
    assert_eq!(
        (decision.engine, decision.fallback_note()),
        (EngineKind::Gpu, None)
    );

    let lavapipe = adapter(DeviceType::Cpu, Backend::Vulkan, "llvmpipe (LLVM 19)");
    let decision = decide(EngineChoice::Auto, Ok(&lavapipe)).unwrap();
    assert_eq!(decision.engine, EngineKind::Cpu32);
    let note = decision
        .fallback_note()
        .expect("auto says why it skipped the GPU");
    assert!(
        note.contains("llvmpipe (LLVM 19)") && note.contains("--engine gpu"),
        "{note}"
    );

    let decision = decide(EngineChoice::Auto, Err("no GPU (no Vulkan driver)")).unwrap();
    assert_eq!(decision.engine, EngineKind::Cpu32);
    let note = decision.fallback_note().unwrap();
    assert!(note.contains("no Vulkan driver"), "{note}");
}

#[test]
fn gpu_takes_any_adapter_that_computes_and_fails_otherwise() {
    let lavapipe = adapter(DeviceType::Cpu, Backend::Vulkan, "llvmpipe");
    let decision = decide(EngineChoice::Gpu, Ok(&lavapipe)).unwrap();
    assert_eq!(decision.engine, EngineKind::Gpu);
    for backend in [Backend::Metal, Backend::Dx12, Backend::BrowserWebGpu] {
        let other = adapter(DeviceType::IntegratedGpu, backend, "x");
        assert_eq!(
            decide(EngineChoice::Gpu, Ok(&other)).unwrap().engine,
            EngineKind::Gpu
        );
    }
    // A window drawing with GL (WebGL2 in a browser without WebGPU): no compute shaders.
    let gl = adapter(DeviceType::IntegratedGpu, Backend::Gl, "ANGLE");
    assert!(!backend_computes(Backend::Gl));
    let reason = decide(EngineChoice::Gpu, Ok(&gl)).unwrap_err();
    assert!(matches!(reason, CpuReason::NoCompute { .. }));
    assert!(reason.to_string().contains("ANGLE"), "{reason}");
    let reason = decide(EngineChoice::Gpu, Err("the renderer has no wgpu device")).unwrap_err();
    assert_eq!(
        reason,
        CpuReason::NoAdapter("the renderer has no wgpu device".to_string())
    );
}

#[test]
fn the_cpu_choices_never_look_at_the_gpu_and_need_no_note() {
    let hardware = adapter(DeviceType::DiscreteGpu, Backend::Vulkan, "some card");
    for (choice, kind) in [
        (EngineChoice::Cpu, EngineKind::Cpu32),
        (EngineChoice::Cpu64, EngineKind::Cpu64),
    ] {
        for offered in [Ok(&hardware), Err("none")] {
            let decision = decide(choice, offered).unwrap();
            assert_eq!(decision.engine, kind);
            assert_eq!(decision.fallback_note(), None);
        }
    }
    let cpu = decide(EngineChoice::Cpu, Err("none")).unwrap();
    let engine = CpuEngine32::new();
    let note = cpu.note(&engine);
    assert!(
        note.contains("CPU engine (f32)") && note.contains("as asked"),
        "{note}"
    );
}

#[test]
fn the_app_computes_on_the_cpu_engine_without_a_wgpu_renderer_and_says_why() {
    for (force_cpu, why) in [
        (
            false,
            CpuReason::NoAdapter("the renderer has no wgpu device".to_string()),
        ),
        (true, CpuReason::Asked),
    ] {
        let (engine, note) = specdef::app::engine_for(None, force_cpu, None);
        assert_eq!(engine.info().engine, "cpu-f32");
        assert!(note.ends_with(&why.to_string()), "{note}");
    }
}

#[test]
fn open_gives_the_engine_the_policy_names() {
    for (choice, engine) in [
        (EngineChoice::Cpu, "cpu-f32"),
        (EngineChoice::Cpu64, "cpu-f64"),
    ] {
        let opened = open(choice).unwrap();
        assert_eq!(opened.engine.info().engine, engine);
        assert!(opened.note.is_none());
    }
    // Whatever this machine has: the GPU engine on a hardware adapter without a note, or the
    // f32 CPU engine with one.
    let opened = open(EngineChoice::Auto).unwrap();
    let info = opened.engine.info();
    match &opened.note {
        None => {
            assert_eq!(info.engine, "gpu");
            assert_ne!(info.device_type, format!("{:?}", DeviceType::Cpu));
        }
        Some(note) => {
            assert_eq!(info.engine, "cpu-f32", "{note}");
            eprintln!("auto chose the CPU engine: {note}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The result folder

fn temporary_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("specdef-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_result_folder_holds_the_records_tables_and_plots() {
    let records = adam_records();
    let dir = temporary_dir("run-folder").join("nested");
    let written = run_folder::write(&dir, &records, &[]).unwrap().files;
    let plots = report::plots::render_all(&records).all_drawn().unwrap();
    let mut expected = vec!["runs.jsonl", "runs.csv", "tables.txt"];
    expected.extend(plots.iter().map(|(name, _)| name.as_str()));
    expected.push(specdef::atomic_folder::MARKER);
    assert_eq!(written, expected);
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed = written.clone();
    listed.sort();
    assert_eq!(on_disk, listed, "nothing else, no temporary files left");

    assert_eq!(
        report::from_json_lines(&read(&dir, "runs.jsonl")).unwrap(),
        records
    );
    assert_eq!(read(&dir, "runs.csv"), report::to_csv(&records));
    let tables = read(&dir, "tables.txt");
    assert_eq!(tables, run_folder::tables(&records, &[]));
    assert!(tables.starts_with(&report::main_table(&records)));
    assert!(tables.contains(&report::success_window_table(&records)));
    for (name, svg) in &plots {
        assert_eq!(&read(&dir, name), svg, "{name}");
    }
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn a_result_folder_that_cannot_be_created_is_an_error_naming_it() {
    let dir = temporary_dir("run-folder-blocked");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let error = run_folder::write(&file.join("out"), &adam_records(), &[]).unwrap_err();
    assert!(error.to_string().contains("a-file"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn specdef_run_writes_the_result_folder_of_its_scenario() {
    let dir = temporary_dir("cli-run");
    let out = dir.join("out");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_specdef"))
        .args(["run", "--quick", "--engine", "cpu", "--out"])
        .arg(&out)
        .env("SPECDEF_CACHE_DIR", dir.join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("note:"),
        "cpu was asked for: no note\n{stderr}"
    );

    // What it says it wrote is what is there.
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("wrote {}/: ", out.display())))
        .unwrap_or_else(|| panic!("no 'wrote' line in\n{stdout}"));
    let mut listed: Vec<&str> = line.split(", ").collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    on_disk.sort();
    assert_eq!(listed, on_disk);

    // The records of the scenario, and everything else made from them and its defences.
    let records = report::from_json_lines(&read(&out, "runs.jsonl")).unwrap();
    let scenario = Scenario::builtin(Some("quick")).unwrap();
    let outcome = common::run_quietly(&mut CpuEngine32::new(), &scenario, Some("quick"));
    let without_wall_time = |records: &[RunRecord]| {
        let mut records = records.to_vec();
        records.iter_mut().for_each(|r| r.wall_ms = 0.0);
        records
    };
    assert_eq!(
        without_wall_time(&records),
        without_wall_time(&outcome.records)
    );
    assert_eq!(read(&out, "runs.csv"), report::to_csv(&records));
    let tables = read(&out, "tables.txt");
    assert_eq!(tables, run_folder::tables(&records, &outcome.defenses));
    assert!(stdout.contains(&tables), "the tables are printed too");
    for (name, svg) in report::plots::render_all(&records).all_drawn().unwrap() {
        assert_eq!(read(&out, &name), svg, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

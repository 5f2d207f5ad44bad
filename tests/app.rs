//! The app's logic without a window: frames of `work` and `show` run the quick scenario to the
//! end, drawing every frame, and record what the command line records.

mod common;

use common::run_quietly;

use specdef::app::{CustomRun, LoadedResults, ScenarioChoice, SpecdefApp};
use specdef::engine::cpu::CpuEngine32;
use specdef::scenario::{RunRecord, Scenario};
use specdef::training::OptimizerKind;
use specdef::{report, run_folder};
use std::time::Duration;

fn without_wall_time(mut records: Vec<RunRecord>) -> Vec<RunRecord> {
    records.iter_mut().for_each(|r| r.wall_ms = 0.0);
    records
}

#[test]
fn the_app_runs_the_quick_scenario_frame_by_frame_and_records_what_the_cli_does() {
    let mut app = SpecdefApp::new(Box::new(CpuEngine32::new()), "test engine".to_string());
    app.start(ScenarioChoice::Quick);
    assert!(app.is_running());
    let ctx = egui::Context::default();
    let mut frames = 0;
    loop {
        let running = app.work(Duration::from_millis(5));
        let mut output = ctx.run_ui(egui::RawInput::default(), |ui| app.show(ui));
        // No renderer here to upload the font atlas to.
        output.textures_delta.clear();
        frames += 1;
        if !running {
            break;
        }
        assert!(frames < 100_000, "the scenario never finished");
    }
    assert!(
        frames > 10,
        "the run was spread over frames, not done in one ({frames})"
    );

    let scenario = Scenario::builtin(Some("quick")).unwrap();
    let cli = run_quietly(&mut CpuEngine32::new(), &scenario, Some("quick"));
    assert_eq!(
        without_wall_time(app.records().to_vec()),
        without_wall_time(cli.records)
    );
    let exported = report::from_json_lines(&app.results_jsonl()).unwrap();
    assert_eq!(exported.len(), 28);
}

fn run_to_end(app: &mut SpecdefApp) {
    for _ in 0..1_000_000 {
        if !app.work(Duration::from_millis(5)) {
            return;
        }
    }
    panic!("the app never finished");
}

#[test]
fn a_custom_run_can_train_the_baselines_beside_specdef() {
    let mut app = SpecdefApp::new(Box::new(CpuEngine32::new()), "test engine".to_string());
    *app.custom_run() = CustomRun {
        log10_alpha: 4.0,
        optimizer: OptimizerKind::Adam,
        steps: 20,
        baselines: true,
        ..CustomRun::default()
    };
    app.start(ScenarioChoice::Custom);
    run_to_end(&mut app);
    assert_eq!(app.error(), None);
    let records = app.records();
    let defences: Vec<String> = records.iter().map(|r| r.defense_label()).collect();
    assert_eq!(
        defences,
        [
            "none",
            "specdef a=1e4",
            "rmu l=1 c=50",
            "npo b=0.1",
            "repnoise a=1 b=0.001"
        ]
    );
    for (baseline, name) in records[2..].iter().zip(["rmu", "npo", "repnoise"]) {
        assert_eq!(baseline.defense, name);
        let utility = baseline.utility_after_defense;
        assert!(utility > 0.5, "{name}: utility {utility}");
    }
}

#[test]
fn a_custom_run_attacks_once_per_defence_with_the_chosen_settings() {
    let mut app = SpecdefApp::new(Box::new(CpuEngine32::new()), "test engine".to_string());
    *app.custom_run() = CustomRun {
        log10_alpha: 3.0,
        k: 10,
        layers: "0,2".to_string(),
        optimizer: OptimizerKind::Sgd,
        log10_lr: -2.0,
        steps: 40,
        baselines: false,
    };
    app.start(ScenarioChoice::Custom);
    run_to_end(&mut app);
    assert_eq!(app.error(), None);
    let records = app.records();
    let defences: Vec<String> = records.iter().map(|r| r.defense_label()).collect();
    assert_eq!(defences, ["none", "specdef a=1e3"]);
    for r in &records {
        assert_eq!(r.variant.as_deref(), Some("custom"));
        assert_eq!((r.optimizer.as_str(), r.lr, r.steps), ("sgd", 1e-2, 40));
    }
    assert_eq!(
        (records[1].k, records[1].layers.as_deref()),
        (Some(10), Some("0,2"))
    );

    // "Save results" natively writes the result folder `specdef run --out` writes, with the
    // defences' summaries of the finished scenario in its tables.
    let folder = std::env::temp_dir().join(format!("specdef-app-save-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    app.set_results_folder(folder.clone());
    let message = app.save_results();
    assert!(message.starts_with("wrote"), "{message}");
    let read = |name: &str| {
        std::fs::read_to_string(folder.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert_eq!(read("runs.jsonl"), app.results_jsonl());
    assert_eq!(read("runs.csv"), report::to_csv(&records));
    for (name, svg) in report::plots::render_all(&records).all_drawn().unwrap() {
        assert_eq!(read(&name), svg, "{name}");
        assert!(message.contains(&name), "{message}");
    }
    let header = "function preservation";
    let tables = read("tables.txt");
    let without_summaries = run_folder::tables(&records, &[]);
    let (before, after) = tables.split_once(header).unwrap();
    assert_eq!(before, without_summaries.split_once(header).unwrap().0);
    assert!(
        after.lines().count()
            > without_summaries
                .split_once(header)
                .unwrap()
                .1
                .lines()
                .count(),
        "the tables list the defences:\n{tables}"
    );
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn a_custom_run_with_an_unknown_layer_fails_with_a_message_naming_it() {
    let mut app = SpecdefApp::new(Box::new(CpuEngine32::new()), "test engine".to_string());
    app.custom_run().layers = "0,7".to_string();
    app.start(ScenarioChoice::Custom);
    run_to_end(&mut app);
    let error = app.error().expect("the run fails");
    assert!(error.contains("unknown layer 7"), "{error}");
    app.custom_run().layers = "every other".to_string();
    app.start(ScenarioChoice::Custom);
    let error = app.error().expect("refused before it starts");
    assert!(error.contains("every other"), "{error}");
}

#[test]
fn a_results_file_loads_for_viewing_and_a_bad_one_is_refused_with_its_name() {
    let scenario = Scenario::builtin(Some("quick")).unwrap();
    let records = run_quietly(&mut CpuEngine32::new(), &scenario, Some("quick")).records;
    let text = report::to_json_lines(&records).unwrap();
    let mut app = SpecdefApp::new(Box::new(CpuEngine32::new()), "test engine".to_string());
    app.view(LoadedResults::parse(
        "runs.jsonl".to_string(),
        Ok(text.into_bytes()),
    ));
    assert_eq!(app.records(), records);
    // Drawing a loaded file (curves and tables, without defence summaries) works.
    let ctx = egui::Context::default();
    let mut output = ctx.run_ui(egui::RawInput::default(), |ui| app.show(ui));
    output.textures_delta.clear();

    let bad = LoadedResults::parse("broken.jsonl".to_string(), Ok(b"{not json\n".to_vec()));
    let error = bad.records.as_ref().expect_err("refused");
    assert!(error.starts_with("broken.jsonl"), "{error}");
    let empty = LoadedResults::parse("empty.jsonl".to_string(), Ok(Vec::new()));
    assert!(empty.records.is_err());
    // A refused file leaves what was shown.
    app.view(bad);
    assert_eq!(app.records().len(), records.len());
}

/// The quick scenario's f64 reference records (undefended and SpecDef a=1e4; SGD and Adam).
fn reference_records() -> Vec<RunRecord> {
    report::from_json_lines(include_str!("../reference/quick-cpu64/runs.jsonl")).unwrap()
}

#[test]
fn the_window_figure_marks_where_alpha_and_alpha_squared_would_move_the_window() {
    use specdef::app::findings::window_rows;
    let records = reference_records();
    let rows = window_rows(&records);
    let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "none sgd",
            "specdef a=1e4 sgd",
            "none adam",
            "specdef a=1e4 adam"
        ]
    );
    for pair in rows.chunks(2) {
        let (free, defended) = (&pair[0], &pair[1]);
        assert_eq!(free.guides, None, "no guide on the undefended row");
        let (lo, hi) = free.window.expect("the undefended model has a window");
        let (by_alpha, by_alpha_squared) = defended.guides.unwrap();
        assert!((by_alpha - ((lo + hi) / 2.0 - 4.0)).abs() < 1e-12);
        assert!((by_alpha_squared - ((lo + hi) / 2.0 - 8.0)).abs() < 1e-12);
    }
}

#[test]
fn a_diverged_run_is_marked_where_its_curve_ends() {
    use specdef::app::views::divergence_marker;
    let mut run = reference_records()[0].clone();
    run.diverged_at = None;
    assert_eq!(divergence_marker(&run, 5.0), None);
    run.diverged_at = Some(20);
    run.loss_curve = vec![(0, Some(1.0)), (10, Some(100.0)), (20, None)];
    assert_eq!(divergence_marker(&run, 5.0), Some([20.0, 2.0]));
    run.loss_curve = vec![(0, None)];
    run.diverged_at = Some(0);
    assert_eq!(
        divergence_marker(&run, 5.0),
        Some([0.0, 5.0]),
        "no finite loss: the fallback"
    );
}

#[test]
fn check_this_device_runs_the_quick_scenario_against_the_built_in_reference() {
    let mut app = SpecdefApp::new(Box::new(CpuEngine32::new()), "test engine".to_string());
    app.check_device();
    assert!(app.is_running() && app.device_check().is_none());
    run_to_end(&mut app);
    let (agree, report) = app.device_check().expect("a verdict once the run finished");
    assert!(
        agree,
        "the f32 CPU engine reproduces the f64 outcomes: {report}"
    );
    assert!(
        report.contains("reproduces the reference") && report.contains("28/28"),
        "{report}"
    );
    // The verdict and its report are drawn.
    let ctx = egui::Context::default();
    let mut output = ctx.run_ui(egui::RawInput::default(), |ui| app.show(ui));
    output.textures_delta.clear();

    // The same check on records whose outcome moved says so and names the run.
    let mut moved = app.records();
    let run = moved
        .iter_mut()
        .find(|r| r.steps_to_target.is_some())
        .unwrap();
    run.steps_to_target = run.steps_to_target.map(|s| s + 20);
    let comparison = specdef::reference::check(&moved, &specdef::reference::quick_reference());
    assert!(!comparison.all_agree());
    assert!(comparison.report().contains("steps_to_target"));
}

//! The app's logic without a window: frames of `work` and `show` run the quick scenario to the
//! end, drawing every frame, and record what the command line records.

mod common;

use common::run_quietly;

use specdef::app::{ScenarioChoice, SpecdefApp};
use specdef::engine::cpu::CpuEngine32;
use specdef::report;
use specdef::scenario::{RunRecord, Scenario};
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

//! The native window (`specdef gui`).

use super::{LoadedResults, ScenarioChoice, SpecdefApp, engine_for};
use std::path::PathBuf;

/// Opens the window. The GPU engine runs on eframe's own device; `force_cpu` uses the f32 CPU
/// engine; `run` starts a scenario at once; `open` shows a results file.
pub fn run_native(
    force_cpu: bool,
    run: Option<ScenarioChoice>,
    open: Option<PathBuf>,
) -> eframe::Result {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_inner_size([1280.0, 800.0]),
        ..Default::default()
    };
    eframe::run_native(
        "specdef",
        options,
        Box::new(move |cc| {
            let (engine, note) = engine_for(cc.wgpu_render_state.as_ref(), force_cpu, None);
            let mut app = SpecdefApp::new(engine, note);
            if let Some(path) = open {
                app.view(LoadedResults::read(&path));
            }
            if let Some(choice) = run {
                app.start(choice);
            }
            Ok(Box::new(app))
        }),
    )
}

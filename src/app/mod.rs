//! The egui front end, shared by the native window (`specdef gui`) and, later, the browser build.
//! A scenario runs as a `ScenarioSession` advanced a few milliseconds per frame, never blocking,
//! so the window stays responsive and GPU readbacks complete between frames.

use crate::engine::Engine;
use crate::report;
use crate::scenario::{RunRecord, Scenario, ScenarioOutcome, ScenarioSession};
use egui_plot::{Legend, Line, Plot};
use web_time::{Duration, Instant};

/// Which built-in scenario to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioChoice {
    Quick,
    Full,
}

impl ScenarioChoice {
    fn variant(self) -> Option<&'static str> {
        match self {
            ScenarioChoice::Quick => Some("quick"),
            ScenarioChoice::Full => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ScenarioChoice::Quick => "quick (small MLP, alpha 1e4)",
            ScenarioChoice::Full => "full (paper-shaped table)",
        }
    }
}

pub struct SpecdefApp {
    engine: Box<dyn Engine>,
    /// What computes, shown to the user (and why, where the GPU is not used).
    engine_note: String,
    choice: ScenarioChoice,
    session: Option<ScenarioSession>,
    outcome: Option<ScenarioOutcome>,
    error: Option<String>,
    log: Vec<String>,
    /// Work per frame: enough to make progress, little enough to keep 60 fps.
    frame_budget: Duration,
}

impl SpecdefApp {
    pub fn new(engine: Box<dyn Engine>, engine_note: String) -> Self {
        Self {
            engine,
            engine_note,
            choice: ScenarioChoice::Quick,
            session: None,
            outcome: None,
            error: None,
            log: Vec::new(),
            frame_budget: Duration::from_millis(12),
        }
    }

    pub fn is_running(&self) -> bool {
        self.session.is_some()
    }

    /// Starts the chosen built-in scenario (the pretrained model is not cached in the app).
    pub fn start(&mut self, choice: ScenarioChoice) {
        self.choice = choice;
        self.outcome = None;
        self.error = None;
        self.log.clear();
        let started = Scenario::builtin(choice.variant()).and_then(|scenario| {
            let variant = choice.variant().map(String::from);
            ScenarioSession::start(self.engine.as_mut(), &scenario, variant, None)
                .map_err(|e| e.to_string())
        });
        match started {
            Ok(session) => self.session = Some(session),
            Err(e) => self.error = Some(e),
        }
    }

    /// Advances the running scenario for at most `budget`, never blocking on the GPU; returns
    /// whether it is still running.
    pub fn work(&mut self, budget: Duration) -> bool {
        let Some(session) = &mut self.session else {
            return false;
        };
        let deadline = Instant::now() + budget;
        let mut failed = None;
        while !session.is_done() && Instant::now() < deadline {
            match session.advance(self.engine.as_mut(), false) {
                Ok(true) => {}
                // A readback is in flight: the GPU finishes it between frames.
                Ok(false) => break,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        self.log.extend(session.drain_notes());
        if let Some(e) = failed {
            self.error = Some(e);
            self.session = None;
            return false;
        }
        if session.is_done() {
            self.outcome = self.session.take().map(ScenarioSession::into_outcome);
            let message = format!("scenario finished: {} attack runs", self.records().len());
            // Scripts (the native window check) wait for this line.
            #[cfg(not(target_arch = "wasm32"))]
            eprintln!("{message}");
            self.log.push(message);
            return false;
        }
        true
    }

    /// The records of the running or finished scenario.
    pub fn records(&self) -> &[RunRecord] {
        match (&self.session, &self.outcome) {
            (Some(session), _) => session.records(),
            (None, Some(outcome)) => &outcome.records,
            (None, None) => &[],
        }
    }

    /// The results as the JSON lines the CLI writes.
    pub fn results_jsonl(&self) -> String {
        report::to_json_lines(self.records()).unwrap_or_default()
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        ui.heading("scenario");
        for choice in [ScenarioChoice::Quick, ScenarioChoice::Full] {
            ui.radio_value(&mut self.choice, choice, choice.label());
        }
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!self.is_running(), egui::Button::new("Run"))
                .clicked()
            {
                self.start(self.choice);
            }
            if ui
                .add_enabled(self.is_running(), egui::Button::new("Stop"))
                .clicked()
            {
                self.session = None;
                self.log.push("stopped".to_string());
            }
        });
        #[cfg(not(target_arch = "wasm32"))]
        if ui
            .add_enabled(
                !self.records().is_empty(),
                egui::Button::new("Save results"),
            )
            .clicked()
        {
            let path = std::path::Path::new("specdef-app-runs.jsonl");
            let saved = report::write_atomically(path, self.results_jsonl().as_bytes());
            self.log.push(match saved {
                Ok(()) => format!("wrote {}", path.display()),
                Err(e) => format!("could not write {}: {e}", path.display()),
            });
        }
        ui.separator();
        ui.label(egui::RichText::new(&self.engine_note).small());
    }

    fn progress(&self, ui: &mut egui::Ui) {
        if let Some(session) = &self.session {
            let (done, total) = session.progress();
            let fraction = done as f32 / total.max(1) as f32;
            ui.add(egui::ProgressBar::new(fraction).text(format!(
                "{done}/{total} attack runs: {}",
                session.describe()
            )));
            if let Some(curve) = session.live_loss_curve() {
                let points: Vec<[f64; 2]> = curve
                    .iter()
                    .filter(|(_, loss)| loss.is_finite() && *loss > 0.0)
                    .map(|&(step, loss)| [step as f64, loss.log10()])
                    .collect();
                Plot::new("live_loss")
                    .height(180.0)
                    .legend(Legend::default())
                    .x_axis_label("step")
                    .y_axis_label("log10 training loss")
                    .show(ui, |plot| plot.line(Line::new("current run", points)));
            }
        }
        if let Some(error) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, error);
        }
    }

    fn results(&self, ui: &mut egui::Ui) {
        let records = self.records();
        if records.is_empty() {
            return;
        }
        let mut text = report::main_table(records);
        text.push('\n');
        text.push_str(&report::success_window_table(records));
        let summaries = match (&self.session, &self.outcome) {
            (Some(session), _) => session.summaries(),
            (None, Some(outcome)) => outcome.defenses.as_slice(),
            (None, None) => &[],
        };
        text.push_str("\nfunction preservation (relative output error, max/mean):\n");
        text.push_str(&report::precision_table(summaries));
        ui.label(egui::RichText::new(text).monospace());
    }

    /// The whole window's content.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        egui::Panel::left("controls")
            .resizable(false)
            .show(ui, |ui| self.controls(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            ui.heading("SpecDef: spectral deformation and the attacks against it");
            self.progress(ui);
            egui::ScrollArea::both().show(ui, |ui| {
                self.results(ui);
                for line in &self.log {
                    ui.label(egui::RichText::new(line).small());
                }
            });
        });
    }
}

impl eframe::App for SpecdefApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        if self.work(self.frame_budget) {
            ctx.request_repaint();
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}

/// Opens the native window. The GPU engine runs on eframe's own device; `use_cpu` forces the f32
/// CPU engine; `run_quick` starts the quick scenario at once.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_native(use_cpu: bool, run_quick: bool) -> eframe::Result {
    use crate::engine::cpu::CpuEngine32;
    use crate::engine::gpu::GpuEngine;
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_inner_size([1280.0, 800.0]),
        ..Default::default()
    };
    eframe::run_native(
        "specdef",
        options,
        Box::new(move |cc| {
            let (engine, note): (Box<dyn Engine>, String) = match (&cc.wgpu_render_state, use_cpu) {
                (Some(state), false) => {
                    let engine = GpuEngine::from_device(
                        state.device.clone(),
                        state.queue.clone(),
                        state.adapter.get_info(),
                    );
                    let note = format!("computing on {}", engine.info());
                    (Box::new(engine), note)
                }
                (_, true) => (
                    Box::new(CpuEngine32::new()),
                    "computing on the CPU engine (f32), as asked".to_string(),
                ),
                (None, false) => (
                    Box::new(CpuEngine32::new()),
                    "no wgpu device from the window: computing on the CPU engine (f32)".to_string(),
                ),
            };
            let mut app = SpecdefApp::new(engine, note);
            if run_quick {
                app.start(ScenarioChoice::Quick);
            }
            Ok(Box::new(app))
        }),
    )
}

//! The egui front end, one app for the native window (`specdef gui`) and the browser
//! (web/index.html): run a scenario (built-in or one set by hand) without freezing the UI, watch
//! its loss, compare undefended and defended curves, read the tables, save or load results, and
//! run the benchmark harness.

mod demo_view;
mod demo_work;
mod engine_choice;
pub mod findings;
#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(target_arch = "wasm32")]
mod page;
mod results_file;
mod scenario_choice;
pub mod views;
#[cfg(target_arch = "wasm32")]
mod web;
mod work;

pub use engine_choice::{AdapterLabels, engine_for};
#[cfg(not(target_arch = "wasm32"))]
pub use native::run_native;
pub use results_file::{Inbox, LoadedResults};
pub use scenario_choice::{CustomRun, ScenarioChoice};

use crate::engine::Engine;
use crate::scenario::{RunRecord, Scenario};
use std::cell::RefCell;
use std::rc::Rc;
use views::CurveSelection;
use web_time::Duration;
use work::{Shown, Work};

/// Work per slice: enough to make progress, little enough to keep the UI at 60 fps.
const WORK_SLICE: Duration = Duration::from_millis(12);

pub struct SpecdefApp {
    /// Shared with the browser's work task.
    work: Rc<RefCell<Work>>,
    choice: ScenarioChoice,
    custom: CustomRun,
    curves: CurveSelection,
    inbox: Inbox,
    /// In the browser, how often to redraw while computing (frames only show progress there).
    #[cfg(target_arch = "wasm32")]
    redraw_while_running: Duration,
}

impl SpecdefApp {
    pub fn new(engine: Box<dyn Engine>, engine_note: String) -> Self {
        Self {
            work: Rc::new(RefCell::new(Work::new(engine, engine_note))),
            choice: ScenarioChoice::Quick,
            custom: CustomRun::default(),
            curves: CurveSelection::default(),
            inbox: Inbox::default(),
            #[cfg(target_arch = "wasm32")]
            redraw_while_running: Duration::from_millis(250),
        }
    }

    pub fn is_running(&self) -> bool {
        self.work.borrow().is_running()
    }

    /// Starts a scenario (the pretrained model is not cached in the app).
    pub fn start(&mut self, choice: ScenarioChoice) {
        self.choice = choice;
        let scenario = match choice {
            ScenarioChoice::Custom => self.custom.scenario(),
            builtin => Scenario::builtin(builtin.variant()),
        };
        self.work
            .borrow_mut()
            .start_scenario(scenario, choice.variant());
        self.drive();
    }

    /// "Check this device": runs the quick scenario and compares its outcomes with the f64
    /// reference built in (what `specdef verify` does); see [`device_check`](Self::device_check).
    pub fn check_device(&mut self) {
        self.choice = ScenarioChoice::Quick;
        self.work.borrow_mut().check_device();
        self.drive();
    }

    /// The last device check's verdict (whether every run agreed with the reference) and report.
    pub fn device_check(&self) -> Option<(bool, String)> {
        self.work.borrow().device_check.clone()
    }

    /// Loads the transformer demo (natively from the cache folder, in the browser from the
    /// server); with `attack`, runs its attack with the default settings once loaded.
    pub fn load_transformer_demo(&mut self, attack: bool) {
        self.work.borrow_mut().load_demo(attack);
        self.drive();
    }

    /// Starts the benchmark harness on the app's engine.
    pub fn start_bench(&mut self) {
        self.work.borrow_mut().start_bench();
        self.drive();
    }

    /// In the browser, computing runs in a task of its own between frames.
    fn drive(&self) {
        #[cfg(target_arch = "wasm32")]
        {
            let work = Rc::clone(&self.work);
            let log = Rc::clone(&self.work);
            page::drive(
                move || work.borrow_mut().work(WORK_SLICE),
                move |line| log.borrow_mut().log.push(line),
            );
        }
    }

    /// Saves each scenario's results as soon as it finishes (a download in the browser).
    pub fn save_when_finished(&mut self) {
        self.work.borrow_mut().save_when_finished = true;
    }

    /// Saves the results shown, as "Save results" does: natively the folder `specdef run --out`
    /// writes (see [`set_results_folder`](Self::set_results_folder)), in the browser the JSON
    /// lines as a download. Returns what it told the user (also in the log).
    pub fn save_results(&mut self) -> String {
        self.work.borrow_mut().save_results()
    }

    /// Where "Save results" writes natively (default `specdef-app-results` in the working
    /// directory).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_results_folder(&mut self, folder: std::path::PathBuf) {
        self.work.borrow_mut().results_folder = folder;
    }

    /// Shows a results file instead of the last scenario.
    pub fn view(&mut self, loaded: LoadedResults) {
        self.work.borrow_mut().view(loaded);
    }

    /// Advances the scenario or benchmark for at most `budget`, never blocking on the GPU;
    /// returns whether it is still running. Natively each frame calls this.
    pub fn work(&mut self, budget: Duration) -> bool {
        for loaded in self.inbox.drain() {
            self.view(loaded);
        }
        self.work.borrow_mut().work(budget)
    }

    /// The records of the running or finished scenario, or of the loaded file.
    pub fn records(&self) -> Vec<RunRecord> {
        self.work.borrow().shown.records().to_vec()
    }

    /// Why the last scenario or benchmark failed.
    pub fn error(&self) -> Option<String> {
        self.work.borrow().error.clone()
    }

    /// The custom run's settings (`ScenarioChoice::Custom`).
    pub fn custom_run(&mut self) -> &mut CustomRun {
        &mut self.custom
    }

    /// The attack (optimiser, lr) whose curves are shown, and why it is that one (the user's
    /// choice, else the attack fastest to the target against the undefended model).
    pub fn shown_attack(&self) -> Option<((String, f64), &'static str)> {
        views::shown_attack(self.work.borrow().shown.records(), &self.curves)
    }

    /// The results as the JSON lines the CLI writes.
    pub fn results_jsonl(&self) -> String {
        self.work.borrow().results_jsonl()
    }

    /// The benchmark results as the JSON lines `specdef bench` writes.
    pub fn bench_jsonl(&self) -> String {
        self.work.borrow().bench_jsonl()
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        ui.heading("scenario");
        for choice in ScenarioChoice::ALL {
            ui.radio_value(&mut self.choice, choice, choice.label());
        }
        if self.choice == ScenarioChoice::Custom {
            self.custom.ui(ui);
        }
        let running = self.is_running();
        ui.horizontal(|ui| {
            if ui.add_enabled(!running, egui::Button::new("Run")).clicked() {
                self.start(self.choice);
            }
            if ui.add_enabled(running, egui::Button::new("Stop")).clicked() {
                self.work.borrow_mut().stop();
            }
        });
        let (has_runs, has_bench) = {
            let work = self.work.borrow();
            (
                !work.shown.records().is_empty(),
                !work.bench_records.is_empty(),
            )
        };
        if save_button(ui, has_runs, "Save results", results_file::RUNS_SAVED_AS) {
            self.save_results();
        }
        if ui
            .add_enabled(!running, egui::Button::new("Check this device"))
            .on_hover_text(
                "run the quick scenario here and compare its outcomes with the f64 reference \
                 (what `specdef verify` does)",
            )
            .clicked()
        {
            self.check_device();
        }
        ui.label(egui::RichText::new("Drop a runs.jsonl file on the window to view it.").small());
        ui.separator();
        ui.heading("benchmark");
        if ui
            .add_enabled(!running, egui::Button::new("Run benchmark"))
            .on_hover_text("matmul GFLOP/s and attack steps/s on this engine")
            .clicked()
        {
            self.start_bench();
        }
        if save_button(
            ui,
            has_bench,
            "Save benchmark",
            "the JSON lines `specdef bench` writes",
        ) {
            let message = results_file::save(results_file::BENCH_NAME, &self.bench_jsonl());
            self.work.borrow_mut().log.push(message);
        }
        ui.separator();
        let action = demo_view::controls(ui, &mut self.work.borrow_mut().demo, running);
        match action {
            Some(demo_view::DemoAction::Load) => self.load_transformer_demo(false),
            Some(demo_view::DemoAction::Attack) => {
                self.work.borrow_mut().start_demo_attack();
                self.drive();
            }
            None => {}
        }
        ui.separator();
        ui.label(egui::RichText::new(&self.work.borrow().engine_note).small());
    }

    /// The whole window's content.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        self.inbox.receive_dropped(ui.ctx());
        egui::Panel::left("controls")
            .resizable(false)
            .show(ui, |ui| self.controls(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            ui.heading("SpecDef: spectral deformation and the attacks against it");
            let work = self.work.borrow();
            match &work.shown {
                Shown::Running(session) => views::progress(ui, session),
                Shown::Loaded { name, .. } => {
                    ui.label(format!("results file {name}"));
                }
                Shown::Nothing | Shown::Finished(_) => {}
            }
            if let Some(bench) = &work.bench {
                let (done, total) = bench.progress();
                ui.add(
                    egui::ProgressBar::new(done as f32 / total.max(1) as f32)
                        .text(format!("benchmark {done}/{total}: {}", bench.describe())),
                );
            }
            if let Some(error) = &work.error {
                ui.colored_label(ui.visuals().error_fg_color, error);
            }
            if let Some((agree, report)) = &work.device_check {
                views::device_check(ui, *agree, report);
            }
            demo_view::results(ui, &work.demo);
            egui::ScrollArea::both().show(ui, |ui| {
                views::benchmark(ui, &work.bench_records);
                let records = work.shown.records();
                if !records.is_empty() {
                    findings::window_figure(ui, records);
                    findings::claims_table(ui, records);
                    views::attack_curves(ui, records, &mut self.curves);
                    views::tables(ui, records, work.shown.summaries());
                }
                for line in &work.log {
                    ui.label(egui::RichText::new(line).small());
                }
            });
        });
    }
}

/// A save button; `saves` says what it saves.
fn save_button(ui: &mut egui::Ui, enabled: bool, label: &str, saves: &str) -> bool {
    ui.add_enabled(enabled, egui::Button::new(label))
        .on_hover_text(saves)
        .clicked()
}

impl eframe::App for SpecdefApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        #[cfg(not(target_arch = "wasm32"))]
        if self.work(WORK_SLICE) {
            ctx.request_repaint();
        }
        // The browser's work task computes; frames only show its progress.
        #[cfg(target_arch = "wasm32")]
        {
            for loaded in self.inbox.drain() {
                self.view(loaded);
            }
            if self.is_running() {
                ctx.request_repaint_after(self.redraw_while_running);
            }
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}

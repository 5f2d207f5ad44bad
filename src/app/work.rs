//! The app's computation apart from its widgets: the engine, the scenario or benchmark in
//! progress, and what is shown. Natively the frames drive it (`work` in every frame); in the
//! browser a task on the page's event loop does, so computing is not paced by drawing.

use super::demo_work::{DemoEnd, DemoWork};
use super::results_file::{self, LoadedResults};
use crate::benchmark::{self, BenchRecord, BenchSession, BenchSettings, Workload};
use crate::engine::Engine;
use crate::report;
use crate::scenario::{DefenseSummary, RunRecord, Scenario, ScenarioOutcome, ScenarioSession};
use web_time::{Duration, Instant};

/// What the tables and plots show.
pub enum Shown {
    Nothing,
    Running(Box<ScenarioSession>),
    Finished(Box<ScenarioOutcome>),
    /// A results file, viewed without its defences' summaries.
    Loaded {
        name: String,
        records: Vec<RunRecord>,
    },
}

impl Shown {
    pub fn records(&self) -> &[RunRecord] {
        match self {
            Shown::Nothing => &[],
            Shown::Running(session) => session.records(),
            Shown::Finished(outcome) => &outcome.records,
            Shown::Loaded { records, .. } => records,
        }
    }

    pub fn summaries(&self) -> &[DefenseSummary] {
        match self {
            Shown::Running(session) => session.summaries(),
            Shown::Finished(outcome) => &outcome.defenses,
            Shown::Nothing | Shown::Loaded { .. } => &[],
        }
    }
}

pub struct Work {
    engine: Box<dyn Engine>,
    /// What computes, shown to the user (and why, where the GPU is not used).
    pub engine_note: String,
    pub shown: Shown,
    pub bench: Option<BenchSession>,
    pub bench_records: Vec<BenchRecord>,
    pub error: Option<String>,
    pub log: Vec<String>,
    /// Save a scenario's results as soon as it finishes (the page's `?save`).
    pub save_when_finished: bool,
    /// The running quick scenario is "Check this device": compare it with the reference when
    /// it finishes.
    checking_device: bool,
    /// The last device check: whether every run agreed, and the comparison's report.
    pub device_check: Option<(bool, String)>,
    /// The transformer demo (a released classifier attacked with and without SpecDef).
    pub demo: DemoWork,
    /// Where results are saved natively.
    #[cfg(not(target_arch = "wasm32"))]
    pub results_folder: std::path::PathBuf,
}

impl Work {
    pub fn new(engine: Box<dyn Engine>, engine_note: String) -> Self {
        Self {
            engine,
            engine_note,
            shown: Shown::Nothing,
            bench: None,
            bench_records: Vec::new(),
            error: None,
            log: Vec::new(),
            save_when_finished: false,
            checking_device: false,
            device_check: None,
            demo: DemoWork::default(),
            #[cfg(not(target_arch = "wasm32"))]
            results_folder: results_file::RUNS_FOLDER.into(),
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.shown, Shown::Running(_)) || self.bench.is_some() || self.demo.is_busy()
    }

    /// Loads the transformer demo's inputs; with `attack`, attacks as soon as they are loaded.
    pub fn load_demo(&mut self, attack: bool) {
        self.error = None;
        self.demo.attack_when_loaded = attack;
        self.demo.load();
    }

    pub fn start_demo_attack(&mut self) {
        self.error = None;
        if let Err(e) = self.demo.start_attack() {
            self.fail(e);
        }
    }

    pub fn start_scenario(&mut self, scenario: Result<Scenario, String>, variant: Option<&str>) {
        self.checking_device = false;
        self.error = None;
        self.log.clear();
        let started = scenario.and_then(|scenario| {
            ScenarioSession::start(
                self.engine.as_mut(),
                &scenario,
                variant.map(String::from),
                None,
            )
            .map_err(|e| e.to_string())
        });
        match started {
            Ok(session) => self.shown = Shown::Running(Box::new(session)),
            Err(e) => self.fail(e),
        }
    }

    /// "Check this device": the quick scenario on the app's engine, compared with the built-in
    /// f64 reference when it finishes (as `specdef verify` does).
    pub fn check_device(&mut self) {
        self.device_check = None;
        self.start_scenario(Scenario::builtin(Some("quick")), Some("quick"));
        self.checking_device = matches!(self.shown, Shown::Running(_));
    }

    pub fn start_bench(&mut self) {
        self.error = None;
        self.bench_records.clear();
        self.bench = Some(BenchSession::start(
            self.engine.as_ref(),
            Workload::standard(),
            BenchSettings::default(),
        ));
    }

    pub fn stop(&mut self) {
        if let Shown::Running(_) = self.shown {
            self.shown = Shown::Nothing;
        }
        self.bench = None;
        self.demo.stop();
        self.log.push("stopped".to_string());
    }

    /// Shows a results file instead of the last scenario (not while one runs).
    pub fn view(&mut self, loaded: LoadedResults) {
        if matches!(self.shown, Shown::Running(_)) {
            self.log
                .push(format!("{} not loaded: a scenario is running", loaded.name));
            return;
        }
        match loaded.records {
            Ok(records) => {
                self.log
                    .push(format!("viewing {} ({} runs)", loaded.name, records.len()));
                self.shown = Shown::Loaded {
                    name: loaded.name,
                    records,
                };
            }
            Err(e) => self.log.push(format!("could not load {e}")),
        }
    }

    /// Advances the scenario or benchmark for at most `budget`, never blocking on the GPU;
    /// returns whether it is still running.
    pub fn work(&mut self, budget: Duration) -> bool {
        let deadline = Instant::now() + budget;
        if self.bench.is_some() {
            self.work_on_bench(deadline);
        } else if self.demo.is_busy() {
            self.work_on_demo(deadline);
        } else {
            self.work_on_scenario(deadline);
        }
        self.is_running()
    }

    fn work_on_scenario(&mut self, deadline: Instant) {
        let Shown::Running(session) = &mut self.shown else {
            return;
        };
        let mut failed = None;
        while !session.is_done() && Instant::now() < deadline {
            match session.advance(self.engine.as_mut(), false) {
                Ok(true) => {}
                // A readback is in flight: the GPU finishes it in the meantime.
                Ok(false) => break,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        self.log.extend(session.drain_notes());
        if let Some(e) = failed {
            return self.fail(e);
        }
        if session.is_done() {
            let Shown::Running(session) = std::mem::replace(&mut self.shown, Shown::Nothing) else {
                unreachable!("matched above")
            };
            self.shown = Shown::Finished(Box::new(session.into_outcome()));
            if self.save_when_finished {
                self.save_results();
            }
            let message = format!(
                "scenario finished: {} attack runs",
                self.shown.records().len()
            );
            if std::mem::take(&mut self.checking_device) {
                let (agree, verdict) = self.finish_device_check();
                return self.announce(agree, format!("{message}; device check: {verdict}"));
            }
            self.announce(true, message);
        }
    }

    /// Compares the finished quick scenario with the reference; returns whether every run
    /// agreed, and the verdict in words.
    fn finish_device_check(&mut self) -> (bool, &'static str) {
        let comparison =
            crate::reference::check(self.shown.records(), &crate::reference::quick_reference());
        let agree = comparison.all_agree();
        let verdict = if agree {
            "this device reproduces the reference outcomes"
        } else {
            "this device does NOT reproduce the reference outcomes (runs listed below)"
        };
        let report = format!("{verdict}\n{}", comparison.report());
        #[cfg(target_arch = "wasm32")]
        super::page::set_global(
            "specdefDeviceCheck",
            &wasm_bindgen::JsValue::from_str(&report),
        );
        self.device_check = Some((agree, report));
        (agree, verdict)
    }

    fn work_on_bench(&mut self, deadline: Instant) {
        let Some(bench) = &mut self.bench else {
            return;
        };
        while !bench.is_done() && Instant::now() < deadline {
            match bench.advance(self.engine.as_mut(), false) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return self.fail(format!("benchmark: {e}")),
            }
        }
        self.bench_records = bench.records().to_vec();
        if bench.is_done() {
            self.bench = None;
            let message = format!("benchmark finished: {} results", self.bench_records.len());
            self.announce(true, message);
        }
    }

    fn work_on_demo(&mut self, deadline: Instant) {
        match self.demo.advance(self.engine.as_mut(), deadline) {
            None => {}
            Some(DemoEnd::Loaded(message)) => self.log.push(message),
            Some(DemoEnd::Finished(message)) => {
                #[cfg(target_arch = "wasm32")]
                if let Some(outcome) = &self.demo.outcome {
                    let json = serde_json::to_string(outcome).unwrap_or_default();
                    super::page::set_global(
                        "specdefTransformer",
                        &wasm_bindgen::JsValue::from_str(&json),
                    );
                }
                self.announce(true, message);
            }
            Some(DemoEnd::Failed(error)) => self.fail(error),
        }
    }

    fn fail(&mut self, error: String) {
        if let Shown::Running(_) = self.shown {
            self.shown = Shown::Nothing;
        }
        self.bench = None;
        self.demo.stop();
        self.error = Some(error.clone());
        self.announce(false, format!("failed: {error}"));
    }

    /// Logs how a scenario or benchmark ended, and tells whoever drives the app: scripts wait for
    /// this line on stderr (the native window check) or in the page title (the browser test).
    fn announce(&mut self, passed: bool, message: String) {
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("{message}");
        #[cfg(target_arch = "wasm32")]
        super::page::announce(passed, &message, &self.results_jsonl(), &self.bench_jsonl());
        let _ = passed;
        self.log.push(message);
    }

    /// Saves the results shown (natively the result folder, in the browser a download of the
    /// JSON lines) and logs what happened; returns the same line.
    pub fn save_results(&mut self) -> String {
        #[cfg(not(target_arch = "wasm32"))]
        let message = results_file::save_runs(
            &self.results_folder,
            self.shown.records(),
            self.shown.summaries(),
        );
        #[cfg(target_arch = "wasm32")]
        let message = results_file::save(results_file::RUNS_NAME, &self.results_jsonl());
        self.log.push(message.clone());
        message
    }

    /// The results as the JSON lines the CLI writes.
    pub fn results_jsonl(&self) -> String {
        report::to_json_lines(self.shown.records()).unwrap_or_default()
    }

    /// The benchmark results as the JSON lines `specdef bench` writes.
    pub fn bench_jsonl(&self) -> String {
        benchmark::to_json_lines(&self.bench_records).unwrap_or_default()
    }
}

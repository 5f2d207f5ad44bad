//! The harness as a resumable state machine, like the scenario session: `advance` never blocks
//! unless asked to, so the app can run it a little per frame while the GPU works in between.

use super::record::BenchRecord;
use super::workload::{Prepared, Workload};
use crate::engine::gpu::plan::PlanFigures;
use crate::engine::{Engine, EngineInfo, ReadTicket};
use web_time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchSettings {
    /// Samples run and dropped first: pipeline compilation, caches, clocks ramping up.
    pub warmup_samples: usize,
    pub samples: usize,
    /// Runs per sample are chosen so a sample lasts at least this long.
    pub min_sample_seconds: f64,
}

impl Default for BenchSettings {
    fn default() -> Self {
        Self {
            warmup_samples: 2,
            samples: 5,
            min_sample_seconds: 0.2,
        }
    }
}

/// Longest a sample may be made by calibration, in runs.
const MAX_RUNS_PER_SAMPLE: usize = 10_000;

struct Sampling {
    workload: Workload,
    prepared: Prepared,
    runs_per_sample: usize,
    warmups_left: usize,
    samples: Vec<f64>,
    in_flight: Option<(Instant, ReadTicket)>,
    plan_per_step: Option<PlanFigures>,
    /// Dispatches of one run of the recording, where the engine plans them.
    dispatches_per_run: Option<usize>,
    /// Seconds spent inside the engine's `run` during the counted samples, and their runs.
    host_seconds: f64,
    host_runs: usize,
}

pub struct BenchSession {
    info: EngineInfo,
    settings: BenchSettings,
    workloads: Vec<Workload>,
    next: usize,
    sampling: Option<Sampling>,
    records: Vec<BenchRecord>,
}

impl BenchSession {
    pub fn start(engine: &dyn Engine, workloads: Vec<Workload>, settings: BenchSettings) -> Self {
        Self {
            info: engine.info(),
            settings,
            workloads,
            next: 0,
            sampling: None,
            records: Vec::new(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.sampling.is_none() && self.next == self.workloads.len()
    }

    pub fn records(&self) -> &[BenchRecord] {
        &self.records
    }

    pub fn into_records(self) -> Vec<BenchRecord> {
        self.records
    }

    /// (workloads finished, workloads in all).
    pub fn progress(&self) -> (usize, usize) {
        (self.records.len(), self.workloads.len())
    }

    pub fn describe(&self) -> String {
        match &self.sampling {
            None => "preparing".to_string(),
            Some(s) if s.warmups_left > 0 => format!("{}: warming up", s.workload.name()),
            Some(s) => format!(
                "{}: sample {}/{} ({} runs each)",
                s.workload.name(),
                s.samples.len() + 1,
                self.settings.samples,
                s.runs_per_sample
            ),
        }
    }

    /// Does the next piece of work; returns false only where it waits for the GPU (never when
    /// `block`). Errors name the workload.
    pub fn advance(&mut self, engine: &mut dyn Engine, block: bool) -> Result<bool, String> {
        let Some(sampling) = &mut self.sampling else {
            if let Some(&workload) = self.workloads.get(self.next) {
                self.next += 1;
                let prepared = workload.prepare(engine)?;
                let plan = |recording| {
                    engine
                        .plan_figures(recording)
                        .map_err(|e| format!("{}: {e}", workload.name()))
                };
                let plan_per_step = plan(&prepared.step)?;
                let dispatches_per_run = plan(&prepared.recording)?.map(|p| p.dispatches);
                self.sampling = Some(Sampling {
                    workload,
                    prepared,
                    runs_per_sample: 1,
                    warmups_left: self.settings.warmup_samples,
                    samples: Vec::new(),
                    in_flight: None,
                    plan_per_step,
                    dispatches_per_run,
                    host_seconds: 0.0,
                    host_runs: 0,
                });
            }
            return Ok(true);
        };
        let name = sampling.workload.name();
        let Some((started, ticket)) = &mut sampling.in_flight else {
            let started = Instant::now();
            for run in 0..sampling.runs_per_sample {
                let run_started = Instant::now();
                engine
                    .run(&sampling.prepared.recording)
                    .map_err(|e| format!("{name}: {e}"))?;
                // The host's own time is the first run's, started with the device idle: later
                // runs of a sample may wait for a driver queue that is still busy.
                if run == 0 && sampling.warmups_left == 0 {
                    sampling.host_seconds += run_started.elapsed().as_secs_f64();
                    sampling.host_runs += 1;
                }
            }
            let ticket = engine
                .begin_read(&[sampling.prepared.probe])
                .map_err(|e| format!("{name}: {e}"))?;
            sampling.in_flight = Some((started, ticket));
            return Ok(true);
        };
        let read = if block {
            Some(engine.wait_read(ticket))
        } else {
            engine.poll_read(ticket).transpose()
        };
        let Some(read) = read else {
            return Ok(false);
        };
        read.map_err(|e| format!("{name}: {e}"))?;
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        sampling.in_flight = None;
        let runs = sampling.runs_per_sample;
        if sampling.warmups_left > 0 {
            sampling.warmups_left -= 1;
            let per_run = seconds / runs as f64;
            sampling.runs_per_sample = ((self.settings.min_sample_seconds / per_run).ceil()
                as usize)
                .clamp(1, MAX_RUNS_PER_SAMPLE);
            return Ok(true);
        }
        let workload = sampling.workload;
        sampling
            .samples
            .push(sampling.prepared.work_per_run * runs as f64 / seconds);
        if sampling.samples.len() == self.settings.samples {
            let done = self.sampling.take().expect("sampling");
            let mut record = BenchRecord::new(
                &self.info,
                &workload.name(),
                workload.unit(),
                done.runs_per_sample,
                self.settings.warmup_samples,
                done.samples,
            );
            record.flop_per_step = done.prepared.flop_per_step;
            record.plan_per_step = done.plan_per_step;
            record.host_us_per_dispatch = done.dispatches_per_run.map(|dispatches| {
                1e6 * done.host_seconds / (done.host_runs * dispatches.max(1)) as f64
            });
            self.records.push(record);
        }
        Ok(true)
    }
}

/// Runs the harness to the end, waiting on the GPU where needed (natively).
pub fn run_blocking(
    engine: &mut dyn Engine,
    workloads: Vec<Workload>,
    settings: BenchSettings,
    mut on_record: impl FnMut(&BenchRecord),
) -> Result<Vec<BenchRecord>, String> {
    let mut session = BenchSession::start(engine, workloads, settings);
    while !session.is_done() {
        let before = session.records().len();
        session.advance(engine, true)?;
        if let Some(record) = session.records().get(before) {
            on_record(record);
        }
    }
    Ok(session.into_records())
}

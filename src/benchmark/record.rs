//! One benchmark result, as a JSON line: what ran, on what, and the samples.

use crate::engine::EngineInfo;
use crate::engine::gpu::plan::PlanFigures;
use serde::{Deserialize, Serialize};

pub const BENCH_SCHEMA: &str = "specdef.bench/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    pub schema: String,
    pub crate_version: String,
    // What computed it (as in run records).
    pub engine: String,
    pub backend: String,
    pub adapter: String,
    pub driver: String,
    pub device_type: String,
    /// `native` or `browser`.
    pub platform: String,
    /// The clock that timed the samples.
    pub timer: String,
    // What was measured.
    pub workload: String,
    pub unit: String,
    /// Runs of the workload per sample (calibrated during warm-up).
    pub runs_per_sample: usize,
    pub warmup_samples: usize,
    /// Throughput of each sample, in `unit`.
    pub samples: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Sum of the kernels' GPU timestamps for one run, where the device allows timestamp queries.
    pub kernel_ms_per_run: Option<f64>,
    /// Matmul FLOPs of one step, for step workloads: median * flop_per_step is FLOP/s. Absent
    /// in records written before it existed.
    #[serde(default)]
    pub flop_per_step: Option<f64>,
    /// The GPU engine's plan of one step (one run where the workload has no steps): dispatches,
    /// barrier stages, workgroups, FLOPs and bytes, read off the plan. Absent on CPU engines and
    /// in records written before it existed.
    #[serde(default)]
    pub plan_per_step: Option<PlanFigures>,
    /// The host's time in the engine's `run` per dispatch (planning, binding, encoding and
    /// submitting; the GPU's work is not waited for), in microseconds, from each sample's first
    /// run (started with the device idle): the same wgpu host path on lavapipe as on a GPU.
    /// GPU engine only.
    #[serde(default)]
    pub host_us_per_dispatch: Option<f64>,
}

impl BenchRecord {
    pub fn new(
        info: &EngineInfo,
        workload: &str,
        unit: &str,
        runs_per_sample: usize,
        warmup_samples: usize,
        samples: Vec<f64>,
    ) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            schema: BENCH_SCHEMA.to_string(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            engine: info.engine.clone(),
            backend: info.backend.clone(),
            adapter: info.adapter.clone(),
            driver: info.driver.clone(),
            device_type: info.device_type.clone(),
            platform: if cfg!(target_arch = "wasm32") {
                "browser"
            } else {
                "native"
            }
            .to_string(),
            timer: if cfg!(target_arch = "wasm32") {
                "performance.now()"
            } else {
                "std::time::Instant"
            }
            .to_string(),
            workload: workload.to_string(),
            unit: unit.to_string(),
            runs_per_sample,
            warmup_samples,
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            samples,
            kernel_ms_per_run: None,
            flop_per_step: None,
            plan_per_step: None,
            host_us_per_dispatch: None,
        }
    }

    /// Checks a record read back (a plot's input) against its own invariants: the schema, text
    /// that prints as itself, samples that are throughputs (finite, non-negative) and a summary
    /// that agrees with them. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema != BENCH_SCHEMA {
            return Err(format!(
                "schema {:?}, expected {BENCH_SCHEMA:?}",
                self.schema
            ));
        }
        for (field, text) in [
            ("engine", &self.engine),
            ("backend", &self.backend),
            ("adapter", &self.adapter),
            ("driver", &self.driver),
            ("device_type", &self.device_type),
            ("platform", &self.platform),
            ("timer", &self.timer),
            ("workload", &self.workload),
            ("unit", &self.unit),
        ] {
            if let Some(c) = crate::printable::unprintable_char(text) {
                return Err(format!(
                    "{field} holds control characters or invisible ones ({c:?}): {text:?}"
                ));
            }
        }
        let throughput = |v: f64| v.is_finite() && v >= 0.0;
        if self.samples.is_empty() || !self.samples.iter().all(|&v| throughput(v)) {
            return Err("samples: at least one, each a finite non-negative number".to_string());
        }
        let lowest = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = self.samples.iter().copied().fold(0.0, f64::max);
        let within = |v: f64| throughput(v) && lowest <= v && v <= highest;
        for (field, value) in [
            ("median", self.median),
            ("min", self.min),
            ("max", self.max),
        ] {
            if !within(value) {
                return Err(format!(
                    "{field} = {value} lies outside the samples' range {lowest}..{highest}"
                ));
            }
        }
        for (field, value) in [
            ("kernel_ms_per_run", self.kernel_ms_per_run),
            ("flop_per_step", self.flop_per_step),
            ("host_us_per_dispatch", self.host_us_per_dispatch),
            ("plan_per_step.flop", self.plan_per_step.map(|p| p.flop)),
        ] {
            if let Some(v) = value
                && !throughput(v)
            {
                return Err(format!(
                    "{field} = {v}: must be a finite non-negative number"
                ));
            }
        }
        Ok(())
    }

    /// `matmul 256x256x256   12.3 GFLOP/s (min 11.9, max 12.8; 5 samples of 4 runs)`, and on
    /// the GPU `; 15 dispatches in 12 stages per step, host 3.1 us per dispatch`.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{:<28} {:>9.3} {:<8} (min {:.3}, max {:.3}; {} samples of {} runs",
            self.workload,
            self.median,
            self.unit,
            self.min,
            self.max,
            self.samples.len(),
            self.runs_per_sample
        );
        if let Some(plan) = self.plan_per_step {
            line.push_str(&format!(
                "; {} dispatches in {} stages per step",
                plan.dispatches, plan.barrier_stages
            ));
        }
        if let Some(host) = self.host_us_per_dispatch {
            line.push_str(&format!(", host {host:.1} us per dispatch"));
        }
        line + ")"
    }
}

/// Records as JSON lines, one per line, as `specdef bench` writes them.
pub fn to_json_lines(records: &[BenchRecord]) -> Result<String, serde_json::Error> {
    records
        .iter()
        .map(|r| serde_json::to_string(r).map(|line| line + "\n"))
        .collect()
}

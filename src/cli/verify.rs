//! `specdef verify`: does this machine's adapter reproduce the reference? Runs the quick scenario
//! on the chosen engine and compares its outcomes with the f64 reference records shipped in the
//! repository (`reference/quick-cpu64/runs.jsonl`, written by
//! `specdef run --quick --engine cpu64 --out reference/quick-cpu64`).

use anyhow::{Context, Result};
use specdef::engine_choice::EngineChoice;
use specdef::report::{self, CompareSettings};
use specdef::scenario::RunRecord;
use std::path::Path;
use std::process::ExitCode;

/// The reference records, built into the binary so `verify` works from any folder.
pub const REFERENCE: &str = include_str!("../../reference/quick-cpu64/runs.jsonl");

/// Steps to target may differ by one evaluation interval of the quick scenario (10 steps):
/// across precisions a run can cross the target one evaluation earlier or later.
pub const STEPS_BAND: usize = 10;

pub fn verify(choice: EngineChoice, reference: Option<&Path>) -> Result<ExitCode> {
    let expected: Vec<RunRecord> = match reference {
        None => report::from_json_lines(REFERENCE)
            .map_err(|e| anyhow::anyhow!("the built-in reference: {e}"))?,
        Some(path) => crate::read_records(path)?,
    };
    let scenario = crate::load_scenario(None, Some("quick"))?;
    let mut engine = crate::open(choice)?;
    println!(
        "verifying {} against the f64 reference ({} runs of the quick scenario)",
        engine.info(),
        expected.len()
    );
    let outcome = crate::run_with_progress(engine.as_mut(), &scenario, Some("quick".into()))
        .context("running the quick scenario")?;
    let settings = CompareSettings {
        steps_band: STEPS_BAND,
        outcomes_only: true,
        ..CompareSettings::default()
    };
    let comparison = report::compare(&outcome.records, &expected, &settings);
    print!("{}", comparison.report());
    Ok(if comparison.all_agree() {
        println!("this device reproduces the reference outcomes");
        ExitCode::SUCCESS
    } else {
        println!("this device does NOT reproduce the reference outcomes (runs listed above)");
        ExitCode::FAILURE
    })
}

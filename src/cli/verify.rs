//! `specdef verify`: does this machine's adapter reproduce the reference? Runs the quick scenario
//! on the chosen engine and compares its outcomes with the f64 reference records shipped in the
//! repository (`reference/quick-cpu64/runs.jsonl`, written by
//! `specdef run --quick --engine cpu64 --out reference/quick-cpu64`).

use anyhow::{Context, Result};
use specdef::engine_choice::EngineChoice;
use specdef::reference;
use specdef::scenario::RunRecord;
use std::path::Path;
use std::process::ExitCode;

pub fn verify(choice: EngineChoice, against: Option<&Path>) -> Result<ExitCode> {
    let expected: Vec<RunRecord> = match against {
        None => reference::quick_reference(),
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
    let comparison = reference::check(&outcome.records, &expected);
    print!("{}", comparison.report());
    Ok(if comparison.all_agree() {
        println!("this device reproduces the reference outcomes");
        ExitCode::SUCCESS
    } else {
        println!("this device does NOT reproduce the reference outcomes (runs listed above)");
        ExitCode::FAILURE
    })
}

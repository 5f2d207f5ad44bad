//! Runs a scenario to the end: the blocking driver of `ScenarioSession`.

use super::{RunError, RunRecord, Scenario, ScenarioOutcome, ScenarioSession};
use crate::engine::Engine;
use std::path::PathBuf;

/// Where the pretrained model is cached, and progress reporting.
pub struct RunSettings<'a> {
    pub variant: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// Called after each attack run with (runs done, runs in all, description).
    pub progress: &'a mut dyn FnMut(usize, usize, &str),
    /// Called with one-line notes (cache hits, phases).
    pub log: &'a mut dyn FnMut(&str),
}

/// Runs a scenario to the end, blocking: the `ScenarioSession` state machine driven with blocking
/// readbacks, reporting progress and notes through `settings`.
pub fn run_scenario(
    engine: &mut dyn Engine,
    scenario: &Scenario,
    settings: &mut RunSettings<'_>,
) -> Result<ScenarioOutcome, RunError> {
    let session = ScenarioSession::start(
        engine,
        scenario,
        settings.variant.clone(),
        settings.cache_dir.clone(),
    )?;
    drive_to_end(engine, session, settings, &mut |_| Ok(()))
}

/// Drives a started session to its end, handing each record to `finished` as soon as its run
/// ends (a sweep stores it then, so a killed sweep keeps what it finished).
pub fn drive_to_end(
    engine: &mut dyn Engine,
    mut session: ScenarioSession,
    settings: &mut RunSettings<'_>,
    finished: &mut dyn FnMut(&RunRecord) -> Result<(), RunError>,
) -> Result<ScenarioOutcome, RunError> {
    let mut reported = 0;
    loop {
        for note in session.drain_notes() {
            (settings.log)(&note);
        }
        let (done, total) = session.progress();
        if done > reported {
            for record in &session.records()[reported..done] {
                finished(record)?;
            }
            reported = done;
            (settings.progress)(done, total, &session.describe());
        }
        if session.is_done() {
            break;
        }
        session.advance(engine, true)?;
    }
    Ok(session.into_outcome())
}

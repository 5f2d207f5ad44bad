//! `specdef run --variant transformer` (or a scenario file with an `[encoder]` table): the
//! transformer scenario, written as a result folder like the digits scenario's.

use anyhow::{Context, Result};
use specdef::engine_choice::EngineChoice;
use specdef::run_folder::ResultFolder;
use specdef::transformer_scenario::{TransformerScenario, run_transformer_scenario};
use std::path::Path;

/// The transformer scenario a `specdef run` names, if it names one: a file whose text has an
/// `[encoder]` table, or (without a file) a `transformer` variant of the built-in scenarios.
pub fn chosen(
    scenario_path: Option<&Path>,
    variant: Option<&str>,
) -> Result<Option<TransformerScenario>> {
    match scenario_path {
        Some(path) => {
            let text = specdef::input_file::read_text_bounded(
                path,
                specdef::input_file::MAX_SCENARIO_BYTES,
            )
            .with_context(|| format!("reading scenario {}", path.display()))?;
            if !TransformerScenario::is_transformer_file(&text) {
                return Ok(None);
            }
            let parsed = TransformerScenario::parse(&text, variant, &path.display().to_string());
            Ok(Some(parsed.map_err(anyhow::Error::msg)?))
        }
        None => variant
            .and_then(TransformerScenario::builtin)
            .transpose()
            .map_err(anyhow::Error::msg),
    }
}

pub fn run(
    scenario: &TransformerScenario,
    choice: EngineChoice,
    out: &Path,
    variant: Option<String>,
) -> Result<()> {
    let folder = ResultFolder::claim(out)?;
    let mut engine = crate::open(choice)?;
    println!(
        "scenario {}{} on {}",
        scenario.name,
        variant
            .as_ref()
            .map_or(String::new(), |v| format!(" ({v})")),
        engine.info()
    );
    let outcome = crate::with_progress(variant, |settings| {
        run_transformer_scenario(engine.as_mut(), scenario, settings, &mut |_| Ok(()))
    })?;
    crate::publish(folder, &outcome.records, &outcome.defenses, out)
}

//! `specdef run --variant transformer` (or a scenario file with an `[encoder]` table): the
//! transformer scenario, written as a result folder like the digits scenario's.

use anyhow::{Context, Result, bail};
use specdef::engine_choice::EngineChoice;
use specdef::run_folder::ResultFolder;
use specdef::transformer_scenario::{
    ReleasedClassifier, TransformerScenario, VARIANT_PREFIX, release_classifier,
    run_transformer_scenario,
};
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
    released: Option<&Path>,
) -> Result<()> {
    let released = released.map(read_released).transpose()?;
    if let Some(released) = &released {
        released.check_made_by(scenario)?;
    }
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
        run_transformer_scenario(engine.as_mut(), scenario, released, settings, &mut |_| {
            Ok(())
        })
    })?;
    crate::publish(folder, &outcome.records, &outcome.defenses, out)
}

/// A released classifier file, checked whole.
fn read_released(path: &Path) -> Result<ReleasedClassifier> {
    let bytes = specdef::input_file::read_bounded(path, specdef::input_file::MAX_TENSOR_FILE_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    ReleasedClassifier::decode(&bytes).with_context(|| path.display().to_string())
}

/// `specdef release-transformer`: the scenario's release and suppression, saved whole or not at
/// all.
pub fn release(
    scenario_path: Option<&Path>,
    variant: Option<&str>,
    choice: EngineChoice,
    out: &Path,
) -> Result<()> {
    let variant = variant.or(scenario_path.is_none().then_some(VARIANT_PREFIX));
    let Some(scenario) = chosen(scenario_path, variant)? else {
        match scenario_path {
            Some(path) => bail!(
                "{} is not a transformer scenario (no [encoder] table)",
                path.display()
            ),
            None => bail!(
                "--variant {:?} is not a transformer variant (transformer, transformer-quick, \
                 transformer-full)",
                variant.unwrap_or_default()
            ),
        }
    };
    specdef::atomic_file::check_replaceable(out)
        .with_context(|| format!("--out {}", out.display()))?;
    let mut engine = crate::open(choice)?;
    println!("releasing {} on {}", scenario.name, engine.info());
    let released = crate::with_progress(variant.map(String::from), |settings| {
        release_classifier(engine.as_mut(), &scenario, settings)
    })?;
    let bytes = released.encode()?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    specdef::atomic_file::write_atomically(out, &bytes)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} ({:.1} MB): harmful accuracy {:.3} (before suppression {:.3}), utility {:.3}",
        out.display(),
        bytes.len() as f64 / 1e6,
        released.measured.harmful_accuracy,
        released.measured.harmful_accuracy_before_suppression,
        released.measured.utility_accuracy
    );
    Ok(())
}

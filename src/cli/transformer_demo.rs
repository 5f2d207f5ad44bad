//! `specdef transformer-demo`: the app's transformer demo from the command line (a sentence's
//! class probabilities before and after a short attack on the released classifier and its
//! SpecDef twin), printed as a table and written as the JSON the browser page publishes, so a
//! native run and a browser run of it can be compared.

use anyhow::{Result, anyhow};
use specdef::engine_choice::EngineChoice;
use specdef::training::OptimizerKind;
use specdef::transformer_scenario::{AttackDemo, DemoInputs, DemoSettings};
use std::path::Path;

pub fn demo(
    released: &Path,
    choice: EngineChoice,
    settings: DemoSettings,
    out: Option<&Path>,
) -> Result<()> {
    let inputs = DemoInputs::from_files(released).map_err(|e| anyhow!(e))?;
    let mut engine = crate::open(choice)?;
    println!(
        "released classifier {} ({} blocks, {}) on {}",
        released.display(),
        inputs.released.scenario.encoder.blocks,
        inputs.released.scenario.name,
        engine.info()
    );
    let mut demo = AttackDemo::start(&inputs, settings)?;
    while !demo.is_done() {
        eprint!("\r{:<60}", demo.describe());
        demo.advance(engine.as_mut(), &inputs)?;
    }
    eprintln!();
    let outcome = demo.outcome(&inputs);
    println!("tokens: {}", outcome.tokens.join(" "));
    print!("{:<22}", "topic");
    for model in &outcome.models {
        print!(" {:>24}", format!("{} before/after", short(&model.model)));
    }
    println!();
    for (topic, name) in outcome.topics.iter().enumerate() {
        let harmful = if topic >= outcome.first_harmful_topic {
            " (harmful)"
        } else {
            ""
        };
        print!("{:<22}", format!("{name}{harmful}"));
        for model in &outcome.models {
            let (before, after) = (
                model.probabilities_before[topic],
                model.probabilities_after[topic],
            );
            print!(" {:>24}", format!("{before:.3} / {after:.3}"));
        }
        println!();
    }
    print!("{:<22}", format!("harmful acc. (n={})", outcome.judged_on));
    for model in &outcome.models {
        let (before, after) = (model.harmful_accuracy_before, model.harmful_accuracy_after);
        print!(" {:>24}", format!("{before:.3} / {after:.3}"));
    }
    println!();
    if let Some(out) = out {
        let json = serde_json::to_string_pretty(&outcome)?;
        specdef::atomic_file::write_atomically(out, json.as_bytes())?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn short(model: &str) -> &str {
    model.split(" k=").next().unwrap_or(model)
}

/// The optimiser by its name in scenario files.
pub fn optimizer(name: &str) -> Result<OptimizerKind> {
    OptimizerKind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| anyhow!("unknown optimiser {name:?}"))
}

//! The transformer demo's widgets: the sentence, the attack's settings, and the sentence's class
//! probabilities before and after the attack on the released model and on its defended twin.

use super::demo_work::DemoWork;
use crate::encoder::EncoderOptimizer;
use crate::training::OptimizerKind;

/// What the user asked the demo to do.
pub enum DemoAction {
    Load,
    Attack,
}

/// The left panel's part: load, the sentence, the attack's settings, attack.
pub fn controls(ui: &mut egui::Ui, demo: &mut DemoWork, running: bool) -> Option<DemoAction> {
    ui.heading("transformer demo");
    let Some(inputs) = &demo.inputs else {
        let load = ui
            .add_enabled(!running, egui::Button::new("Load MiniLM"))
            .on_hover_text(
                "the released (fine-tuned, then suppressed) all-MiniLM-L6-v2 classifier of \
                 `specdef release-transformer`, its tokenizer and WordNet",
            )
            .clicked();
        return load.then_some(DemoAction::Load);
    };
    ui.label("a sentence (\"lemma: gloss\" reads like the task's texts):");
    ui.add(egui::TextEdit::multiline(&mut demo.settings.text).desired_rows(2));
    if let Ok(tokens) = inputs.tokens_of(&demo.settings.text) {
        ui.label(egui::RichText::new(tokens.join(" ")).small().monospace());
    }
    let settings = &mut demo.settings;
    egui::ComboBox::from_label("optimiser")
        .selected_text(settings.optimizer.name())
        .show_ui(ui, |ui| {
            for kind in OptimizerKind::ALL {
                if EncoderOptimizer::is_built(kind) {
                    ui.selectable_value(&mut settings.optimizer, kind, kind.name());
                }
            }
        });
    ui.add(
        egui::Slider::new(&mut settings.lr, 1e-6..=1e-1)
            .logarithmic(true)
            .text("lr"),
    );
    ui.add(egui::Slider::new(&mut settings.steps, 1..=100).text("steps"));
    let attack = ui
        .add_enabled(!running, egui::Button::new("Attack"))
        .on_hover_text(
            "fine-tune the released model and its SpecDef twin on the harmful topics, then \
             classify the sentence again",
        )
        .clicked();
    attack.then_some(DemoAction::Attack)
}

/// The central panel's part: what the demo is doing and its last outcome.
pub fn results(ui: &mut egui::Ui, demo: &DemoWork) {
    if let Some(status) = demo.status() {
        ui.label(format!("transformer demo: {status}"));
    }
    let Some(outcome) = &demo.outcome else {
        return;
    };
    ui.heading("transformer demo: the sentence's class probabilities");
    ui.label(format!(
        "{:?} as {} tokens; the attack: {} steps of {} at lr {:.0e}, batches of {} harmful \
         glosses with their labels",
        outcome.settings.text,
        outcome.tokens.len(),
        outcome.settings.steps,
        outcome.settings.optimizer.name(),
        outcome.settings.lr,
        outcome.batch_size
    ));
    egui::Grid::new("demo_probabilities")
        .striped(true)
        .show(ui, |ui| {
            ui.strong("topic");
            for model in &outcome.models {
                ui.strong(format!("{}: before", model.model));
                ui.strong("after");
            }
            ui.end_row();
            for (topic, name) in outcome.topics.iter().enumerate() {
                let harmful = topic >= outcome.first_harmful_topic;
                ui.label(if harmful {
                    format!("{name} (harmful)")
                } else {
                    name.clone()
                });
                for model in &outcome.models {
                    ui.label(format!("{:.3}", model.probabilities_before[topic]));
                    ui.label(format!("{:.3}", model.probabilities_after[topic]));
                }
                ui.end_row();
            }
            ui.label(format!(
                "harmful accuracy ({} held-out glosses)",
                outcome.judged_on
            ));
            for model in &outcome.models {
                ui.label(format!("{:.3}", model.harmful_accuracy_before));
                ui.label(format!("{:.3}", model.harmful_accuracy_after));
            }
            ui.end_row();
        });
}

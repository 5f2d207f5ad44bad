//! What the app runs: one of the built-in scenarios, or a single defence and attack set by hand
//! (the quick scenario's data, model and pre-training, with the user's alpha, k, layers,
//! optimiser, learning rate and step budget, and optionally the baseline defences beside it).

use crate::defense::Defense;
use crate::scenario::{LrGrid, Scenario};
use crate::training::OptimizerKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioChoice {
    Quick,
    Full,
    Custom,
}

impl ScenarioChoice {
    pub const ALL: [ScenarioChoice; 3] = [Self::Quick, Self::Full, Self::Custom];

    /// The variant name its records carry.
    pub fn variant(self) -> Option<&'static str> {
        match self {
            Self::Quick => Some("quick"),
            Self::Full => None,
            Self::Custom => Some("custom"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Quick => "quick (small MLP, alpha 1e4, lr grid)",
            Self::Full => "full (paper-shaped table)",
            Self::Custom => "one defence and attack, set below",
        }
    }

    /// `quick`, `full` or `custom`, as the page's `?run=` names them.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "quick" => Some(Self::Quick),
            "full" => Some(Self::Full),
            "custom" => Some(Self::Custom),
            _ => None,
        }
    }
}

/// The hand-set run: undefended and SpecDef at one alpha (and the baselines of the built-in
/// `baselines` variant trained on one loss where asked), attacked with one optimiser at one lr.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomRun {
    pub log10_alpha: f64,
    pub k: usize,
    /// `all`, `0,2` or `random:N`, as in scenario files.
    pub layers: String,
    pub optimizer: OptimizerKind,
    pub log10_lr: f64,
    pub steps: usize,
    /// Also the baseline defences, with the built-in `baselines` variant's settings.
    pub baselines: bool,
}

impl Default for CustomRun {
    fn default() -> Self {
        Self {
            log10_alpha: 2.0,
            k: 25,
            layers: "all".to_string(),
            optimizer: OptimizerKind::Adam,
            log10_lr: -3.0,
            steps: 150,
            baselines: false,
        }
    }
}

impl CustomRun {
    pub fn scenario(&self) -> Result<Scenario, String> {
        let mut scenario = Scenario::builtin(Some("quick"))?;
        scenario.defense.alphas = vec![10f64.powf(self.log10_alpha)];
        scenario.defense.k = self.k;
        scenario.defense.layers = self
            .layers
            .parse()
            .map_err(|e| format!("layers {:?}: {e}", self.layers))?;
        scenario.attack.optimizers = vec![self.optimizer];
        let lr = 10f64.powf(self.log10_lr);
        scenario.attack.lr_grid = LrGrid {
            from: lr,
            to: lr,
            per_decade: 1,
        };
        scenario.attack.steps = self.steps;
        if self.baselines {
            // The variant's baselines, judged as it judges them (its divergence threshold).
            // TAR and condition-number immunisation are left to the native run: TAR's steps
            // each run an attack, and immunisation's each wait on the host (minutes more on a
            // software WebGPU).
            let variant = Scenario::builtin(Some("baselines"))?;
            scenario.defense.baselines = (variant.defense.baselines.into_iter())
                .filter(Defense::is_single_loss_stage)
                .collect();
            scenario.attack.divergence_loss = variant.attack.divergence_loss;
        }
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        egui::Grid::new("custom_run").num_columns(2).show(ui, |ui| {
            ui.label("log10 alpha");
            ui.add(egui::Slider::new(&mut self.log10_alpha, 0.0..=8.0).step_by(0.5));
            ui.end_row();
            ui.label("top-k");
            ui.add(egui::Slider::new(&mut self.k, 1..=64));
            ui.end_row();
            ui.label("layers");
            ui.text_edit_singleline(&mut self.layers)
                .on_hover_text("all, a list such as 0,2, or random:N");
            ui.end_row();
            ui.label("optimiser");
            egui::ComboBox::from_id_salt("optimizer")
                .selected_text(self.optimizer.name())
                .show_ui(ui, |ui| {
                    for kind in OptimizerKind::ALL {
                        ui.selectable_value(&mut self.optimizer, kind, kind.name());
                    }
                });
            ui.end_row();
            ui.label("log10 lr");
            ui.add(egui::Slider::new(&mut self.log10_lr, -10.0..=0.0).step_by(0.5));
            ui.end_row();
            ui.label("steps");
            ui.add(egui::Slider::new(&mut self.steps, 10..=1000).logarithmic(true));
            ui.end_row();
            ui.label("baselines");
            ui.checkbox(&mut self.baselines, "RMU, NPO and RepNoise beside SpecDef")
                .on_hover_text(
                    "trained on the released model first (the baselines variant's settings)",
                );
            ui.end_row();
        });
    }
}

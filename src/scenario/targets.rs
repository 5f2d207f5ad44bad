//! What a scenario fine-tunes, in order: each model (a defence, then the adaptive attacker's
//! rewrite where there is one) with the optimisers that attack it over the learning-rate grid.

use super::Scenario;
use crate::attack::{AdaptiveAttack, LoraPlacement};
use crate::defense::Defense;
use crate::training::OptimizerKind;

/// What the fine-tuning learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// The attacker's: the harmful classes.
    Harmful,
    /// Trainability's: the utility digits mirrored (benign fine-tuning).
    Benign,
}

impl Task {
    /// As records name it.
    pub fn name(self) -> &'static str {
        match self {
            Task::Harmful => "harmful",
            Task::Benign => "benign",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub defense: Defense,
    pub adaptive: Option<AdaptiveAttack>,
    pub optimizers: Vec<OptimizerKind>,
    pub task: Task,
}

impl Target {
    /// `specdef a=1e4`, or with the rewrite `specdef a=1e4 + factorisation p=4`; as records'
    /// `defense_label` names it.
    pub fn label(&self) -> String {
        let defense = self.defense.label();
        match self.adaptive {
            Some(attack) => format!("{defense} + {}", attack.describe(self.alpha())),
            None => defense,
        }
    }

    /// The defence's alpha (1 for the undefended model).
    pub fn alpha(&self) -> f64 {
        self.defense.alpha().unwrap_or(1.0)
    }
}

impl Scenario {
    /// The defence grid's models under the attack grid's optimisers; then the adaptive
    /// attacks: LoRA on the weights of the undefended model (the reference) and of every
    /// baseline defence and stack, and every attack on the defended model of every adaptive
    /// alpha; then trainability's benign fine-tuning of every model of the defence grid.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets: Vec<Target> = (self.defense.defenses().into_iter())
            .map(|defense| Target {
                defense,
                adaptive: None,
                optimizers: self.attack.optimizers.clone(),
                task: Task::Harmful,
            })
            .collect();
        let adaptive = &self.adaptive;
        let target = |defense, attack| Target {
            defense,
            adaptive: Some(attack),
            optimizers: adaptive.optimizers.clone(),
            task: Task::Harmful,
        };
        for &attack in &adaptive.attacks {
            if let AdaptiveAttack::Lora {
                placement: LoraPlacement::Weight,
                ..
            } = attack
            {
                targets.push(target(Defense::None, attack));
                let trained = (self.defense.defenses().into_iter())
                    .filter(|defense| defense.trained_part().is_some());
                targets.extend(trained.map(|defense| target(defense, attack)));
            }
        }
        let alphas = adaptive.alphas.as_ref().unwrap_or(&self.defense.alphas);
        for &alpha in alphas {
            let defense = Defense::SpecDef(self.defense.spec_def(alpha));
            for &attack in &adaptive.attacks {
                targets.push(target(defense.clone(), attack));
            }
        }
        if !self.trainability.optimizers.is_empty() {
            targets.extend(self.defense.defenses().into_iter().map(|defense| Target {
                defense,
                adaptive: None,
                optimizers: self.trainability.optimizers.clone(),
                task: Task::Benign,
            }));
        }
        targets
    }
}

//! TAR, tamper-resistant safeguards (Tamirisa et al. 2025, "Tamper-Resistant Safeguards for
//! Open-Weight LLMs"; the reference is its repository's `tar.py` and `modules/training.py`, the
//! hyper-parameters its `run_tar_bio.sh`). A training stage on the released model:
//! adversarial meta-learning against simulated fine-tuning attacks on the harmful rows, whose
//! tamper-resistance loss after each attack (maximum entropy on the harmful inputs) is
//! minimised beside a retain loss on the utility rows. The loop, and where it departs from the
//! reference, is `training/tamper.rs`.
//!
//! The reference starts from a model that already has a safeguard (its random-mapping step);
//! here the released model has its harmful digits suppressed (ELM-style), which is that.

use super::DefenseError;
use super::stage::{StageData, TrainingStage, non_negative, validate_settings};
use crate::engine::Engine;
use crate::model::{DeviceModel, HostModel, ModelSpec};
use crate::training::{
    SimulatedAttacks, TamperObjective, TamperRows, TamperSession, TrainRun, TrainSettings,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tar {
    /// The attacks it trains against, one per outer step.
    pub attacks: SimulatedAttacks,
    /// The tamper-resistance term's weight (the reference's grad scale, 4).
    pub tamper_weight: f64,
    /// The retain term's weight (the reference's retain scale, 1).
    pub retain_weight: f64,
    /// The outer training (the reference: AdamW, lr 2e-5, 750 steps, 32 of warm-up, batch 8).
    pub train: TrainSettings,
}

impl Tar {
    pub fn label(&self) -> String {
        format!("tar k={}", self.attacks.steps)
    }

    pub fn objective(&self) -> TamperObjective {
        TamperObjective {
            attacks: self.attacks.clone(),
            tamper_weight: self.tamper_weight,
            retain_weight: self.retain_weight,
        }
    }
}

impl TrainingStage for Tar {
    fn validate(&self, _model: &ModelSpec) -> Result<(), DefenseError> {
        (self.attacks.validate("tar.attacks")).map_err(DefenseError::Config)?;
        non_negative("tar", "tamper_weight", self.tamper_weight)?;
        non_negative("tar", "retain_weight", self.retain_weight)?;
        validate_settings("tar", &self.train)
    }

    fn settings(&self) -> &TrainSettings {
        &self.train
    }

    /// 2: each tamper-resistance batch holds whole images with all their labels (revision 1
    /// drew the every-label rows one by one, and training fit the labels drawn).
    fn revision(&self) -> u32 {
        2
    }

    /// The attacks fine-tune on the harmful rows with their labels; the tamper-resistance loss
    /// reads the same images with every label (cross-entropy to the uniform distribution).
    fn start(
        &self,
        engine: &mut dyn Engine,
        device: &DeviceModel,
        base: &HostModel,
        data: StageData,
        seed: u64,
    ) -> Result<Box<dyn TrainRun>, DefenseError> {
        self.validate(&base.spec)?;
        let classes = base.spec.widths[base.spec.widths.len() - 1];
        let tamper = data.harmful.with_every_label(classes);
        let rows = TamperRows {
            attack: data.harmful,
            tamper: &tamper,
            retain: data.utility,
        };
        let objective = self.objective();
        let session = TamperSession::start(
            engine,
            device,
            rows,
            data.eval,
            &objective,
            &self.train,
            seed,
        )?;
        Ok(Box::new(session))
    }
}

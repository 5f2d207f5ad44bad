//! How the released model comes to be, before any defence: what it knew of the harmful task.
//! The paper's harmful task is relearning (PAPER.md 4): the released model had the harmful
//! knowledge suppressed (WMDP-bio accuracy about 0.2, as after the ELM erasure baseline) and the
//! attacker brings it back. `release = "new-classes"` is the suite's earlier setting, where the
//! model never learned the harmful classes and the attacker teaches them anew.
//!
//! The suppression step (documented choice, ELM-style erasure): maximum-entropy outputs on the
//! harmful training images (cross-entropy against the uniform distribution over every class,
//! written as one copy of each image per class, each with that label) and a retain loss on the
//! utility training images (their own labels, one copy per class too, so an image weighs the
//! same in both terms). Plain cross-entropy training on that set, so every engine runs it.

use crate::data::Dataset;
use crate::training::TrainSettings;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Release {
    /// Pretrained on the utility classes only (`release = "new-classes"`).
    #[default]
    NewClasses,
    /// Pretrained on every class, then the harmful ones suppressed with these settings
    /// (`[release.relearning]`).
    Relearning(Box<TrainSettings>),
}

impl Release {
    pub fn is_new_classes(&self) -> bool {
        *self == Release::NewClasses
    }

    /// The suppression step's settings, where there is one.
    pub fn suppression(&self) -> Option<&TrainSettings> {
        match self {
            Release::NewClasses => None,
            Release::Relearning(settings) => Some(settings),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Release::NewClasses => "new-classes",
            Release::Relearning(_) => "relearning",
        }
    }
}

/// The suppression step's training set: every utility image with its label and every harmful
/// image with each of the `classes` labels, each image `classes` times.
pub fn suppression_set(utility: &Dataset, harmful: &Dataset, classes: usize) -> Dataset {
    let features = utility.features;
    let mut inputs = Vec::with_capacity((utility.len() + harmful.len()) * classes * features);
    let mut labels = Vec::with_capacity((utility.len() + harmful.len()) * classes);
    for (image, &label) in utility.inputs.chunks(features).zip(&utility.labels) {
        for _ in 0..classes {
            inputs.extend_from_slice(image);
            labels.push(label);
        }
    }
    let uniform = harmful.with_every_label(classes);
    inputs.extend_from_slice(&uniform.inputs);
    labels.extend_from_slice(&uniform.labels);
    Dataset {
        inputs,
        labels,
        features,
    }
}

#[cfg(test)]
mod tests {
    use super::suppression_set;
    use crate::data::Dataset;

    #[test]
    fn harmful_images_carry_every_label_and_utility_images_their_own() {
        let utility = Dataset {
            inputs: vec![1.0, 1.0],
            labels: vec![0],
            features: 2,
        };
        let harmful = Dataset {
            inputs: vec![2.0, 2.0, 3.0, 3.0],
            labels: vec![1, 2],
            features: 2,
        };
        let set = suppression_set(&utility, &harmful, 3);
        assert_eq!(set.len(), 9);
        assert_eq!(set.labels, [0, 0, 0, 0, 1, 2, 0, 1, 2]);
        assert_eq!(&set.inputs[..6], &[1.0; 6]);
        assert_eq!(&set.inputs[6..12], &[2.0; 6]);
        assert_eq!(&set.inputs[12..], &[3.0; 6]);
    }
}

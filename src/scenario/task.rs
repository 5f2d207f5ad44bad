//! The data sets of a scenario, split from the embedded digits by the scenario's seed: the
//! utility and harmful tasks' train and test sets, the harmful held-out set no attack is chosen
//! on (generalisation; empty unless `data.heldout_fraction` > 0), the benign task of
//! trainability (the utility digits mirrored left to right), and what the released model is
//! trained on (`release`: the utility classes, or every class and then the suppression set).

use super::{Release, Scenario, suppression_set};
use crate::data::{DataError, Dataset, load_digits, stratified_split};

/// Mixed into the seed of the held-out split, so it is not the train/test split's draw again.
const HELDOUT_SEED: u64 = 0x0068_656c_646f_7574;

pub struct TaskData {
    /// What pretraining learns and is evaluated on: the utility classes, or (relearning) every
    /// class of the utility and harmful tasks.
    pub release_train: Dataset,
    pub release_test: Dataset,
    /// The suppression step's training set (relearning only; see `release.rs`).
    pub suppression_train: Option<Dataset>,
    pub utility_train: Dataset,
    pub utility_test: Dataset,
    pub harmful_train: Dataset,
    /// The harmful test set the target is judged on during each attack (what chooses it).
    pub harmful_test: Dataset,
    /// Harmful test images no attack is judged on: measured once after each attack.
    pub harmful_heldout: Dataset,
    pub benign_train: Dataset,
    pub benign_test: Dataset,
}

impl TaskData {
    pub fn load(scenario: &Scenario) -> Result<Self, DataError> {
        let digits = load_digits()?.dataset;
        let (train_idx, test_idx) =
            stratified_split(&digits.labels, scenario.data.test_fraction, scenario.seed);
        let (train, test) = (digits.select(&train_idx), digits.select(&test_idx));
        let (utility, harmful) = (
            &scenario.data.utility_classes,
            &scenario.data.harmful_classes,
        );
        let harmful_test = test.with_classes(harmful);
        let (harmful_test, harmful_heldout) = match scenario.data.heldout_fraction {
            f if f > 0.0 => {
                let (chosen_on, held_out) =
                    stratified_split(&harmful_test.labels, f, scenario.seed ^ HELDOUT_SEED);
                (
                    harmful_test.select(&chosen_on),
                    harmful_test.select(&held_out),
                )
            }
            _ => (harmful_test.clone(), harmful_test.select(&[])),
        };
        let (utility_train, utility_test) =
            (train.with_classes(utility), test.with_classes(utility));
        let harmful_train = train.with_classes(harmful);
        let both: Vec<usize> = utility.iter().chain(harmful).copied().collect();
        let classes = scenario.model.widths.last().copied().unwrap_or(0);
        let (release_train, release_test, suppression_train) = match &scenario.release {
            Release::NewClasses => (utility_train.clone(), utility_test.clone(), None),
            Release::Relearning(_) => (
                train.with_classes(&both),
                test.with_classes(&both),
                Some(suppression_set(&utility_train, &harmful_train, classes)),
            ),
        };
        Ok(Self {
            release_train,
            release_test,
            suppression_train,
            benign_train: utility_train.mirrored(),
            benign_test: utility_test.mirrored(),
            utility_train,
            utility_test,
            harmful_train,
            harmful_test,
            harmful_heldout,
        })
    }
}

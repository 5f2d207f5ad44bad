//! The four data sets of a scenario, split from the embedded digits by the scenario's seed.

use super::Scenario;
use crate::data::{DataError, Dataset, load_digits, stratified_split};

/// The four data sets of a scenario.
pub struct TaskData {
    pub utility_train: Dataset,
    pub utility_test: Dataset,
    pub harmful_train: Dataset,
    pub harmful_test: Dataset,
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
        Ok(Self {
            utility_train: train.with_classes(utility),
            utility_test: test.with_classes(utility),
            harmful_train: train.with_classes(harmful),
            harmful_test: test.with_classes(harmful),
        })
    }
}

//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant,
    /// Cosine decay from the base rate to zero over the run.
    Cosine,
    /// Linear warm-up from zero over `warmup_steps`, then constant.
    LinearWarmup {
        warmup_steps: usize,
    },
}

impl Schedule {
    /// The rate at `step` (from 0) of a run of `total` steps.
    pub fn lr_at(self, base: f64, step: usize, total: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => {
                let progress = step as f64 / total.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::LinearWarmup { warmup_steps } => {
                if step < warmup_steps {
                    base * (step + 1) as f64 / warmup_steps as f64
                } else {
                    base
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_start_and_end_where_they_should() {
        assert_eq!(Schedule::Constant.lr_at(0.1, 50, 100), 0.1);
        assert_eq!(Schedule::Cosine.lr_at(0.1, 0, 100), 0.1);
        assert!((Schedule::Cosine.lr_at(0.1, 50, 100) - 0.05).abs() < 1e-12);
        assert!(Schedule::Cosine.lr_at(0.1, 100, 100).abs() < 1e-12);
        let warmup = Schedule::LinearWarmup { warmup_steps: 10 };
        assert!((warmup.lr_at(0.1, 0, 100) - 0.01).abs() < 1e-12);
        assert_eq!(warmup.lr_at(0.1, 10, 100), 0.1);
    }
}

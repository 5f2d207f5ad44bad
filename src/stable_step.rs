//! The largest stable step, measured: for SGD on a model, the largest learning rate whose run
//! does not diverge, found by bisection (in log space) between the grid's last stable rate and
//! its first diverging one, reported beside the prediction 2 / sigma_1 of the Hessian at the
//! start. A run stable above 2 / sigma_1 is the catapult regime (the loss first grows, the
//! curvature falls, training goes on): reported, not hidden.

use serde::Serialize;

/// Where a model's runs turn from stable to diverging.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StableSearch {
    /// The largest rate seen stable (None: even the grid's smallest diverged).
    pub largest_stable: Option<f64>,
    /// The smallest rate seen diverging above it (None: the whole grid was stable).
    pub first_diverging: Option<f64>,
    /// Training runs made.
    pub runs: usize,
}

/// Decades tried beyond the grid's ends when the whole grid is stable, or all diverges.
pub const EXTRA_DECADES: i32 = 4;

/// Scans `grid` (ascending) up to its first diverging rate, then bisects that bracket in log
/// space until `first_diverging / largest_stable <= ratio`. Where the grid has no bracket (all
/// stable, or its smallest rate already diverges) it steps by decades beyond that end, up to
/// [`EXTRA_DECADES`]. Assumes divergence is monotone in the rate between the bracket's ends
/// (the search reports what it saw, nothing more).
pub fn bisect<E>(
    grid: &[f64],
    ratio: f64,
    mut diverges: impl FnMut(f64) -> Result<bool, E>,
) -> Result<StableSearch, E> {
    let mut search = StableSearch {
        largest_stable: None,
        first_diverging: None,
        runs: 0,
    };
    for &lr in grid {
        search.runs += 1;
        if diverges(lr)? {
            search.first_diverging = Some(lr);
            break;
        }
        search.largest_stable = Some(lr);
    }
    for decade in 1..=EXTRA_DECADES {
        let lr = match (search.largest_stable, search.first_diverging) {
            (Some(stable), None) => stable * 10f64.powi(decade.min(1)),
            (None, Some(diverging)) => diverging / 10f64.powi(decade.min(1)),
            _ => break,
        };
        search.runs += 1;
        if diverges(lr)? {
            search.first_diverging = Some(lr);
        } else {
            search.largest_stable = Some(lr);
        }
    }
    while let (Some(lo), Some(hi)) = (search.largest_stable, search.first_diverging) {
        if hi / lo <= ratio {
            break;
        }
        let mid = (lo * hi).sqrt();
        search.runs += 1;
        if diverges(mid)? {
            search.first_diverging = Some(mid);
        } else {
            search.largest_stable = Some(mid);
        }
    }
    Ok(search)
}

/// One model's measured stable step beside the prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StableStepRow {
    pub defense: String,
    pub largest_stable_lr: Option<f64>,
    pub first_diverging_lr: Option<f64>,
    pub runs: usize,
    /// sigma_1 of the loss Hessian at the released (defended) weights, on one attack batch.
    pub sigma_1: f64,
    pub predicted_lr: f64,
    /// largest_stable_lr / predicted_lr.
    pub measured_over_predicted: Option<f64>,
    /// Stable above 2 / sigma_1.
    pub catapult: bool,
}

impl StableStepRow {
    pub fn new(defense: String, search: StableSearch, sigma_1: f64) -> Self {
        let predicted_lr = 2.0 / sigma_1;
        let ratio = search.largest_stable.map(|lr| lr / predicted_lr);
        Self {
            defense,
            largest_stable_lr: search.largest_stable,
            first_diverging_lr: search.first_diverging,
            runs: search.runs,
            sigma_1,
            predicted_lr,
            measured_over_predicted: ratio,
            catapult: ratio.is_some_and(|r| r > 1.0),
        }
    }

    pub fn summary(&self) -> String {
        let lr = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3e}"));
        format!(
            "{:<34} stable up to {} (diverges at {}; {} runs); sigma_1 {:.3e}, 2/sigma_1 {:.3e}; measured/predicted {}{}",
            self.defense,
            lr(self.largest_stable_lr),
            lr(self.first_diverging_lr),
            self.runs,
            self.sigma_1,
            self.predicted_lr,
            self.measured_over_predicted
                .map_or("-".to_string(), |r| format!("{r:.2}")),
            if self.catapult {
                " (catapult: stable above 2/sigma_1)"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_brackets_a_known_threshold_to_the_ratio() {
        let threshold = 3.7e-3;
        let grid: Vec<f64> = (0..8).map(|i| 10f64.powi(i - 6)).collect();
        let search = bisect::<()>(&grid, 1.1, |lr| Ok(lr > threshold)).unwrap();
        let (lo, hi) = (
            search.largest_stable.unwrap(),
            search.first_diverging.unwrap(),
        );
        assert!(lo <= threshold && threshold < hi, "{lo} {hi}");
        assert!(hi / lo <= 1.1);
        // The scan stops at the first diverging grid point (1e-2: the 5th), then bisects.
        assert!(search.runs > 5 && search.runs < 5 + 10, "{}", search.runs);
    }

    #[test]
    fn a_grid_that_never_diverges_or_always_does_is_searched_beyond_its_ends() {
        let grid = [1e-3, 1e-2, 1e-1];
        let never = bisect::<()>(&grid, 1.1, |_| Ok(false)).unwrap();
        let top = 1e-1 * 10f64.powi(EXTRA_DECADES);
        assert_eq!(never.first_diverging, None);
        assert!((never.largest_stable.unwrap() / top - 1.0).abs() < 1e-12);
        assert_eq!(never.runs, 3 + EXTRA_DECADES as usize);
        let always = bisect::<()>(&grid, 1.1, |_| Ok(true)).unwrap();
        assert_eq!(always.largest_stable, None);
        let bottom = 1e-3 / 10f64.powi(EXTRA_DECADES);
        assert!((always.first_diverging.unwrap() / bottom - 1.0).abs() < 1e-12);
    }

    #[test]
    fn beyond_the_grid_the_search_finds_the_bracket_and_bisects_it() {
        let grid = [1e-3, 1e-2];
        let threshold = 0.42;
        let search = bisect::<()>(&grid, 1.1, |lr| Ok(lr > threshold)).unwrap();
        let (lo, hi) = (
            search.largest_stable.unwrap(),
            search.first_diverging.unwrap(),
        );
        assert!(
            lo <= threshold && threshold < hi && hi / lo <= 1.1,
            "{lo} {hi}"
        );
    }
}

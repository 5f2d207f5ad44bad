//! The one tolerance type every numerical comparison uses: `|actual - expected| <= abs + rel *
//! |expected|` elementwise, with constructors that say where the error comes from.

use std::fmt;

/// f32's unit round-off, 2^-24.
pub const F32_UNIT_ROUNDOFF: f64 = 5.960_464_477_539_063e-8;

/// Headroom over the typical error: a check over a million values sees the tails of the error
/// distribution, not only its typical size.
const SAFETY: f64 = 8.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// How well two arrays agreed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    pub max_abs_error: f64,
    /// The largest `error / allowed` over all elements: below 1 means within tolerance.
    pub worst_ratio: f64,
}

/// Why two arrays disagree.
#[derive(Clone, Debug, PartialEq)]
pub enum Disagreement {
    Length {
        actual: usize,
        expected: usize,
    },
    Values {
        violations: usize,
        len: usize,
        index: usize,
        actual: f64,
        expected: f64,
        allowed: f64,
    },
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disagreement::Length { actual, expected } => {
                write!(
                    f,
                    "lengths differ: {actual} values against {expected} expected"
                )
            }
            Disagreement::Values {
                violations,
                len,
                index,
                actual,
                expected,
                allowed,
            } => write!(
                f,
                "{violations} of {len} values out of tolerance; worst at index {index}: {actual:e} against {expected:e} (error {:e}, allowed {allowed:e})",
                (actual - expected).abs()
            ),
        }
    }
}

impl std::error::Error for Disagreement {}

/// Root mean square of the finite values: the typical magnitude a sum's error scales with.
pub fn rms(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return 0.0;
    }
    (finite.iter().map(|v| v * v).sum::<f64>() / finite.len() as f64).sqrt()
}

impl Tolerance {
    pub const fn new(abs: f64, rel: f64) -> Self {
        Self { abs, rel }
    }

    /// Bit-exact agreement.
    pub const EXACT: Tolerance = Tolerance::new(0.0, 0.0);

    /// One rounding to f32 (a copy, a transpose, a relu of an f64 value).
    pub const fn f32_rounding() -> Self {
        Self::new(0.0, F32_UNIT_ROUNDOFF)
    }

    /// A few f32 operations per element with no long sum (add, mul, axpy, scale).
    pub fn f32_elementwise(operations: usize) -> Self {
        Self::new(0.0, SAFETY * operations.max(1) as f64 * F32_UNIT_ROUNDOFF)
    }

    /// Transcendental functions in f32 (exp, log, tanh): GPU drivers guarantee a few ulp
    /// relative error away from zero and an absolute error near it (Vulkan and WGSL precision
    /// rules), which `abs` covers for results of order `scale`.
    pub fn f32_transcendental(scale: f64) -> Self {
        Self::new(
            SAFETY * 16.0 * F32_UNIT_ROUNDOFF * scale,
            SAFETY * 16.0 * F32_UNIT_ROUNDOFF,
        )
    }

    /// A K-term sum or dot product in f32. Rounding errors of a sum grow like sqrt(K) units of
    /// round-off of its partial sums; `scale` is the typical size of the results (use [`rms`] of
    /// the expected values), so results that cancel to near zero get an absolute allowance.
    pub fn f32_sum(k: usize, scale: f64) -> Self {
        let relative = SAFETY * (k.max(1) as f64).sqrt() * F32_UNIT_ROUNDOFF;
        Self::new(relative * scale, relative)
    }

    /// The sum of two tolerances (errors of successive steps add up).
    pub fn plus(self, other: Tolerance) -> Self {
        Self::new(self.abs + other.abs, self.rel + other.rel)
    }

    /// The looser of two tolerances, term by term (values of two kinds checked together).
    pub fn looser(self, other: Tolerance) -> Self {
        Self::new(self.abs.max(other.abs), self.rel.max(other.rel))
    }

    /// The error allowed for an expected value.
    pub fn allowed(&self, expected: f64) -> f64 {
        self.abs + self.rel * expected.abs()
    }

    /// Compares elementwise. NaN agrees only with NaN; an infinity only with itself.
    pub fn check(&self, actual: &[f64], expected: &[f64]) -> Result<Agreement, Disagreement> {
        if actual.len() != expected.len() {
            return Err(Disagreement::Length {
                actual: actual.len(),
                expected: expected.len(),
            });
        }
        let mut agreement = Agreement {
            max_abs_error: 0.0,
            worst_ratio: 0.0,
        };
        let mut violations = 0;
        let mut worst: Option<(usize, f64)> = None;
        for (index, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            let (error, allowed) = if a.is_nan() && e.is_nan() || (a.is_infinite() && a == e) {
                (0.0, 1.0)
            } else if !a.is_finite() || !e.is_finite() {
                // A non-finite value agrees only with itself (handled above).
                (f64::INFINITY, 0.0)
            } else {
                ((a - e).abs(), self.allowed(e))
            };
            // NaN errors (one side NaN) count as infinitely bad.
            let ratio = if error.is_nan() {
                f64::INFINITY
            } else if error == 0.0 {
                0.0
            } else {
                error / allowed
            };
            if error.is_nan() || error > allowed {
                violations += 1;
            }
            if error.is_finite() {
                agreement.max_abs_error = agreement.max_abs_error.max(error);
            }
            if worst.is_none_or(|(_, r)| ratio > r) {
                worst = Some((index, ratio));
            }
            agreement.worst_ratio = agreement.worst_ratio.max(ratio);
        }
        if violations > 0 {
            let index = worst.map_or(0, |(i, _)| i);
            return Err(Disagreement::Values {
                violations,
                len: actual.len(),
                index,
                actual: actual[index],
                expected: expected[index],
                allowed: self.allowed(expected[index]),
            });
        }
        Ok(agreement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_within_and_rejects_outside() {
        let tol = Tolerance::new(0.1, 0.0);
        assert!(tol.check(&[1.05], &[1.0]).is_ok());
        let err = tol.check(&[1.0, 1.2], &[1.0, 1.0]).unwrap_err();
        assert!(
            matches!(
                err,
                Disagreement::Values {
                    violations: 1,
                    index: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn relative_part_scales_with_expected() {
        let tol = Tolerance::new(0.0, 1e-3);
        assert!(tol.check(&[1000.5], &[1000.0]).is_ok());
        assert!(tol.check(&[1.5], &[1.0]).is_err());
    }

    #[test]
    fn nan_matches_only_nan() {
        let tol = Tolerance::new(1.0, 1.0);
        assert!(tol.check(&[f64::NAN], &[f64::NAN]).is_ok());
        assert!(tol.check(&[f64::NAN], &[0.0]).is_err());
        assert!(tol.check(&[0.0], &[f64::NAN]).is_err());
        assert!(tol.check(&[f64::INFINITY], &[f64::INFINITY]).is_ok());
        assert!(tol.check(&[f64::INFINITY], &[f64::NEG_INFINITY]).is_err());
    }

    #[test]
    fn length_mismatch_is_reported() {
        assert_eq!(
            Tolerance::EXACT.check(&[1.0], &[1.0, 2.0]),
            Err(Disagreement::Length {
                actual: 1,
                expected: 2
            })
        );
    }

    #[test]
    fn sum_tolerance_grows_with_sqrt_k() {
        let small = Tolerance::f32_sum(16, 1.0);
        let large = Tolerance::f32_sum(1600, 1.0);
        assert!((large.rel / small.rel - 10.0).abs() < 1e-12);
    }
}

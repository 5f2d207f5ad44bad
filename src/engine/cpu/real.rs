//! The scalar types the CPU engine runs in: f64 (the ground truth) and f32 (the fallback and the
//! CPU performance line). `faer` needs its own field trait; `num_traits::Float` gives the math.

use std::fmt::Debug;

pub trait CpuReal:
    num_traits::Float
    + faer::traits::ComplexField
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::ops::SubAssign
    + Debug
    + Default
    + Send
    + Sync
    + 'static
{
    /// `cpu-f64` or `cpu-f32`.
    const ENGINE_NAME: &'static str;
    /// Whether runs flush subnormals to zero, as GPUs do (f32 only; see `flush.rs`).
    const FLUSH_SUBNORMALS: bool;

    fn of_f64(value: f64) -> Self;
    fn as_f64(self) -> f64;
    /// The complementary error function, 1 - erf(x), accurate in the tails (libm's).
    fn erfc(self) -> Self;
}

impl CpuReal for f64 {
    const ENGINE_NAME: &'static str = "cpu-f64";
    const FLUSH_SUBNORMALS: bool = false;

    fn of_f64(value: f64) -> Self {
        value
    }

    fn as_f64(self) -> f64 {
        self
    }

    fn erfc(self) -> Self {
        libm::erfc(self)
    }
}

impl CpuReal for f32 {
    const ENGINE_NAME: &'static str = "cpu-f32";
    const FLUSH_SUBNORMALS: bool = true;

    fn of_f64(value: f64) -> Self {
        value as f32
    }

    fn as_f64(self) -> f64 {
        self as f64
    }

    fn erfc(self) -> Self {
        libm::erfcf(self)
    }
}

//! Dense linear algebra above the kernels: the thin SVD, in f64 on the host (faer) or as a
//! one-sided Jacobi SVD on any engine (WGSL on the GPU, for runs that stay on the GPU).

mod matrix;
mod svd;

pub use matrix::Matrix;

pub use svd::{JACOBI_SWEEPS, Svd, faer_svd, jacobi_svd};

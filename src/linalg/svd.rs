//! The thin SVD `A = U diag(s) V^T` with singular values in non-increasing order.

use super::Matrix;
use crate::engine::{Allocation, Engine, EngineError, Recording};

#[derive(Clone, Debug, PartialEq)]
pub struct Svd {
    /// m x r, orthonormal columns.
    pub u: Matrix,
    /// r singular values, largest first.
    pub s: Vec<f64>,
    /// n x r, orthonormal columns.
    pub v: Matrix,
}

impl Svd {
    /// `U diag(s) V^T` in f64.
    pub fn reconstruct(&self) -> Matrix {
        let (m, n, r) = (self.u.rows, self.v.rows, self.s.len());
        let values = (0..m * n)
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                (0..r)
                    .map(|k| self.u.values[i * r + k] * self.s[k] * self.v.values[j * r + k])
                    .sum()
            })
            .collect();
        Matrix::new(m, n, values)
    }
}

/// Columns of `m` (rows x r) reordered by `order`.
fn select_columns(m: &Matrix, order: &[usize]) -> Matrix {
    let r = m.cols;
    let values = (0..m.rows)
        .flat_map(|i| order.iter().map(move |&k| m.values[i * r + k]))
        .collect();
    Matrix::new(m.rows, order.len(), values)
}

fn transpose(m: &Matrix) -> Matrix {
    let values = (0..m.cols)
        .flat_map(|j| (0..m.rows).map(move |i| m.values[i * m.cols + j]))
        .collect();
    Matrix::new(m.cols, m.rows, values)
}

/// Sorts the singular triplets by value, largest first.
fn sorted(u: Matrix, s: Vec<f64>, v: Matrix) -> Svd {
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    Svd {
        u: select_columns(&u, &order),
        s: order.iter().map(|&k| s[k]).collect(),
        v: select_columns(&v, &order),
    }
}

/// The thin SVD in f64 through faer.
pub fn faer_svd(a: &Matrix) -> Result<Svd, String> {
    let svd = a.to_faer().thin_svd().map_err(|e| format!("{e:?}"))?;
    let s = svd.S().column_vector();
    Ok(sorted(
        Matrix::from_faer(svd.U()),
        (0..s.nrows()).map(|i| s[i]).collect(),
        Matrix::from_faer(svd.V()),
    ))
}

/// Sweeps of the Jacobi SVD: quadratic convergence makes 12 ample for f32 at the sizes of the
/// models here (the parity test checks the result against faer).
pub const JACOBI_SWEEPS: usize = 12;

/// The thin SVD by one-sided Jacobi rotations on `engine` (see shaders/jacobi.wgsl). A matrix
/// with more columns than rows is factored through its transpose, so the rotated columns are
/// always the shorter side.
pub fn jacobi_svd(engine: &mut dyn Engine, a: &Matrix, sweeps: usize) -> Result<Svd, EngineError> {
    let wide = a.rows < a.cols;
    let b = if wide { transpose(a) } else { a.clone() };
    let (len, columns) = (b.rows, b.cols);
    // Row j of `rows` is column j of B.
    let mut owner = Allocation::new(engine);
    let rows = owner.tensor_from(engine, "jacobi.rows", columns, len, &transpose(&b).values)?;
    let identity = Matrix::identity(columns);
    let basis = owner.tensor_from(engine, "jacobi.basis", columns, columns, &identity.values)?;
    let players = columns + columns % 2;
    let mut rec = Recording::new();
    for _ in 0..sweeps {
        for round in 0..players.saturating_sub(1) {
            rec.jacobi_round(rows, basis, round as u32)?;
        }
    }
    engine.run(&rec)?;
    let values = engine.read(&[rows, basis])?;
    let (w, vt) = (&values[0], &values[1]);
    let s: Vec<f64> = (0..columns)
        .map(|j| {
            w[j * len..(j + 1) * len]
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    // U's column j is row j of W over its norm; V's column j is row j of V^T.
    let u_values = (0..len)
        .flat_map(|i| {
            let s = &s;
            (0..columns).map(move |j| {
                if s[j] > 0.0 {
                    w[j * len + i] / s[j]
                } else {
                    0.0
                }
            })
        })
        .collect();
    let v_values = (0..columns)
        .flat_map(|i| (0..columns).map(move |j| vt[j * columns + i]))
        .collect();
    let svd = sorted(
        Matrix::new(len, columns, u_values),
        s,
        Matrix::new(columns, columns, v_values),
    );
    // A = B^T = V S U^T when B was the transpose.
    Ok(if wide {
        Svd {
            u: svd.v,
            s: svd.s,
            v: svd.u,
        }
    } else {
        svd
    })
}

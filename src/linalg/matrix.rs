//! A row-major f64 matrix on the host: model weights, the defence's factors, SVD results.

/// A row-major f64 matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f64>,
}

impl Matrix {
    pub fn new(rows: usize, cols: usize, values: Vec<f64>) -> Self {
        assert_eq!(values.len(), rows * cols, "matrix values for {rows}x{cols}");
        Self { rows, cols, values }
    }

    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::new(rows, cols, vec![0.0; rows * cols])
    }

    pub fn identity(n: usize) -> Self {
        let mut m = Self::zeros(n, n);
        (0..n).for_each(|i| m.values[i * n + i] = 1.0);
        m
    }

    pub fn to_faer(&self) -> faer::Mat<f64> {
        faer::Mat::from_fn(self.rows, self.cols, |i, j| self.values[i * self.cols + j])
    }

    pub fn from_faer(m: faer::MatRef<'_, f64>) -> Self {
        let (rows, cols) = (m.nrows(), m.ncols());
        let mut values = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                values.push(m[(i, j)]);
            }
        }
        Self::new(rows, cols, values)
    }

    /// `self * other` in f64.
    pub fn matmul(&self, other: &Matrix) -> Matrix {
        Matrix::from_faer((self.to_faer() * other.to_faer()).as_ref())
    }
}

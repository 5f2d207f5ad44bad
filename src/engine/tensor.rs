//! Tensor handles: every tensor is a row-major matrix; a vector is a matrix with one row or column.

/// A handle to a tensor owned by an engine. It is `Copy`: the engine owns the storage and frees it
/// when asked (`Engine::free`); a handle used after that is refused with `UnknownTensor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tensor {
    id: u32,
    rows: u32,
    cols: u32,
}

impl Tensor {
    /// Made by engines only, so a handle's shape always matches its storage.
    pub(crate) fn new(id: u32, rows: usize, cols: usize) -> Self {
        Self {
            id,
            rows: rows as u32,
            cols: cols as u32,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn rows(&self) -> usize {
        self.rows as usize
    }

    pub fn cols(&self) -> usize {
        self.cols as usize
    }

    pub fn len(&self) -> usize {
        self.rows() * self.cols()
    }

    /// Tensors are never empty (engines refuse zero-sized allocations); kept for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.rows(), self.cols())
    }
}

impl std::fmt::Display for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} ({}x{})", self.id, self.rows, self.cols)
    }
}

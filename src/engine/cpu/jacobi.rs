//! CPU twin of shaders/jacobi.wgsl: one round of the parallel one-sided Jacobi SVD, the same
//! pairing, the same rotation, in the engine's precision.

use super::CpuReal;

/// The column paired with `position` in `round` of a tournament of `players` (circle method).
fn player(position: usize, round: usize, players: usize) -> usize {
    if position == 0 {
        0
    } else {
        1 + (position - 1 + round) % (players - 1)
    }
}

pub fn jacobi_round<T: CpuReal>(
    rows: &mut [T],
    basis: &mut [T],
    columns: usize,
    row_len: usize,
    round: usize,
) {
    let players = columns + columns % 2;
    for pair in 0..players / 2 {
        let (a, b) = (
            player(pair, round, players),
            player(players - 1 - pair, round, players),
        );
        let (p, q) = (a.min(b), a.max(b));
        if q >= columns {
            continue;
        }
        let (mut alpha, mut beta, mut gamma) = (T::zero(), T::zero(), T::zero());
        for t in 0..row_len {
            let (x, y) = (rows[p * row_len + t], rows[q * row_len + t]);
            alpha += x * x;
            beta += y * y;
            gamma += x * y;
        }
        if gamma.abs() <= T::epsilon() * (alpha * beta).sqrt() {
            continue;
        }
        let two = T::one() + T::one();
        let zeta = (beta - alpha) / (two * gamma);
        let sign = if zeta >= T::zero() {
            T::one()
        } else {
            -T::one()
        };
        let t = sign / (zeta.abs() + (T::one() + zeta * zeta).sqrt());
        let c = T::one() / (T::one() + t * t).sqrt();
        let s = c * t;
        for (data, len) in [(&mut *rows, row_len), (&mut *basis, columns)] {
            for i in 0..len {
                let (x, y) = (data[p * len + i], data[q * len + i]);
                data[p * len + i] = c * x - s * y;
                data[q * len + i] = s * x + c * y;
            }
        }
    }
}

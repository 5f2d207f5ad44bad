//! CPU twins of shaders/random.wgsl: counter-based random numbers in u32 arithmetic (WGSL has no
//! u64), so every engine draws the same bits for the same `(seed, stream, index)`.
//!
//! The mixing function is the PCG hash (the output permutation of a PCG LCG step, Jarzynski and
//! Olano 2020, "Hash Functions for GPU Rendering"), a bijection of u32. The 64-bit seed and
//! stream are folded into one 32-bit key by four chained rounds over their 32-bit halves, and
//! element `i` gets `pcg(pcg(i) ^ key)`.

use super::CpuReal;

/// One round of the PCG hash: an LCG step, then PCG's random xorshift and multiply output.
pub fn pcg_hash(value: u32) -> u32 {
    let state = value.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The low and high 32-bit words of a u64, as the params uniform carries them.
pub fn split_u64(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}

/// The 32-bit key of `(seed, stream)`: the seed's low and high words, then the stream's, each
/// xored into the running hash and mixed by one round.
pub fn stream_key(seed: u64, stream: u64) -> u32 {
    let (seed_lo, seed_hi) = split_u64(seed);
    let (stream_lo, stream_hi) = split_u64(stream);
    let mut h = pcg_hash(seed_lo);
    h = pcg_hash(h ^ seed_hi);
    h = pcg_hash(h ^ stream_lo);
    pcg_hash(h ^ stream_hi)
}

/// The 32 random bits of element `index` under `key`.
pub fn bits_at(key: u32, index: u32) -> u32 {
    pcg_hash(pcg_hash(index) ^ key)
}

/// The 32 random bits of `(seed, stream, index)`.
pub fn random_bits(seed: u64, stream: u64, index: u32) -> u32 {
    bits_at(stream_key(seed, stream), index)
}

/// 2^-24: one step of the 24-bit uniform.
const UNIFORM_STEP: f64 = 1.0 / 16_777_216.0;

/// The uniform in [0, 1) from the top 24 bits: `(bits >> 8) 2^-24`, exact in f32 and f64.
pub fn uniform_of_bits(bits: u32) -> f64 {
    f64::from(bits >> 8) * UNIFORM_STEP
}

/// The uniform in [0, 1) of `(seed, stream, index)`.
pub fn uniform(seed: u64, stream: u64, index: u32) -> f64 {
    uniform_of_bits(random_bits(seed, stream, index))
}

/// +1 where bit 31 of the bits is clear, -1 where it is set.
pub fn rademacher_of_bits(bits: u32) -> f64 {
    if bits >> 31 == 0 { 1.0 } else { -1.0 }
}

/// `out[i] = rademacher_of_bits(random_bits(seed, stream, i))`.
pub fn rademacher<T: CpuReal>(seed: u64, stream: u64, out: &mut [T]) {
    let key = stream_key(seed, stream);
    for (i, o) in out.iter_mut().enumerate() {
        *o = T::of_f64(rademacher_of_bits(bits_at(key, i as u32)));
    }
}

/// The invocations of the shader's workgroup per row, and so the number of chunks a row's sum
/// is split into.
pub const SAMPLE_CHUNKS: usize = 64;

/// One class per row of `logits` (`rows x cols`) drawn from its softmax by the inverse CDF, in
/// the shader's order: `e_j = exp(l_j - max)`; the row is cut into 64 chunks of
/// `ceil(cols / 64)` classes; the chunk sums `S_t` are summed in order into the prefixes `P_t`
/// and the total `P_64`; the running sum at class j of chunk t is `P_t + (sum of e over the
/// chunk up to j)`. The label is the first j whose running sum exceeds `u * total`, u the
/// uniform of `(seed, stream, row)`. A row whose total is not in [1/2, 2 cols] (a NaN or +inf
/// logit, or no finite one) gets NaN.
pub fn sample_categorical<T: CpuReal>(
    logits: &[T],
    cols: usize,
    seed: u64,
    stream: u64,
    labels: &mut [T],
) {
    let key = stream_key(seed, stream);
    let chunk = cols.div_ceil(SAMPLE_CHUNKS);
    for (r, (row, label)) in logits.chunks(cols).zip(labels.iter_mut()).enumerate() {
        let max = row.iter().fold(T::neg_infinity(), |acc, &v| acc.max(v));
        let e = |j: usize| (row[j] - max).exp();
        let chunk_range = |t: usize| (t * chunk).min(cols)..((t + 1) * chunk).min(cols);
        let sums: Vec<T> = (0..SAMPLE_CHUNKS)
            .map(|t| chunk_range(t).fold(T::zero(), |acc, j| acc + e(j)))
            .collect();
        let total = sums.iter().fold(T::zero(), |acc, &s| acc + s);
        let valid = total >= T::of_f64(0.5) && total <= T::of_f64(2.0 * cols as f64);
        if !valid {
            *label = T::nan();
            continue;
        }
        let target = T::of_f64(uniform_of_bits(bits_at(key, r as u32))) * total;
        let mut found = None;
        let mut prefix = T::zero();
        for (t, &sum) in sums.iter().enumerate() {
            let next = prefix + sum;
            if target < next {
                let mut partial = T::zero();
                for j in chunk_range(t) {
                    partial += e(j);
                    if target < prefix + partial {
                        found = Some(j);
                        break;
                    }
                }
                break;
            }
            prefix = next;
        }
        // Unreachable with correctly rounded arithmetic (u <= 1 - 2^-24 keeps u * total below
        // total); should it happen, the last class of positive probability.
        let j = found.unwrap_or_else(|| (0..cols).rev().find(|&j| e(j) > T::zero()).unwrap_or(0));
        *label = T::of_f64(j as f64);
    }
}

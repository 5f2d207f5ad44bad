//! Seeded, stratified train/test splits: each class keeps its share in both parts.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Indices of a train and a test part, with `test_fraction` of every class (rounded) in the test
/// part. The same labels, fraction and seed give the same split on every platform.
pub fn stratified_split(
    labels: &[usize],
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        let test_count = (members.len() as f64 * test_fraction).round() as usize;
        test.extend_from_slice(&members[..test_count]);
        train.extend_from_slice(&members[test_count..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

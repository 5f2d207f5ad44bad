//! Seeded teacher-student regression, where the theory is exact: inputs with unit variance and
//! targets from a random deep linear teacher (a product of random matrices).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `inputs` is `samples x features`, `targets` is `samples x outputs`, both row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Regression {
    pub inputs: Vec<f64>,
    pub targets: Vec<f64>,
    pub samples: usize,
    pub features: usize,
    pub outputs: usize,
}

/// `teacher_widths` run from the features to the outputs (`[8, 6, 4]`: a two-layer teacher).
pub fn teacher_student(samples: usize, teacher_widths: &[usize], seed: u64) -> Regression {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let features = teacher_widths[0];
    let outputs = teacher_widths[teacher_widths.len() - 1];
    // Uniform on [-sqrt 3, sqrt 3] has unit variance.
    let bound = 3f64.sqrt();
    let inputs: Vec<f64> = (0..samples * features)
        .map(|_| rng.random_range(-bound..=bound))
        .collect();
    let mut activations = inputs.clone();
    for pair in teacher_widths.windows(2) {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let scale = (3.0 / fan_in as f64).sqrt();
        let weight: Vec<f64> = (0..fan_out * fan_in)
            .map(|_| rng.random_range(-scale..=scale))
            .collect();
        activations = (0..samples)
            .flat_map(|s| {
                let row = &activations[s * fan_in..(s + 1) * fan_in];
                (0..fan_out)
                    .map(|o| {
                        (0..fan_in)
                            .map(|i| weight[o * fan_in + i] * row[i])
                            .sum::<f64>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    Regression {
        inputs,
        targets: activations,
        samples,
        features,
        outputs,
    }
}

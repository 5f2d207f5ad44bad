//! The adaptive attacker of PAPER.md section 5: one who knows the construction rewrites the
//! released model before fine-tuning, restoring fast convergence at a cost in parameters.
//! Each attack is a function from a host model to a host model (in f64, so the rewrite itself
//! loses nothing), plus the parameter groups it trains:
//!
//! - `fusion`: every layer's chain `C W~` becomes one matrix (the undefended parameter count);
//! - `injection`: `C` and `W~` frozen, a trainable identity `m x m` factor after them;
//! - `factorisation[:p]`: `W~ = U S V^T` becomes `p` balanced factors `S^(1/p) V^T`,
//!   `S^(1/p)` (p - 2 times), `U S^(1/p)`, each with top singular value `sigma_1(W~)^(1/p)`
//!   (about `alpha^(1/p)` times the undefended one's); without `:p`, p is chosen from alpha as
//!   the smallest with `alpha^(1/p) <= 10`;
//! - `lora-weight`, `lora-compensation`, `lora-both`, `lora-fused` `[:r]`: rank-r adapters
//!   (A seeded, B zero, so the function is unchanged) on `W~` (every layer's weight), on `C`,
//!   on both, or on the fused matrix; only the adapters train.

use crate::linalg::{Matrix, faer_svd};
use crate::model::{FactorOf, FactorRole, HostLayer, HostModel, LoraOf, ParamGroup, Trainable};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// LoRA's rank where the name gives none.
pub const DEFAULT_LORA_RANK: usize = 8;

/// The largest top-singular-value ratio per factor when p is chosen from alpha.
const AUTO_FACTOR_GROWTH: f64 = 10.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraPlacement {
    /// Every layer's stored weight (`W~` where defended, `W` elsewhere); `C` frozen.
    Weight,
    /// Every defended layer's compensation `C`; `W~` frozen.
    Compensation,
    /// Both of the above.
    Both,
    /// The fused matrix `C W~` of every layer.
    Fused,
}

impl LoraPlacement {
    const ALL: [(LoraPlacement, &'static str); 4] = [
        (LoraPlacement::Weight, "weight"),
        (LoraPlacement::Compensation, "compensation"),
        (LoraPlacement::Both, "both"),
        (LoraPlacement::Fused, "fused"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("", |(_, n)| n)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdaptiveAttack {
    Fusion,
    Injection,
    /// `factors: None` chooses p from alpha.
    Factorisation {
        factors: Option<u16>,
    },
    Lora {
        placement: LoraPlacement,
        rank: usize,
    },
}

impl AdaptiveAttack {
    /// Whether the attack needs SpecDef's compensation layers to act on (all but LoRA on the
    /// weights, which is also the plain LoRA baseline on an undefended model).
    pub fn needs_defended_layers(self) -> bool {
        !matches!(
            self,
            AdaptiveAttack::Lora {
                placement: LoraPlacement::Weight,
                ..
            }
        )
    }

    /// The number of factors for a defence of this alpha (1 for attacks that do not factorise).
    pub fn factor_count(self, alpha: f64) -> u16 {
        match self {
            AdaptiveAttack::Factorisation { factors: Some(p) } => p,
            AdaptiveAttack::Factorisation { factors: None } => {
                let p = (alpha.max(1.0).log10() / AUTO_FACTOR_GROWTH.log10()).ceil();
                p.clamp(2.0, 64.0) as u16
            }
            _ => 1,
        }
    }

    /// How records and tables name the attack on a defence of this alpha: `fusion`,
    /// `factorisation p=4`, `lora-weight r=8`.
    pub fn describe(self, alpha: f64) -> String {
        match self {
            AdaptiveAttack::Fusion => "fusion".to_string(),
            AdaptiveAttack::Injection => "injection".to_string(),
            AdaptiveAttack::Factorisation { .. } => {
                format!("factorisation p={}", self.factor_count(alpha))
            }
            AdaptiveAttack::Lora { placement, rank } => {
                format!("lora-{} r={rank}", placement.name())
            }
        }
    }

    /// The groups that train: the scenario's for fusion and factorisation (full fine-tuning of
    /// the rewritten model), the injected factors and biases for injection, the adapters alone
    /// for LoRA.
    pub fn trainable(self, scenario: Trainable) -> Trainable {
        match self {
            AdaptiveAttack::Fusion | AdaptiveAttack::Factorisation { .. } => scenario,
            AdaptiveAttack::Injection => {
                Trainable::only(&[ParamGroup::Injected, ParamGroup::Biases])
            }
            AdaptiveAttack::Lora { .. } => Trainable::only(&[ParamGroup::Lora]),
        }
    }

    /// The rewritten model. `alpha` is the defence's (it chooses p); `seed` LoRA's A.
    pub fn apply(self, model: &HostModel, alpha: f64, seed: u64) -> Result<HostModel, String> {
        let defended = model.defended_layers();
        if self.needs_defended_layers() && defended.is_empty() {
            return Err(format!(
                "the adaptive attack {self} rewrites SpecDef's compensated layers, and this model \
                 has none"
            ));
        }
        let mut out = model.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (i, layer) in out.layers.iter_mut().enumerate() {
            let is_defended = defended.contains(&i);
            match self {
                AdaptiveAttack::Fusion => fuse(layer),
                AdaptiveAttack::Injection if is_defended => {
                    let outputs = layer.bias.cols;
                    layer.factors.push(plain_factor(
                        FactorRole::Injected,
                        Matrix::identity(outputs),
                    ));
                }
                AdaptiveAttack::Factorisation { .. } if is_defended => {
                    factorise(layer, self.factor_count(alpha))
                        .map_err(|e| format!("factorising layer {i}: {e}"))?;
                }
                AdaptiveAttack::Lora { placement, rank } => {
                    if placement == LoraPlacement::Fused {
                        fuse(layer);
                    }
                    let roles: &[FactorRole] = match placement {
                        LoraPlacement::Weight | LoraPlacement::Fused => &[FactorRole::Weight],
                        LoraPlacement::Compensation => &[FactorRole::Compensation],
                        LoraPlacement::Both => &[FactorRole::Weight, FactorRole::Compensation],
                    };
                    for factor in layer.factors.iter_mut() {
                        if roles.contains(&factor.role) {
                            factor.lora = Some(adapter(&factor.matrix, rank, &mut rng));
                        }
                    }
                }
                _ => {}
            }
        }
        out.validate()?;
        check_function_kept(model, &out).map_err(|e| format!("the rewrite {self}: {e}"))?;
        Ok(out)
    }
}

/// Every rewrite keeps the function: each layer's effective weight within
/// `F64_COMPENSATION_BOUND` (relative to its largest entry) of the model's, so a rewrite that
/// lost a factor is refused instead of attacked and reported.
fn check_function_kept(before: &HostModel, after: &HostModel) -> Result<(), String> {
    let bound = crate::defense::F64_COMPENSATION_BOUND;
    for (i, (was, now)) in before.layers.iter().zip(&after.layers).enumerate() {
        let (was, now) = (was.effective_weight(), now.effective_weight());
        let scale = was.values.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let worst = (was.values.iter().zip(&now.values))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f64, |a, d| {
                if a.is_nan() || d.is_nan() {
                    f64::NAN
                } else {
                    a.max(d)
                }
            });
        let error = worst / scale.max(f64::MIN_POSITIVE);
        if error.is_nan() || error > bound {
            return Err(format!(
                "layer {i}'s function changed by {error:.1e} (relative), more than {bound:.0e}"
            ));
        }
    }
    Ok(())
}

fn plain_factor(role: FactorRole, matrix: Matrix) -> FactorOf<Matrix> {
    FactorOf {
        role,
        matrix,
        lora: None,
    }
}

/// The layer's whole chain (LoRA branches included) as one plain weight, in f64.
fn fuse(layer: &mut HostLayer) {
    if !layer.is_plain() {
        layer.factors = vec![plain_factor(FactorRole::Weight, layer.effective_weight())];
    }
}

/// `W~` (the weight factor) replaced by p balanced factors of its thin SVD, input side first.
fn factorise(layer: &mut HostLayer, p: u16) -> Result<(), String> {
    if p < 2 {
        return Err(format!("a factorisation has at least 2 factors, not {p}"));
    }
    let at = (layer.factors.iter())
        .position(|f| f.role == FactorRole::Weight && f.lora.is_none())
        .ok_or("no weight factor without an adapter")?;
    let svd = faer_svd(&layer.factors[at].matrix)?;
    let (m, n, r) = (svd.u.rows, svd.v.rows, svd.s.len());
    let root: Vec<f64> = svd.s.iter().map(|s| s.powf(1.0 / f64::from(p))).collect();
    let role = |index: u16| FactorRole::Factor { index, of: p };
    let mut factors = Vec::with_capacity(usize::from(p));
    // S^(1/p) V^T (r x n), input side.
    let first = (0..r * n).map(|idx| root[idx / n] * svd.v.values[(idx % n) * r + idx / n]);
    factors.push(plain_factor(role(1), Matrix::new(r, n, first.collect())));
    for index in 2..p {
        let mut middle = Matrix::zeros(r, r);
        for (k, s) in root.iter().enumerate() {
            middle.values[k * r + k] = *s;
        }
        factors.push(plain_factor(role(index), middle));
    }
    // U S^(1/p) (m x r), output side.
    let last = (0..m * r).map(|idx| svd.u.values[idx] * root[idx % r]);
    factors.push(plain_factor(role(p), Matrix::new(m, r, last.collect())));
    layer.factors.splice(at..=at, factors);
    Ok(())
}

/// A rank-r adapter for `matrix` (out x in): A uniform with LeCun's scale, B zero.
fn adapter(matrix: &Matrix, rank: usize, rng: &mut ChaCha8Rng) -> LoraOf<Matrix> {
    let (outputs, inputs) = (matrix.rows, matrix.cols);
    let bound = (3.0 / inputs as f64).sqrt();
    let a = (0..rank * inputs).map(|_| rng.random_range(-bound..=bound));
    LoraOf {
        a: Matrix::new(rank, inputs, a.collect()),
        b: Matrix::zeros(outputs, rank),
        scale: 1.0,
    }
}

impl fmt::Display for AdaptiveAttack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdaptiveAttack::Fusion => write!(f, "fusion"),
            AdaptiveAttack::Injection => write!(f, "injection"),
            AdaptiveAttack::Factorisation { factors: None } => write!(f, "factorisation"),
            AdaptiveAttack::Factorisation { factors: Some(p) } => write!(f, "factorisation:{p}"),
            AdaptiveAttack::Lora { placement, rank } => {
                write!(f, "lora-{}:{rank}", placement.name())
            }
        }
    }
}

impl FromStr for AdaptiveAttack {
    type Err = String;

    /// `fusion`, `injection`, `factorisation[:p]`, `lora-<weight|compensation|both|fused>[:r]`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (name, given) = match text.trim().split_once(':') {
            Some((name, n)) => (name, Some(n.trim())),
            None => (text.trim(), None),
        };
        let count = |what: &str, min: usize, max: usize| -> Result<Option<usize>, String> {
            given
                .map(|n| match n.parse::<usize>() {
                    Ok(v) if (min..=max).contains(&v) => Ok(v),
                    _ => Err(format!(
                        "adaptive attack {text:?}: {what} must be a whole number in {min}..={max}"
                    )),
                })
                .transpose()
        };
        match name {
            "fusion" | "injection" if given.is_some() => {
                Err(format!("adaptive attack {text:?}: {name} takes no `:n`"))
            }
            "fusion" => Ok(AdaptiveAttack::Fusion),
            "injection" => Ok(AdaptiveAttack::Injection),
            "factorisation" => Ok(AdaptiveAttack::Factorisation {
                // One factor would be W~ itself: a factorisation has at least two.
                factors: count("the factor count p", 2, 64)?.map(|p| p as u16),
            }),
            _ => {
                let placement = name
                    .strip_prefix("lora-")
                    .and_then(|p| LoraPlacement::ALL.iter().find(|(_, n)| *n == p))
                    .map(|(p, _)| *p)
                    .ok_or_else(|| {
                        format!(
                            "unknown adaptive attack {text:?}: expected fusion, injection, \
                             factorisation[:p] or lora-weight|compensation|both|fused[:rank]"
                        )
                    })?;
                Ok(AdaptiveAttack::Lora {
                    placement,
                    rank: count("the LoRA rank", 1, 4096)?.unwrap_or(DEFAULT_LORA_RANK),
                })
            }
        }
    }
}

impl Serialize for AdaptiveAttack {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AdaptiveAttack {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

//! The adaptive attacker of PAPER.md section 5: one who knows the construction rewrites the
//! released model before fine-tuning, restoring fast convergence at a cost in parameters.
//! Each attack is a function from a host model to a host model (in f64, so the rewrite itself
//! loses nothing), plus the parameter groups it trains:
//!
//! - `fusion`: every layer's chain `C W~` becomes one matrix (the undefended parameter count);
//! - `injection`: `C` and `W~` frozen, a trainable identity `m x m` factor after them; only the
//!   injected factors and the biases train. `injection-unlocked` is glm-locking's form: the
//!   defended layers' `W~` and `C` locked, every other parameter of the scenario's groups trains
//!   (the two coincide when every layer is defended);
//! - `factorisation[:p]`: `W~ = U S V^T` becomes `p` balanced factors `S^(1/p) V^T`,
//!   `S^(1/p)` (p - 2 times), `U S^(1/p)`, each with top singular value `sigma_1(W~)^(1/p)`
//!   (about `alpha^(1/p)` times the undefended one's); without `:p`, p is chosen from alpha as
//!   the smallest with `alpha^(1/p) <= 10`. Three forms: `factorisation` keeps `C` trainable
//!   (the suite's first form: `C`'s alpha-scaled curvature stays), `factorisation-locked` locks
//!   `C` (glm-locking's form), `factorisation-fused` factorises the fused product `C W~` (= W)
//!   instead, `C` gone;
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

/// What an injection trains besides the injected layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectionForm {
    /// The injected layers and the biases (`injection`).
    InjectedOnly,
    /// glm-locking's: every parameter of the scenario's groups but the locked `W~` and `C`
    /// (`injection-unlocked`).
    Unlocked,
}

/// What a factorisation splits, and whether `C` trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorisationForm {
    /// `W~` factorised, `C` trainable (`factorisation`).
    CompensationTrainable,
    /// `W~` factorised, `C` locked: glm-locking's form (`factorisation-locked`).
    CompensationLocked,
    /// The fused product `C W~` factorised (`factorisation-fused`).
    Fused,
}

impl FactorisationForm {
    const ALL: [(FactorisationForm, &'static str); 3] = [
        (FactorisationForm::CompensationTrainable, "factorisation"),
        (
            FactorisationForm::CompensationLocked,
            "factorisation-locked",
        ),
        (FactorisationForm::Fused, "factorisation-fused"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("", |(_, n)| n)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdaptiveAttack {
    Fusion,
    Injection {
        form: InjectionForm,
    },
    /// `factors: None` chooses p from alpha.
    Factorisation {
        factors: Option<u16>,
        form: FactorisationForm,
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
            AdaptiveAttack::Factorisation {
                factors: Some(p), ..
            } => p,
            AdaptiveAttack::Factorisation { factors: None, .. } => {
                let p = (alpha.max(1.0).log10() / AUTO_FACTOR_GROWTH.log10()).ceil();
                p.clamp(2.0, 64.0) as u16
            }
            _ => 1,
        }
    }

    /// How records and tables name the attack on a defence of this alpha: `fusion`,
    /// `factorisation-locked p=4`, `lora-weight r=8`. The first word is the attack's kind.
    pub fn describe(self, alpha: f64) -> String {
        match self {
            AdaptiveAttack::Fusion | AdaptiveAttack::Injection { .. } => self.to_string(),
            AdaptiveAttack::Factorisation { form, .. } => {
                format!("{} p={}", form.name(), self.factor_count(alpha))
            }
            AdaptiveAttack::Lora { placement, rank } => {
                format!("lora-{} r={rank}", placement.name())
            }
        }
    }

    /// The groups that train: the scenario's for fusion and factorisation (full fine-tuning of
    /// the rewritten model; the locked factors stay fixed), the injected factors and biases for
    /// injection, the scenario's and the injected ones for glm-locking's injection, the
    /// adapters alone for LoRA.
    pub fn trainable(self, scenario: Trainable) -> Trainable {
        match self {
            AdaptiveAttack::Fusion | AdaptiveAttack::Factorisation { .. } => scenario,
            AdaptiveAttack::Injection {
                form: InjectionForm::InjectedOnly,
            } => Trainable::only(&[ParamGroup::Injected, ParamGroup::Biases]),
            AdaptiveAttack::Injection {
                form: InjectionForm::Unlocked,
            } => Trainable {
                injected: true,
                ..scenario
            },
            AdaptiveAttack::Lora { .. } => Trainable::only(&[ParamGroup::Lora]),
        }
    }

    /// The rewritten model. `alpha` is the defence's (it chooses p); `seed` LoRA's A.
    pub fn apply(self, model: &HostModel, alpha: f64, seed: u64) -> Result<HostModel, String> {
        let mut out = model.clone();
        self.rewrite(&mut out.layers, alpha, seed)?;
        out.validate()?;
        check_function_kept(&model.layers, &out.layers)
            .map_err(|e| format!("the rewrite {self}: {e}"))?;
        Ok(out)
    }

    /// Rewrites any list of layers in place: an MLP's, or the linear maps of a transformer
    /// (`encoder::EncoderHost`), which are the same layer chains. Refused where the function of
    /// a layer changed.
    pub fn apply_to_layers(
        self,
        layers: &mut [HostLayer],
        alpha: f64,
        seed: u64,
    ) -> Result<(), String> {
        let before = layers.to_vec();
        self.rewrite(layers, alpha, seed)?;
        check_function_kept(&before, layers).map_err(|e| format!("the rewrite {self}: {e}"))
    }

    fn rewrite(self, layers: &mut [HostLayer], alpha: f64, seed: u64) -> Result<(), String> {
        let defended: Vec<usize> = (0..layers.len())
            .filter(|&i| layers[i].factor(FactorRole::Compensation).is_some())
            .collect();
        if self.needs_defended_layers() && defended.is_empty() {
            return Err(format!(
                "the adaptive attack {self} rewrites SpecDef's compensated layers, and this model \
                 has none"
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (i, layer) in layers.iter_mut().enumerate() {
            let is_defended = defended.contains(&i);
            match self {
                AdaptiveAttack::Fusion => fuse(layer),
                AdaptiveAttack::Injection { form } if is_defended => {
                    if form == InjectionForm::Unlocked {
                        lock(layer, &[FactorRole::Weight, FactorRole::Compensation]);
                    }
                    let outputs = layer.bias.cols;
                    (layer.factors).push(FactorOf::plain(
                        FactorRole::Injected,
                        Matrix::identity(outputs),
                    ));
                }
                AdaptiveAttack::Factorisation { form, .. } if is_defended => {
                    match form {
                        FactorisationForm::CompensationTrainable => {}
                        FactorisationForm::CompensationLocked => {
                            lock(layer, &[FactorRole::Compensation]);
                        }
                        FactorisationForm::Fused => fuse(layer),
                    }
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
        Ok(())
    }
}

/// Every rewrite keeps the function: each layer's effective weight within
/// `F64_COMPENSATION_BOUND` (relative to its largest entry) of the model's, so a rewrite that
/// lost a factor is refused instead of attacked and reported.
fn check_function_kept(before: &[HostLayer], after: &[HostLayer]) -> Result<(), String> {
    let bound = crate::defense::F64_COMPENSATION_BOUND;
    for (i, (was, now)) in before.iter().zip(after).enumerate() {
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

/// The layer's factors of these roles held fixed during the attack.
fn lock(layer: &mut HostLayer, roles: &[FactorRole]) {
    for factor in &mut layer.factors {
        if roles.contains(&factor.role) {
            factor.locked = true;
        }
    }
}

/// The layer's whole chain (LoRA branches included) as one plain weight, in f64.
fn fuse(layer: &mut HostLayer) {
    if !layer.is_plain() {
        layer.factors = vec![FactorOf::plain(
            FactorRole::Weight,
            layer.effective_weight(),
        )];
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
    factors.push(FactorOf::plain(role(1), Matrix::new(r, n, first.collect())));
    for index in 2..p {
        let mut middle = Matrix::zeros(r, r);
        for (k, s) in root.iter().enumerate() {
            middle.values[k * r + k] = *s;
        }
        factors.push(FactorOf::plain(role(index), middle));
    }
    // U S^(1/p) (m x r), output side.
    let last = (0..m * r).map(|idx| svd.u.values[idx] * root[idx % r]);
    factors.push(FactorOf::plain(role(p), Matrix::new(m, r, last.collect())));
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
            AdaptiveAttack::Injection {
                form: InjectionForm::InjectedOnly,
            } => write!(f, "injection"),
            AdaptiveAttack::Injection {
                form: InjectionForm::Unlocked,
            } => write!(f, "injection-unlocked"),
            AdaptiveAttack::Factorisation {
                factors: None,
                form,
            } => write!(f, "{}", form.name()),
            AdaptiveAttack::Factorisation {
                factors: Some(p),
                form,
            } => write!(f, "{}:{p}", form.name()),
            AdaptiveAttack::Lora { placement, rank } => {
                write!(f, "lora-{}:{rank}", placement.name())
            }
        }
    }
}

impl FromStr for AdaptiveAttack {
    type Err = String;

    /// `fusion`, `injection[-unlocked]`, `factorisation[-locked|-fused][:p]`,
    /// `lora-<weight|compensation|both|fused>[:r]`.
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
            "fusion" | "injection" | "injection-unlocked" if given.is_some() => {
                Err(format!("adaptive attack {text:?}: {name} takes no `:n`"))
            }
            "fusion" => Ok(AdaptiveAttack::Fusion),
            "injection" => Ok(AdaptiveAttack::Injection {
                form: InjectionForm::InjectedOnly,
            }),
            "injection-unlocked" => Ok(AdaptiveAttack::Injection {
                form: InjectionForm::Unlocked,
            }),
            _ => {
                let factorisation = FactorisationForm::ALL.iter().find(|(_, n)| *n == name);
                if let Some(&(form, _)) = factorisation {
                    return Ok(AdaptiveAttack::Factorisation {
                        // One factor would be W~ itself: a factorisation has at least two.
                        factors: count("the factor count p", 2, 64)?.map(|p| p as u16),
                        form,
                    });
                }
                let placement = name
                    .strip_prefix("lora-")
                    .and_then(|p| LoraPlacement::ALL.iter().find(|(_, n)| *n == p))
                    .map(|(p, _)| *p)
                    .ok_or_else(|| {
                        format!(
                            "unknown adaptive attack {text:?}: expected fusion, \
                             injection[-unlocked], factorisation[-locked|-fused][:p] or \
                             lora-weight|compensation|both|fused[:rank]"
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

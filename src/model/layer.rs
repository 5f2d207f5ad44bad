//! A layer is data: an ordered chain of linear factors (each with a role and an optional LoRA
//! branch), then a bias, then the model's activation (every layer but the last). The same shape
//! holds host matrices, device tensors, gradients and tangents (`LayerOf<T>`), so one walk over
//! it (`LayerOf::parameters`, the parameter registry) generates all of them:
//!
//!   h_0 = x,  h_{j+1} = h_j F_j^T  (+ s (h_j A_j^T) B_j^T  with a LoRA branch on factor j),
//!   z = h_p + 1 b^T,  y = f(z).
//!
//! A plain layer is the chain `[weight]`; SpecDef's is `[weight (W~), compensation (C)]`; a
//! balanced factorisation is `[factor 1 of p, ..., factor p of p]`; an injected layer appends
//! an `injected` factor. Adding a form means a new constructor, not a new branch in the graph.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a linear factor is in its layer's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorRole {
    /// The layer's weight (`W`, or SpecDef's `W~`).
    Weight,
    /// SpecDef's compensation `C` on the output side of `W~`.
    Compensation,
    /// Factor `index` (from 1, input side first) of a weight written as a product of `of`.
    Factor { index: u16, of: u16 },
    /// A layer added by an attacker after the others (identity-initialised).
    Injected,
}

impl FactorRole {
    /// The name in parameter keys and model files (`weight`, `factor2of3`, ...).
    pub fn name(self) -> String {
        match self {
            FactorRole::Weight => "weight".to_string(),
            FactorRole::Compensation => "compensation".to_string(),
            FactorRole::Factor { index, of } => format!("factor{index}of{of}"),
            FactorRole::Injected => "injected".to_string(),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "weight" => Some(FactorRole::Weight),
            "compensation" => Some(FactorRole::Compensation),
            "injected" => Some(FactorRole::Injected),
            _ => {
                let (index, of) = name.strip_prefix("factor")?.split_once("of")?;
                let (index, of) = (index.parse().ok()?, of.parse().ok()?);
                (1 <= index && index <= of).then_some(FactorRole::Factor { index, of })
            }
        }
    }

    /// The parameter group a factor of this role trains in.
    pub fn group(self) -> ParamGroup {
        match self {
            FactorRole::Weight => ParamGroup::Weights,
            FactorRole::Compensation => ParamGroup::Compensation,
            FactorRole::Factor { .. } => ParamGroup::Factors,
            FactorRole::Injected => ParamGroup::Injected,
        }
    }
}

/// Parameters that train (or are frozen) together, and that an optimiser can treat alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamGroup {
    Weights,
    Biases,
    Compensation,
    Factors,
    Injected,
    Lora,
}

impl ParamGroup {
    pub const ALL: [ParamGroup; 6] = [
        ParamGroup::Weights,
        ParamGroup::Biases,
        ParamGroup::Compensation,
        ParamGroup::Factors,
        ParamGroup::Injected,
        ParamGroup::Lora,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ParamGroup::Weights => "weights",
            ParamGroup::Biases => "biases",
            ParamGroup::Compensation => "compensation",
            ParamGroup::Factors => "factors",
            ParamGroup::Injected => "injected",
            ParamGroup::Lora => "lora",
        }
    }

    /// Matrices (everything but biases): what a matrix optimiser such as Muon updates.
    pub fn is_matrix(self) -> bool {
        self != ParamGroup::Biases
    }
}

/// A parameter's role within its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamRole {
    Factor(FactorRole),
    /// LoRA's down projection `A` (r x in) on the factor of this role.
    LoraA(FactorRole),
    /// LoRA's up projection `B` (out x r) on the factor of this role.
    LoraB(FactorRole),
    Bias,
}

impl ParamRole {
    pub fn group(self) -> ParamGroup {
        match self {
            ParamRole::Factor(role) => role.group(),
            ParamRole::LoraA(_) | ParamRole::LoraB(_) => ParamGroup::Lora,
            ParamRole::Bias => ParamGroup::Biases,
        }
    }
}

/// One parameter of a model: the registry's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamKey {
    pub layer: usize,
    pub role: ParamRole,
}

impl ParamKey {
    /// The tensor name in model files: `layers.{i}.weight`, `layers.{i}.bias`,
    /// `layers.{i}.compensation`, `layers.{i}.factor2of3`, `layers.{i}.weight.lora_a`, ...
    pub fn name(&self) -> String {
        let i = self.layer;
        match self.role {
            ParamRole::Factor(role) => format!("layers.{i}.{}", role.name()),
            ParamRole::LoraA(role) => format!("layers.{i}.{}.lora_a", role.name()),
            ParamRole::LoraB(role) => format!("layers.{i}.{}.lora_b", role.name()),
            ParamRole::Bias => format!("layers.{i}.bias"),
        }
    }

    pub fn group(&self) -> ParamGroup {
        self.role.group()
    }
}

impl fmt::Display for ParamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A low-rank branch beside a factor: `s B A` added to it (A: r x in, B: out x r).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraOf<T> {
    pub a: T,
    pub b: T,
    pub scale: f64,
}

/// One linear factor of a layer's chain (`out x in`), with an optional LoRA branch.
#[derive(Clone, Debug, PartialEq)]
pub struct FactorOf<T> {
    pub role: FactorRole,
    pub matrix: T,
    pub lora: Option<LoraOf<T>>,
    /// Held fixed whatever the trainable groups say: an adaptive attack's locked factor
    /// (glm-locking's forms freeze SpecDef's `W~` and `C` while the rest of the model trains).
    /// Not stored in model files: a property of an attack, not of a model.
    pub locked: bool,
}

impl<T> FactorOf<T> {
    /// A factor without an adapter, not locked.
    pub fn plain(role: FactorRole, matrix: T) -> Self {
        Self {
            role,
            matrix,
            lora: None,
            locked: false,
        }
    }
}

/// One layer: the chain of factors, applied input side first, then the bias (`1 x out`).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerOf<T> {
    pub factors: Vec<FactorOf<T>>,
    pub bias: T,
}

impl<T> LayerOf<T> {
    /// Every parameter of the layer with its key, in the registry's fixed order: each factor
    /// (then its LoRA A and B) in chain order, then the bias.
    pub fn parameters(&self, layer: usize) -> Vec<(ParamKey, &T)> {
        let key = |role| ParamKey { layer, role };
        let mut out = Vec::new();
        for factor in &self.factors {
            out.push((key(ParamRole::Factor(factor.role)), &factor.matrix));
            if let Some(lora) = &factor.lora {
                out.push((key(ParamRole::LoraA(factor.role)), &lora.a));
                out.push((key(ParamRole::LoraB(factor.role)), &lora.b));
            }
        }
        out.push((key(ParamRole::Bias), &self.bias));
        out
    }

    /// The same layer with every parameter mapped through `f` (host -> device, device ->
    /// gradients or tangents, ...), in registry order; the first error stops it.
    pub fn try_map<U, E>(
        &self,
        layer: usize,
        f: &mut impl FnMut(ParamKey, &T) -> Result<U, E>,
    ) -> Result<LayerOf<U>, E> {
        let key = |role| ParamKey { layer, role };
        let mut factors = Vec::with_capacity(self.factors.len());
        for factor in &self.factors {
            let matrix = f(key(ParamRole::Factor(factor.role)), &factor.matrix)?;
            let lora = match &factor.lora {
                Some(lora) => Some(LoraOf {
                    a: f(key(ParamRole::LoraA(factor.role)), &lora.a)?,
                    b: f(key(ParamRole::LoraB(factor.role)), &lora.b)?,
                    scale: lora.scale,
                }),
                None => None,
            };
            factors.push(FactorOf {
                role: factor.role,
                matrix,
                lora,
                locked: factor.locked,
            });
        }
        Ok(LayerOf {
            factors,
            bias: f(key(ParamRole::Bias), &self.bias)?,
        })
    }

    /// The parameter of a role, mutably (for example to perturb it).
    pub fn parameter_mut(&mut self, role: ParamRole) -> Option<&mut T> {
        if role == ParamRole::Bias {
            return Some(&mut self.bias);
        }
        self.factors.iter_mut().find_map(|f| match role {
            ParamRole::Factor(r) if r == f.role => Some(&mut f.matrix),
            ParamRole::LoraA(r) if r == f.role => f.lora.as_mut().map(|l| &mut l.a),
            ParamRole::LoraB(r) if r == f.role => f.lora.as_mut().map(|l| &mut l.b),
            _ => None,
        })
    }

    /// Whether the parameter of this role trains: its group trains and, for a factor's matrix,
    /// the attack has not locked it (an adapter on a locked factor still trains).
    pub fn trains(&self, role: ParamRole, trainable: Trainable) -> bool {
        let locked = match role {
            ParamRole::Factor(r) => self.factor(r).is_some_and(|f| f.locked),
            _ => false,
        };
        trainable.trains(role.group()) && !locked
    }

    /// The factor of a role, if the chain has one.
    pub fn factor(&self, role: FactorRole) -> Option<&FactorOf<T>> {
        self.factors.iter().find(|f| f.role == role)
    }

    pub fn is_plain(&self) -> bool {
        matches!(self.factors.as_slice(), [f] if f.role == FactorRole::Weight && f.lora.is_none())
    }

    /// A short description of the chain, input side first: `weight+compensation`,
    /// `weight[lora r]`.
    pub fn form(&self) -> String
    where
        T: Shaped,
    {
        let parts: Vec<String> = self
            .factors
            .iter()
            .map(|f| match &f.lora {
                Some(l) => format!("{}[lora {}]", f.role.name(), l.a.shape().0),
                None => f.role.name(),
            })
            .collect();
        parts.join("+")
    }
}

/// Anything with a matrix shape: host matrices and engine tensors.
pub trait Shaped {
    /// (rows, cols).
    fn shape(&self) -> (usize, usize);
}

impl Shaped for crate::linalg::Matrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
}

impl Shaped for crate::engine::Tensor {
    fn shape(&self) -> (usize, usize) {
        crate::engine::Tensor::shape(self)
    }
}

/// Checks a layer's chain fits together and maps `inputs` to `outputs`: each factor's input
/// width is the previous one's output width, LoRA shapes match their factor, the bias is
/// `1 x outputs`. An impossible layer is refused here, when the model is built.
pub fn check_layer<T: Shaped>(
    layer: &LayerOf<T>,
    index: usize,
    (inputs, outputs): (usize, usize),
) -> Result<(), String> {
    if layer.factors.is_empty() {
        return Err(format!("layer {index} has no linear factor"));
    }
    let mut width = inputs;
    for (j, factor) in layer.factors.iter().enumerate() {
        let (rows, cols) = factor.matrix.shape();
        let name = ParamKey {
            layer: index,
            role: ParamRole::Factor(factor.role),
        };
        if cols != width || rows == 0 {
            return Err(format!(
                "{name} (factor {j} of the chain) is {rows}x{cols}, but its input is {width} wide: \
                 the architecture needs {width} columns"
            ));
        }
        if let Some(lora) = &factor.lora {
            let (ar, ac) = lora.a.shape();
            let (br, bc) = lora.b.shape();
            if ac != cols || br != rows || ar != bc || ar == 0 {
                return Err(format!(
                    "{name}: LoRA A is {ar}x{ac} and B {br}x{bc}; they need r x {cols} and {rows} x r"
                ));
            }
            if !lora.scale.is_finite() {
                return Err(format!("{name}: LoRA scale {} is not finite", lora.scale));
            }
        }
        width = rows;
    }
    if width != outputs {
        let last = ParamKey {
            layer: index,
            role: ParamRole::Factor(layer.factors[layer.factors.len() - 1].role),
        };
        return Err(format!(
            "{last} ends the chain {width} wide, the architecture needs {outputs} outputs"
        ));
    }
    if layer.bias.shape() != (1, outputs) {
        let (r, c) = layer.bias.shape();
        return Err(format!(
            "layers.{index}.bias is {r}x{c}, the architecture needs 1x{outputs}"
        ));
    }
    for (j, a) in layer.factors.iter().enumerate() {
        if layer.factors[..j].iter().any(|b| b.role == a.role) {
            return Err(format!(
                "layer {index} has two factors with the role {}",
                a.role.name()
            ));
        }
    }
    Ok(())
}

/// Which parameter groups train. Full fine-tuning (the default) trains all of them, the
/// compensation layers included: the regime in which SpecDef's curvature grows like alpha^2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trainable {
    pub weights: bool,
    pub biases: bool,
    pub compensation: bool,
    #[serde(default = "yes")]
    pub factors: bool,
    #[serde(default = "yes")]
    pub injected: bool,
    #[serde(default = "yes")]
    pub lora: bool,
}

fn yes() -> bool {
    true
}

impl Default for Trainable {
    fn default() -> Self {
        Self::only(&ParamGroup::ALL)
    }
}

impl Trainable {
    /// Only the named groups train.
    pub fn only(groups: &[ParamGroup]) -> Self {
        let has = |g| groups.contains(&g);
        Self {
            weights: has(ParamGroup::Weights),
            biases: has(ParamGroup::Biases),
            compensation: has(ParamGroup::Compensation),
            factors: has(ParamGroup::Factors),
            injected: has(ParamGroup::Injected),
            lora: has(ParamGroup::Lora),
        }
    }

    pub fn trains(&self, group: ParamGroup) -> bool {
        match group {
            ParamGroup::Weights => self.weights,
            ParamGroup::Biases => self.biases,
            ParamGroup::Compensation => self.compensation,
            ParamGroup::Factors => self.factors,
            ParamGroup::Injected => self.injected,
            ParamGroup::Lora => self.lora,
        }
    }

    /// `weights,biases,compensation`: the groups that train, for records and tables.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = ParamGroup::ALL
            .into_iter()
            .filter(|&g| self.trains(g))
            .map(ParamGroup::name)
            .collect();
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in [
            FactorRole::Weight,
            FactorRole::Compensation,
            FactorRole::Injected,
            FactorRole::Factor { index: 2, of: 3 },
        ] {
            assert_eq!(FactorRole::parse(&role.name()), Some(role));
        }
        assert_eq!(FactorRole::parse("factor4of3"), None);
        assert_eq!(FactorRole::parse("bias"), None);
    }
}

//! Which layers a defence rewrites: `all`, a list of indices (`0,2`), or `random:N` (N layers
//! chosen by the seed).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerSelection {
    All,
    Indices(Vec<usize>),
    Random(usize),
}

impl LayerSelection {
    /// The chosen layer indices of a model with `layer_count` layers, sorted; an index past the
    /// end is an error naming it.
    pub fn resolve(&self, layer_count: usize, seed: u64) -> Result<Vec<usize>, String> {
        let mut chosen = match self {
            LayerSelection::All => (0..layer_count).collect(),
            LayerSelection::Indices(indices) => {
                if let Some(bad) = indices.iter().find(|&&i| i >= layer_count) {
                    return Err(format!(
                        "unknown layer {bad}: the model has layers 0..{}",
                        layer_count.saturating_sub(1)
                    ));
                }
                if let Some(i) = (1..indices.len()).find(|&i| indices[..i].contains(&indices[i])) {
                    return Err(format!("layer {} is named twice", indices[i]));
                }
                indices.clone()
            }
            LayerSelection::Random(n) => {
                if *n > layer_count {
                    return Err(format!(
                        "random:{n} asks for more layers than the model's {layer_count}"
                    ));
                }
                let mut all: Vec<usize> = (0..layer_count).collect();
                all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
                all.truncate(*n);
                all
            }
        };
        chosen.sort_unstable();
        chosen.dedup();
        Ok(chosen)
    }
}

impl FromStr for LayerSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "all" {
            return Ok(LayerSelection::All);
        }
        if let Some(n) = s.strip_prefix("random:") {
            return n
                .trim()
                .parse()
                .ok()
                .filter(|&n| n >= 1)
                .map(LayerSelection::Random)
                .ok_or_else(|| format!("layers {s:?}: random:N needs a count N >= 1"));
        }
        s.split(',')
            .map(|part| part.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map(LayerSelection::Indices)
            .map_err(|_| format!("layers {s:?}: expected all, random:N or indices like 0,2"))
    }
}

impl fmt::Display for LayerSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSelection::All => write!(f, "all"),
            LayerSelection::Random(n) => write!(f, "random:{n}"),
            LayerSelection::Indices(indices) => {
                let parts: Vec<String> = indices.iter().map(usize::to_string).collect();
                write!(f, "{}", parts.join(","))
            }
        }
    }
}

impl Serialize for LayerSelection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for LayerSelection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        assert_eq!("all".parse(), Ok(LayerSelection::All));
        assert_eq!("0, 2".parse(), Ok(LayerSelection::Indices(vec![0, 2])));
        assert_eq!("random:2".parse(), Ok(LayerSelection::Random(2)));
        assert!("first".parse::<LayerSelection>().is_err());
        let none = "random:0".parse::<LayerSelection>().unwrap_err();
        assert!(none.contains("N >= 1"), "{none}");
        assert_eq!(LayerSelection::All.resolve(3, 0), Ok(vec![0, 1, 2]));
        let err = LayerSelection::Indices(vec![5]).resolve(3, 0).unwrap_err();
        assert!(err.contains("unknown layer 5"), "{err}");
        let random = LayerSelection::Random(2).resolve(5, 7).unwrap();
        assert_eq!(random.len(), 2);
        assert_eq!(random, LayerSelection::Random(2).resolve(5, 7).unwrap());
    }
}

//! A training run's curves as a result folder and the model cache keep them: each a name and
//! (step, value) points, so a stage with measures of its own (TAR's tamper-resistance loss,
//! immunisation's condition numbers) adds curves without new record columns.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// What it measures: `loss`, `eval_accuracy`, `tamper_loss`, ...
    pub name: String,
    /// (step, value); a diverged run's loss may be non-finite.
    pub points: Vec<(usize, f64)>,
}

impl Curve {
    pub fn new(name: &str, points: impl IntoIterator<Item = (usize, f64)>) -> Self {
        Self {
            name: name.to_string(),
            points: points.into_iter().collect(),
        }
    }

    /// The curves as JSON (non-finite values as `null`), for a cache file's metadata.
    pub fn to_json(curves: &[Curve]) -> String {
        let value: Vec<serde_json::Value> = (curves.iter())
            .map(|c| {
                let points: Vec<(usize, Option<f64>)> = (c.points.iter())
                    .map(|&(step, v)| (step, v.is_finite().then_some(v)))
                    .collect();
                serde_json::json!({ "name": c.name, "points": points })
            })
            .collect();
        serde_json::Value::Array(value).to_string()
    }

    /// The curves `to_json` wrote (`null` read back as NaN).
    pub fn from_json(text: &str) -> Result<Vec<Curve>, String> {
        #[derive(Deserialize)]
        struct Stored {
            name: String,
            points: Vec<(usize, Option<f64>)>,
        }
        let stored: Vec<Stored> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(stored
            .into_iter()
            .map(|s| Curve {
                name: s.name,
                points: (s.points.into_iter())
                    .map(|(step, v)| (step, v.unwrap_or(f64::NAN)))
                    .collect(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_round_trip_through_json_non_finite_values_included() {
        let curves = vec![
            Curve::new("loss", [(0, 2.5), (10, f64::INFINITY)]),
            Curve::new("eval_accuracy", [(0, 0.125), (10, 0.875)]),
        ];
        let back = Curve::from_json(&Curve::to_json(&curves)).unwrap();
        assert_eq!(back[1], curves[1]);
        assert_eq!(back[0].points[0], (0, 2.5));
        assert!(back[0].points[1].1.is_nan());
        assert!(Curve::from_json("[{\"name\": 3}]").is_err());
    }
}

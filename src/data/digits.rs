//! The UCI optical handwritten digits (test portion, 1797 images of 8x8 pixels in 0..16),
//! embedded in the binary so the CLI and the browser need no download. Attribution:
//! data/README.md.

use super::{DataError, Dataset};
use std::io::Read;

const DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");
const DIGIT_ROWS: usize = 1797;
pub const DIGIT_PIXELS: usize = 64;
pub const DIGIT_CLASSES: usize = 10;

/// The embedded digits with pixels scaled to [0, 1].
pub fn load_digits() -> Result<Digits, DataError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| DataError::Gzip(e.to_string()))?;
    let dataset = parse_digits(&text)?;
    if dataset.len() != DIGIT_ROWS {
        return Err(DataError::RowCount {
            expected: DIGIT_ROWS,
            found: dataset.len(),
        });
    }
    Ok(Digits { dataset })
}

/// Parses the CSV: 64 pixels in 0..=16 then a label in 0..=9 per line.
pub fn parse_digits(text: &str) -> Result<Dataset, DataError> {
    let mut inputs = Vec::with_capacity(DIGIT_ROWS * DIGIT_PIXELS);
    let mut labels = Vec::with_capacity(DIGIT_ROWS);
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let error = |message: String| DataError::Line {
            line: index + 1,
            message,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != DIGIT_PIXELS + 1 {
            return Err(error(format!(
                "{} fields, expected {}",
                fields.len(),
                DIGIT_PIXELS + 1
            )));
        }
        for field in &fields[..DIGIT_PIXELS] {
            match field.parse::<u8>() {
                Ok(pixel) if pixel <= 16 => inputs.push(f64::from(pixel) / 16.0),
                _ => {
                    return Err(error(format!(
                        "pixel {field:?} is not an integer in 0..=16"
                    )));
                }
            }
        }
        match fields[DIGIT_PIXELS].parse::<usize>() {
            Ok(label) if label < DIGIT_CLASSES => labels.push(label),
            _ => {
                return Err(error(format!(
                    "label {:?} is not a digit 0..=9",
                    fields[DIGIT_PIXELS]
                )));
            }
        }
    }
    Ok(Dataset {
        inputs,
        labels,
        features: DIGIT_PIXELS,
    })
}

#[derive(Clone, Debug)]
pub struct Digits {
    pub dataset: Dataset,
}

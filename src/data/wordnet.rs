//! WordNet's nouns as a topic task (Debian wordnet-base 1:3.0-37's data.noun, fetched by
//! scripts/fetch-transformer.sh): each synset's first lemma and gloss, `"lemma: gloss"`,
//! labelled by the lexicographer file it belongs to (noun.animal, noun.artifact, ...). The
//! utility topics are what a released model should keep; the harmful ones stand for the
//! knowledge a defence should keep from being relearned (the relearning setting's split).
//! A fixed hash of the synset's offset splits train from test, the same on every machine.

use crate::fnv::fnv1a;
use std::fmt;

/// The 26 noun lexicographer files, by their file number (03..=28) minus 3 (lexnames(5WN)).
pub const NOUN_CATEGORIES: [&str; 26] = [
    "Tops",
    "act",
    "animal",
    "artifact",
    "attribute",
    "body",
    "cognition",
    "communication",
    "event",
    "feeling",
    "food",
    "group",
    "location",
    "motive",
    "object",
    "person",
    "phenomenon",
    "plant",
    "possession",
    "process",
    "quantity",
    "relation",
    "shape",
    "state",
    "substance",
    "time",
];

/// The default utility topics (kept by the released model).
pub const UTILITY_TOPICS: [&str; 5] = ["artifact", "person", "act", "communication", "location"];
/// The default harmful topics (suppressed by the release, the attacker's target).
pub const HARMFUL_TOPICS: [&str; 5] = ["animal", "plant", "body", "food", "substance"];

/// One synset as a labelled text.
#[derive(Clone, Debug, PartialEq)]
pub struct Gloss {
    /// The synset's offset in data.noun, its identity.
    pub offset: u64,
    /// `"lemma: gloss"`, the lemma's underscores as spaces.
    pub text: String,
    /// Index into [`NOUN_CATEGORIES`].
    pub category: usize,
}

impl Gloss {
    /// Whether the fixed split puts this synset in the test set (one in `test_one_in`).
    pub fn is_test(&self, test_one_in: u64) -> bool {
        fnv1a(self.offset.to_le_bytes()).is_multiple_of(test_one_in)
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub struct WordnetError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for WordnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data.noun line {}: {}", self.line, self.message)
    }
}

/// Every synset of a data.noun file's text (its licence header, the lines starting with two
/// spaces, skipped).
pub fn parse_nouns(text: &str) -> Result<Vec<Gloss>, WordnetError> {
    let mut glosses = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("  ") || line.trim().is_empty() {
            continue;
        }
        let error = |message: String| WordnetError {
            line: index + 1,
            message,
        };
        let (fields, gloss) = line
            .split_once(" | ")
            .ok_or_else(|| error("no gloss (\" | \")".to_string()))?;
        let mut fields = fields.split(' ');
        let mut next = |what: &str| {
            fields
                .next()
                .ok_or_else(|| error(format!("ends before its {what}")))
        };
        let offset = next("offset")?;
        let offset: u64 = offset
            .parse()
            .map_err(|_| error(format!("offset {offset:?} is not a number")))?;
        let file = next("lexicographer file")?;
        let category = file
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(3))
            .filter(|&c| c < NOUN_CATEGORIES.len())
            .ok_or_else(|| {
                error(format!(
                    "lexicographer file {file:?} is not a noun file (03..28)"
                ))
            })?;
        let kind = next("synset type")?;
        if kind != "n" {
            return Err(error(format!("synset type {kind:?}, expected \"n\"")));
        }
        next("word count")?;
        let lemma = next("first word")?;
        glosses.push(Gloss {
            offset,
            text: format!("{}: {}", lemma.replace('_', " "), gloss.trim_end()),
            category,
        });
    }
    Ok(glosses)
}

/// The index of a category name in [`NOUN_CATEGORIES`].
pub fn category_index(name: &str) -> Option<usize> {
    NOUN_CATEGORIES.iter().position(|&c| c == name)
}

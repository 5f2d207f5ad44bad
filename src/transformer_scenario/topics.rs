//! The WordNet topic task of the transformer scenario: "lemma: gloss" texts of ten noun
//! topics, labelled 0-4 for the utility topics and 5-9 for the harmful ones (the head has ten
//! classes, as the MLP's has ten digits), split by the synsets' fixed hash (one in ten held
//! out). The held-out sets are fixed shuffled samples (data.noun groups synsets by topic), the
//! same for every run and seed; training batches are drawn from the rest.

use crate::data::wordnet::{Gloss, HARMFUL_TOPICS, UTILITY_TOPICS, category_index, parse_nouns};
use crate::encoder::{ClassTarget, TokenBatch};
use crate::tokenizer::{TokenizerError, WordPiece};
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The seed of the held-out samples' shuffle, fixed so every run scores the same glosses.
const TEST_SAMPLE_SEED: u64 = 0x5eed_7e57;
/// One synset in this many is held out.
const TEST_ONE_IN: u64 = 10;

/// The ten topics in label order: utility (0-4), then harmful (5-9).
pub fn topic_names() -> Vec<&'static str> {
    UTILITY_TOPICS
        .iter()
        .chain(&HARMFUL_TOPICS)
        .copied()
        .collect()
}

/// A labelled text.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: usize,
}

pub struct TopicData {
    pub utility_train: Vec<Example>,
    pub harmful_train: Vec<Example>,
    /// Fixed samples of the held-out glosses (`test_size` each, or all there are).
    pub utility_test: Vec<Example>,
    /// The harmful sample each attack is judged on (what stops it at the target).
    pub harmful_test: Vec<Example>,
    /// Another sample of held-out harmful glosses, disjoint from `harmful_test`, measured once
    /// after each attack (generalisation).
    pub harmful_heldout: Vec<Example>,
}

impl TopicData {
    /// The task from data.noun's text, with `test_size` held-out glosses per side.
    pub fn from_data_noun(
        text: &str,
        test_size: usize,
    ) -> Result<Self, crate::data::wordnet::WordnetError> {
        let topics = topic_names();
        let categories: Vec<usize> = (topics.iter())
            .map(|t| category_index(t).expect("the topics are noun categories"))
            .collect();
        let (mut utility, mut harmful) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for gloss in parse_nouns(text)? {
            let Some(label) = categories.iter().position(|&c| c == gloss.category) else {
                continue;
            };
            let side = if label < UTILITY_TOPICS.len() {
                &mut utility
            } else {
                &mut harmful
            };
            let Gloss { text, .. } = &gloss;
            let example = Example {
                text: text.clone(),
                label,
            };
            if gloss.is_test(TEST_ONE_IN) {
                side.1.push(example);
            } else {
                side.0.push(example);
            }
        }
        let sample = |mut test: Vec<Example>| {
            test.shuffle(&mut ChaCha8Rng::seed_from_u64(TEST_SAMPLE_SEED));
            test.truncate(2 * test_size);
            test
        };
        let (mut utility_test, mut harmful_test) = (sample(utility.1), sample(harmful.1));
        utility_test.truncate(test_size);
        let harmful_heldout = harmful_test.split_off(test_size.min(harmful_test.len()));
        Ok(Self {
            utility_train: utility.0,
            harmful_train: harmful.0,
            utility_test,
            harmful_test,
            harmful_heldout,
        })
    }
}

/// Texts tokenised into batches of one padded length.
pub struct Batcher<'a> {
    pub tokenizer: &'a WordPiece,
    /// Tokens per text, with [CLS] and [SEP] (longer texts are truncated).
    pub tokens: usize,
}

impl Batcher<'_> {
    pub fn batch<'e>(
        &self,
        examples: impl IntoIterator<Item = &'e Example>,
    ) -> Result<TokenBatch, TokenizerError> {
        let encodings = (examples.into_iter())
            .map(|e| self.tokenizer.encode(&e.text, self.tokens))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TokenBatch::new(&encodings))
    }
}

/// `size` examples drawn (with replacement) from `from`, each with its label as the target, or
/// with the uniform target where `uniform`.
pub fn draw<'a>(
    rng: &mut impl Rng,
    from: &'a [Example],
    size: usize,
    uniform: bool,
) -> Vec<(&'a Example, ClassTarget)> {
    (0..size)
        .map(|_| {
            let example = &from[rng.random_range(0..from.len())];
            let target = if uniform {
                ClassTarget::Uniform
            } else {
                ClassTarget::Label(example.label)
            };
            (example, target)
        })
        .collect()
}

//! The BERT WordPiece tokenizer of all-MiniLM-L6-v2, read from its HuggingFace `tokenizer.json`
//! and producing the ids that HuggingFace `tokenizers` (0.22) produces for it.
//!
//! The encoder was trained on exactly these ids, so every step copies the reference's rules,
//! including their quirks:
//! 1. Added tokens (`[CLS]`, `[MASK]`, ...) are cut out of the raw text first, case-sensitively.
//! 2. `BertNormalizer`: drop NUL, U+FFFD and "other" chars (controls Cc, formats Cf, private use
//!    Co; unassigned chars stay), map whitespace to ' ', put spaces around CJK ideographs, strip
//!    accents (NFD, then drop non-spacing marks Mn), lowercase char by char (so no final sigma).
//! 3. `BertPreTokenizer`: split on whitespace, and each punctuation char (ASCII punctuation or
//!    Unicode P*) is a word of its own.
//! 4. `WordPiece`: greedy longest-match-first pieces, later pieces prefixed `##`; a word with a
//!    char no piece covers, or of more than `max_input_chars_per_word` chars, is one `[UNK]`.
//! 5. `[CLS] tokens [SEP]`, truncated and padded to the caller's length.
//!
//! Known divergence: the reference classifies chars with Unicode 8-era tables, this module with
//! Unicode 16 ones. A sweep of every code point (each as `"a{c}b {c}"`) differs at 618 of them,
//! all encoded or re-categorised since (marks, punctuation and format chars of minority and
//! historic scripts, such as U+061D or U+1E000..); nothing in English text or in the scripts the
//! vocabulary covers.
//!
//! Only `from_file` touches the filesystem, so the rest serves the browser build as well.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::UnicodeNormalization;

/// The most bytes of a tokenizer.json (all-MiniLM-L6-v2's is 0.7 MB).
pub const MAX_TOKENIZER_JSON_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokenizer file {path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<TokenizerError>,
    },
    #[error("tokenizer.json is not valid JSON of a tokenizer: {0}")]
    Json(#[from] serde_json::Error),
    #[error("tokenizer.json: {field} is {found}, but only {expected} is supported")]
    Unsupported {
        field: String,
        found: String,
        expected: &'static str,
    },
    #[error("tokenizer.json: {field}: {problem}")]
    Malformed { field: String, problem: String },
    #[error("max_len {max_len} leaves no room for [CLS] and [SEP]: it must be at least 2")]
    MaxLenTooSmall { max_len: usize },
}

/// The model's input for one text: `ids` of `[CLS] tokens [SEP]` then padding, and
/// `attention_mask` 1 on the real tokens (specials included) and 0 on the padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
}

/// A BERT WordPiece tokenizer (normalizer, pre-tokenizer, model and `[CLS] A [SEP]` template).
pub struct WordPiece {
    normalizer: BertNormalizer,
    /// Added tokens (content, id), longest first, so the first one that matches is the longest.
    added_tokens: Vec<(String, u32)>,
    vocab: HashMap<String, u32>,
    tokens_by_id: HashMap<u32, String>,
    unk_id: u32,
    continuing_subword_prefix: String,
    max_input_chars_per_word: usize,
    cls_id: u32,
    sep_id: u32,
    pad_id: u32,
}

impl std::fmt::Debug for WordPiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The 30k-entry vocabulary would drown any message this appears in.
        f.debug_struct("WordPiece")
            .field("vocab_size", &self.vocab.len())
            .field("normalizer", &self.normalizer)
            .field("unk_id", &self.unk_id)
            .field("cls_id", &self.cls_id)
            .field("sep_id", &self.sep_id)
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

impl WordPiece {
    /// The tokenizer a HuggingFace `tokenizer.json` describes. Refuses, naming the field and the
    /// value found, any normalizer, pre-tokenizer, model or post-processor other than BERT's,
    /// rather than tokenizing differently from the reference without a word.
    pub fn from_tokenizer_json(text: &str) -> Result<WordPiece, TokenizerError> {
        let json: TokenizerJson = serde_json::from_str(text)?;

        let normalizer: BertNormalizerJson =
            typed_section(&json.normalizer, "normalizer", "BertNormalizer")?;
        let _: Value = typed_section(&json.pre_tokenizer, "pre_tokenizer", "BertPreTokenizer")?;
        let model: WordPieceJson = typed_section(&json.model, "model", "WordPiece")?;

        let unk_id = *model
            .vocab
            .get(&model.unk_token)
            .ok_or_else(|| malformed("model.unk_token", not_in_vocab(&model.unk_token)))?;
        let (cls_id, sep_id) = special_ids(&json.post_processor)?;
        let pad_id = pad_id(&json.padding, &model.vocab)?;
        check_right_direction(&json.truncation, "truncation")?;
        let added_tokens = added_tokens(&json.added_tokens)?;

        let tokens_by_id = model
            .vocab
            .iter()
            .map(|(token, &id)| (id, token.clone()))
            .collect();
        Ok(WordPiece {
            normalizer: BertNormalizer {
                clean_text: normalizer.clean_text,
                handle_chinese_chars: normalizer.handle_chinese_chars,
                // As HuggingFace does: unset means "strip where lowercasing".
                strip_accents: normalizer.strip_accents.unwrap_or(normalizer.lowercase),
                lowercase: normalizer.lowercase,
            },
            added_tokens,
            vocab: model.vocab,
            tokens_by_id,
            unk_id,
            continuing_subword_prefix: model.continuing_subword_prefix,
            max_input_chars_per_word: model.max_input_chars_per_word,
            cls_id,
            sep_id,
            pad_id,
        })
    }

    /// [`WordPiece::from_tokenizer_json`] of the file at `path`; errors name the path.
    pub fn from_file(path: &Path) -> Result<WordPiece, TokenizerError> {
        let text = crate::input_file::read_text_bounded(path, MAX_TOKENIZER_JSON_BYTES).map_err(
            |source| TokenizerError::Read {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Self::from_tokenizer_json(&text).map_err(|error| TokenizerError::InFile {
            path: path.to_path_buf(),
            source: Box::new(error),
        })
    }

    /// The ids of `text`'s tokens, without the `[CLS]`/`[SEP]` the template adds (an added token
    /// written in the text, such as `[MASK]`, is kept as its id, as the reference does).
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for segment in self.split_on_added_tokens(text) {
            match segment {
                Segment::AddedToken(id) => ids.push(id),
                Segment::Text(text) => {
                    let normalized = self.normalizer.normalize(text);
                    for word in bert_words(&normalized) {
                        self.push_word_pieces(word, &mut ids);
                    }
                }
            }
        }
        ids
    }

    /// `[CLS]`, `text`'s tokens truncated to `max_len - 2`, `[SEP]`, then `[PAD]` up to `max_len`.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Encoding, TokenizerError> {
        let room_for_tokens = max_len
            .checked_sub(2)
            .ok_or(TokenizerError::MaxLenTooSmall { max_len })?;
        let mut tokens = self.tokens(text);
        tokens.truncate(room_for_tokens);

        let mut ids = Vec::with_capacity(max_len);
        ids.push(self.cls_id);
        ids.extend(tokens);
        ids.push(self.sep_id);
        let real_tokens = ids.len();
        ids.resize(max_len, self.pad_id);
        let attention_mask = (0..max_len).map(|i| u32::from(i < real_tokens)).collect();
        Ok(Encoding {
            ids,
            attention_mask,
        })
    }

    /// The number of entries in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The vocabulary entry of `id` (`##`-prefixed for a word's later pieces).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens_by_id.get(&id).map(String::as_str)
    }

    /// `text` cut at each added token (leftmost match first, the longest where several start
    /// there), as the reference does before normalizing.
    fn split_on_added_tokens<'t>(&self, text: &'t str) -> Vec<Segment<'t>> {
        let mut segments = Vec::new();
        let mut segment_start = 0;
        let mut at = 0;
        while let Some(rest) = text.get(at..).filter(|rest| !rest.is_empty()) {
            let matched = self
                .added_tokens
                .iter()
                .find(|(content, _)| rest.starts_with(content.as_str()));
            match matched {
                Some((content, id)) => {
                    if segment_start < at {
                        segments.push(Segment::Text(&text[segment_start..at]));
                    }
                    segments.push(Segment::AddedToken(*id));
                    at += content.len();
                    segment_start = at;
                }
                None => at += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        if segment_start < text.len() {
            segments.push(Segment::Text(&text[segment_start..]));
        }
        segments
    }

    /// Appends `word`'s pieces, greedy longest first; the whole word is one `[UNK]` where some
    /// position starts no piece or the word is too long.
    fn push_word_pieces(&self, word: &str, ids: &mut Vec<u32>) {
        if word.chars().count() > self.max_input_chars_per_word {
            ids.push(self.unk_id);
            return;
        }
        let word_start = ids.len();
        let mut piece = String::with_capacity(self.continuing_subword_prefix.len() + word.len());
        let mut start = 0;
        while start < word.len() {
            match self.longest_piece(word, start, &mut piece) {
                Some((id, end)) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(word_start);
                    ids.push(self.unk_id);
                    return;
                }
            }
        }
    }

    /// The id and end (byte offset) of the longest vocabulary piece of `word` starting at byte
    /// `start`; `piece` is scratch space.
    fn longest_piece(&self, word: &str, start: usize, piece: &mut String) -> Option<(u32, usize)> {
        let ends_longest_first = word[start..]
            .char_indices()
            .rev()
            .map(|(offset, c)| start + offset + c.len_utf8());
        for end in ends_longest_first {
            piece.clear();
            if start > 0 {
                piece.push_str(&self.continuing_subword_prefix);
            }
            piece.push_str(&word[start..end]);
            if let Some(&id) = self.vocab.get(piece.as_str()) {
                return Some((id, end));
            }
        }
        None
    }
}

/// A stretch of the input: an added token, or text between added tokens.
enum Segment<'t> {
    AddedToken(u32),
    Text(&'t str),
}

/// HuggingFace's `BertNormalizer`, its options resolved.
#[derive(Debug)]
struct BertNormalizer {
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
}

impl BertNormalizer {
    fn normalize(&self, text: &str) -> String {
        let mut cleaned = String::with_capacity(text.len());
        for c in text.chars() {
            let c = if self.clean_text {
                if c == '\0' || c == '\u{FFFD}' || is_other_than_whitespace(c) {
                    continue;
                }
                if is_bert_whitespace(c) { ' ' } else { c }
            } else {
                c
            };
            if self.handle_chinese_chars && is_cjk_ideograph(c) {
                cleaned.extend([' ', c, ' ']);
            } else {
                cleaned.push(c);
            }
        }
        let unaccented = if self.strip_accents {
            cleaned
                .nfd()
                .filter(|&c| get_general_category(c) != GeneralCategory::NonspacingMark)
                .collect()
        } else {
            cleaned
        };
        if self.lowercase {
            // Char by char, as the reference does: str::to_lowercase would make a word-final
            // capital sigma 'ς', where the reference (and so the vocabulary's use) has 'σ'.
            unaccented.chars().flat_map(char::to_lowercase).collect()
        } else {
            unaccented
        }
    }
}

/// Whitespace for BERT: Unicode White_Space, which includes \t, \n and \r.
fn is_bert_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// The chars the reference's cleaning drops: control (Cc), format (Cf) and private-use (Co)
/// chars, except \t, \n and \r, which are whitespace. Unassigned chars (Cn) are kept.
fn is_other_than_whitespace(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(
        get_general_category(c),
        GeneralCategory::Control | GeneralCategory::Format | GeneralCategory::PrivateUse
    )
}

/// The CJK ideograph blocks BERT writes as words of their own, exactly the reference's ranges.
/// (The reference's Extension E range starts at 0x2B920, not at the block's 0x2B820 as in the
/// original BERT code: 0x2B820..0x2B91F stay inside their word.)
fn is_cjk_ideograph(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// BERT's punctuation: all ASCII non-alphanumeric printables (so `$`, `+`, `^`, `|` too) and
/// every Unicode punctuation category.
fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            get_general_category(c),
            GeneralCategory::ConnectorPunctuation
                | GeneralCategory::DashPunctuation
                | GeneralCategory::OpenPunctuation
                | GeneralCategory::ClosePunctuation
                | GeneralCategory::InitialPunctuation
                | GeneralCategory::FinalPunctuation
                | GeneralCategory::OtherPunctuation
        )
}

/// HuggingFace's `BertPreTokenizer`: the words of normalized text, split on whitespace, each
/// punctuation char a word of its own.
fn bert_words(normalized: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for chunk in normalized.split(char::is_whitespace) {
        let mut word_start = 0;
        for (at, c) in chunk.char_indices() {
            if is_bert_punctuation(c) {
                if word_start < at {
                    words.push(&chunk[word_start..at]);
                }
                let end = at + c.len_utf8();
                words.push(&chunk[at..end]);
                word_start = end;
            }
        }
        if word_start < chunk.len() {
            words.push(&chunk[word_start..]);
        }
    }
    words
}

// ---- tokenizer.json ----

/// The parts of a tokenizer.json this tokenizer reads; sections are checked one by one so that
/// an error can name the section.
#[derive(Deserialize)]
struct TokenizerJson {
    #[serde(default)]
    added_tokens: Vec<Value>,
    #[serde(default)]
    normalizer: Value,
    #[serde(default)]
    pre_tokenizer: Value,
    model: Value,
    #[serde(default)]
    post_processor: Value,
    #[serde(default)]
    padding: Value,
    #[serde(default)]
    truncation: Value,
}

fn yes() -> bool {
    true
}

/// `BertNormalizer`'s options, with the reference's defaults.
#[derive(Deserialize)]
struct BertNormalizerJson {
    #[serde(default = "yes")]
    clean_text: bool,
    #[serde(default = "yes")]
    handle_chinese_chars: bool,
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "yes")]
    lowercase: bool,
}

fn default_prefix() -> String {
    "##".to_string()
}

fn default_max_input_chars_per_word() -> usize {
    100
}

#[derive(Deserialize)]
struct WordPieceJson {
    vocab: HashMap<String, u32>,
    unk_token: String,
    #[serde(default = "default_prefix")]
    continuing_subword_prefix: String,
    #[serde(default = "default_max_input_chars_per_word")]
    max_input_chars_per_word: usize,
}

/// `TemplateProcessing`'s template for a single sequence and its special tokens' ids.
#[derive(Deserialize)]
struct TemplateProcessingJson {
    single: Vec<TemplatePieceJson>,
    special_tokens: HashMap<String, TemplateSpecialTokenJson>,
}

#[derive(Deserialize)]
enum TemplatePieceJson {
    SpecialToken { id: String },
    Sequence { id: String },
}

#[derive(Deserialize)]
struct TemplateSpecialTokenJson {
    ids: Vec<u32>,
}

/// `BertProcessing`: `[CLS] A [SEP]` with the two tokens given as (content, id).
#[derive(Deserialize)]
struct BertProcessingJson {
    cls: (String, u32),
    sep: (String, u32),
}

#[derive(Deserialize)]
struct PaddingJson {
    pad_id: u32,
}

#[derive(Deserialize)]
struct AddedTokenJson {
    id: u32,
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
}

fn malformed(field: &str, problem: impl Into<String>) -> TokenizerError {
    TokenizerError::Malformed {
        field: field.to_string(),
        problem: problem.into(),
    }
}

fn not_in_vocab(token: &str) -> String {
    format!("{token:?} is not in model.vocab")
}

/// A JSON value as an error message shows it: strings quoted, long values cut.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The section's `type`, which must be present.
fn section_type<'v>(section: &'v Value, name: &str) -> Result<&'v str, TokenizerError> {
    match section.get("type") {
        Some(Value::String(type_name)) => Ok(type_name),
        Some(other) => Err(malformed(
            &format!("{name}.type"),
            format!("{} is not a string", describe(other)),
        )),
        None => Err(malformed(
            name,
            format!("{} has no \"type\"", describe(section)),
        )),
    }
}

/// The section, which must have `"type": expected`, read as `T`.
fn typed_section<T: for<'de> Deserialize<'de>>(
    section: &Value,
    name: &str,
    expected: &'static str,
) -> Result<T, TokenizerError> {
    if section.is_null() {
        return Err(TokenizerError::Unsupported {
            field: name.to_string(),
            found: "null".to_string(),
            expected,
        });
    }
    let found = section_type(section, name)?;
    if found != expected {
        return Err(TokenizerError::Unsupported {
            field: format!("{name}.type"),
            found: format!("{found:?}"),
            expected,
        });
    }
    T::deserialize(section).map_err(|error| malformed(name, error.to_string()))
}

/// The ids of `[CLS]` and `[SEP]` (whatever the template names them) from the post-processor.
fn special_ids(post_processor: &Value) -> Result<(u32, u32), TokenizerError> {
    const EXPECTED: &str = "TemplateProcessing or BertProcessing";
    if post_processor.is_null() {
        return Err(TokenizerError::Unsupported {
            field: "post_processor".to_string(),
            found: "null".to_string(),
            expected: EXPECTED,
        });
    }
    match section_type(post_processor, "post_processor")? {
        "BertProcessing" => {
            let bert: BertProcessingJson =
                typed_section(post_processor, "post_processor", "BertProcessing")?;
            Ok((bert.cls.1, bert.sep.1))
        }
        "TemplateProcessing" => {
            let template: TemplateProcessingJson =
                typed_section(post_processor, "post_processor", "TemplateProcessing")?;
            let [
                TemplatePieceJson::SpecialToken { id: cls },
                TemplatePieceJson::Sequence { .. },
                TemplatePieceJson::SpecialToken { id: sep },
            ] = template.single.as_slice()
            else {
                let found = template
                    .single
                    .iter()
                    .map(|piece| match piece {
                        TemplatePieceJson::SpecialToken { id } => id.clone(),
                        TemplatePieceJson::Sequence { id } => format!("${id}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                return Err(TokenizerError::Unsupported {
                    field: "post_processor.single".to_string(),
                    found: format!("{found:?}"),
                    expected: "a special token, the sequence, a special token ([CLS] $A [SEP])",
                });
            };
            let single_id = |name: &str| -> Result<u32, TokenizerError> {
                let field = format!("post_processor.special_tokens[{name:?}]");
                match template
                    .special_tokens
                    .get(name)
                    .map(|token| token.ids.as_slice())
                {
                    Some(&[id]) => Ok(id),
                    Some(ids) => Err(malformed(&field, format!("has {} ids, not one", ids.len()))),
                    None => Err(malformed(&field, "is missing")),
                }
            };
            Ok((single_id(cls)?, single_id(sep)?))
        }
        other => Err(TokenizerError::Unsupported {
            field: "post_processor.type".to_string(),
            found: format!("{other:?}"),
            expected: EXPECTED,
        }),
    }
}

/// The padding section's `pad_id`, or the vocabulary's `[PAD]` where the file pads nothing.
fn pad_id(padding: &Value, vocab: &HashMap<String, u32>) -> Result<u32, TokenizerError> {
    if padding.is_null() {
        return vocab
            .get("[PAD]")
            .copied()
            .ok_or_else(|| malformed("padding", format!("is null and {}", not_in_vocab("[PAD]"))));
    }
    check_right_direction(padding, "padding")?;
    let padding = PaddingJson::deserialize(padding)
        .map_err(|error| malformed("padding", error.to_string()))?;
    Ok(padding.pad_id)
}

/// Refuses left padding or truncation: `encode` pads and truncates on the right.
fn check_right_direction(section: &Value, name: &str) -> Result<(), TokenizerError> {
    match section.get("direction") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(direction)) if direction == "Right" => Ok(()),
        Some(other) => Err(TokenizerError::Unsupported {
            field: format!("{name}.direction"),
            found: describe(other),
            expected: "\"Right\"",
        }),
    }
}

/// The added tokens (content, id), longest first. Only tokens matched on the raw text as they
/// stand are supported (all of BERT's are).
fn added_tokens(tokens: &[Value]) -> Result<Vec<(String, u32)>, TokenizerError> {
    let mut added = Vec::with_capacity(tokens.len());
    for (index, token) in tokens.iter().enumerate() {
        let field = format!("added_tokens[{index}]");
        let token = AddedTokenJson::deserialize(token)
            .map_err(|error| malformed(&field, error.to_string()))?;
        if token.single_word || token.lstrip || token.rstrip || token.normalized {
            return Err(TokenizerError::Unsupported {
                field: format!("{field} ({:?})", token.content),
                found: format!(
                    "single_word {}, lstrip {}, rstrip {}, normalized {}",
                    token.single_word, token.lstrip, token.rstrip, token.normalized
                ),
                expected: "an added token with single_word, lstrip, rstrip and normalized false",
            });
        }
        // The reference never matches an empty added token.
        if !token.content.is_empty() {
            added.push((token.content, token.id));
        }
    }
    added.sort_by_key(|(content, _)| std::cmp::Reverse(content.len()));
    Ok(added)
}

//! The BERT WordPiece tokenizer against the reference (HuggingFace `tokenizers` 0.22.1): every
//! golden case of tests/data/golden_tokens.json (made by scripts/reference/golden_tokens.py) must
//! give exactly the reference's ids and mask, and a few cases are checked by hand.
//!
//! The tokenizer.json is all-MiniLM-L6-v2's, which scripts/fetch-transformer.sh fetches; without
//! it these tests say so and pass, unless SPECDEF_REQUIRE_TRANSFORMER=1.

mod common;

use serde::Deserialize;
use specdef::tokenizer::{Encoding, TokenizerError, WordPiece};
use specdef::transformer_files::model_dir;
use std::path::PathBuf;

/// The reference's sequence length for this model (tokenizer.json's truncation and padding).
const MAX_LEN: usize = 128;

fn tokenizer_json_path() -> PathBuf {
    model_dir().join("tokenizer.json")
}

/// all-MiniLM-L6-v2's tokenizer, or None (with the reason printed) where it was not fetched.
fn minilm_tokenizer() -> Option<WordPiece> {
    let path = tokenizer_json_path();
    if !common::fetched(&path) {
        return None;
    }
    Some(WordPiece::from_file(&path).expect("all-MiniLM-L6-v2's tokenizer.json loads"))
}

fn minilm_tokenizer_json() -> Option<String> {
    minilm_tokenizer()?;
    Some(std::fs::read_to_string(tokenizer_json_path()).expect("tokenizer.json reads"))
}

#[derive(Deserialize)]
struct GoldenCase {
    text: String,
    ids: Vec<u32>,
    attention_mask: Vec<u32>,
}

fn golden_cases() -> Vec<GoldenCase> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden_tokens.json");
    let text = std::fs::read_to_string(&path).expect("the golden file reads");
    serde_json::from_str(&text).expect("the golden file parses")
}

/// The pieces of `ids` as vocabulary entries, for messages and hand checks.
fn pieces(tokenizer: &WordPiece, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&id| tokenizer.token(id).unwrap_or("<no such id>").to_string())
        .collect()
}

#[test]
fn every_golden_case_matches_the_reference() {
    let Some(tokenizer) = minilm_tokenizer() else {
        return;
    };
    let cases = golden_cases();
    assert!(cases.len() >= 42, "only {} golden cases", cases.len());
    let mut mismatches = Vec::new();
    for case in &cases {
        let got = tokenizer.encode(&case.text, MAX_LEN).unwrap();
        let expected = Encoding {
            ids: case.ids.clone(),
            attention_mask: case.attention_mask.clone(),
        };
        if got != expected {
            mismatches.push(format!(
                "{:?}\n  got      {:?}\n  expected {:?}\n  mask got {:?}\n  expected {:?}",
                case.text,
                pieces(&tokenizer, &got.ids),
                pieces(&tokenizer, &expected.ids),
                got.attention_mask,
                expected.attention_mask
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} golden cases differ from the reference:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn hand_checked_tokens() {
    let Some(tokenizer) = minilm_tokenizer() else {
        return;
    };
    let tokens = |text: &str| pieces(&tokenizer, &tokenizer.tokens(text));

    // Lowercased, the accents stripped (NFD, then the non-spacing marks dropped): the words
    // meet the unaccented vocabulary entries, whole.
    assert_eq!(tokens("Café NAÏVE"), ["cafe", "naive"]);
    // A precomposed and a decomposed accent give the same word.
    assert_eq!(tokens("re\u{301}sume\u{301}"), tokens("résumé"));
    // Each punctuation char is a word; the gloss separator ':' too.
    assert_eq!(tokens("dog: a canine"), ["dog", ":", "a", "canine"]);
    // '$' is Unicode's currency symbol but ASCII punctuation, so BERT splits it off.
    assert_eq!(tokens("$5"), ["$", "5"]);
    // A word not in the vocabulary: greedy longest pieces, later ones with "##".
    assert_eq!(tokens("unaffable"), ["una", "##ffa", "##ble"]);
    // A CJK ideograph is a word of its own even inside a latin word.
    assert_eq!(tokens("a日b"), ["a", "日", "b"]);
    // A char no piece covers makes the whole word one [UNK], not just that char.
    assert_eq!(tokens("snow☃man"), ["[UNK]"]);
    // Control and zero-width format chars vanish without splitting the word.
    assert_eq!(tokens("ca\u{200B}t\u{7}s"), ["cats"]);
    // An added token written in the text is its own id; in lower case it is plain text.
    assert_eq!(tokens("[MASK] [mask]"), ["[MASK]", "[", "mask", "]"]);
    // Nothing but whitespace has no tokens.
    assert!(tokens(" \t\n ").is_empty());
}

#[test]
fn encode_adds_specials_truncates_and_pads() {
    let Some(tokenizer) = minilm_tokenizer() else {
        return;
    };
    let cls = 101;
    let sep = 102;
    let pad = 0;
    let dog = tokenizer.tokens("dog")[0];

    let encoding = tokenizer.encode("dog dog dog", 6).unwrap();
    assert_eq!(encoding.ids, [cls, dog, dog, dog, sep, pad]);
    assert_eq!(encoding.attention_mask, [1, 1, 1, 1, 1, 0]);

    // Truncation keeps the first max_len - 2 tokens and the closing [SEP].
    let encoding = tokenizer.encode("dog dog dog", 4).unwrap();
    assert_eq!(encoding.ids, [cls, dog, dog, sep]);
    assert_eq!(encoding.attention_mask, [1, 1, 1, 1]);

    let encoding = tokenizer.encode("dog", 2).unwrap();
    assert_eq!(encoding.ids, [cls, sep]);

    for max_len in [0, 1] {
        let error = tokenizer.encode("dog", max_len).unwrap_err();
        assert!(
            matches!(error, TokenizerError::MaxLenTooSmall { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("at least 2"), "{error}");
    }
}

#[test]
fn vocabulary_lookups() {
    let Some(tokenizer) = minilm_tokenizer() else {
        return;
    };
    assert_eq!(tokenizer.vocab_size(), 30522);
    assert_eq!(tokenizer.token(0), Some("[PAD]"));
    assert_eq!(tokenizer.token(100), Some("[UNK]"));
    assert_eq!(tokenizer.token(101), Some("[CLS]"));
    assert_eq!(tokenizer.token(102), Some("[SEP]"));
    assert_eq!(tokenizer.token(30522), None);
}

/// all-MiniLM-L6-v2's tokenizer.json with one section replaced.
fn with_section(json: &str, section: &str, value: serde_json::Value) -> String {
    let mut parsed: serde_json::Value = serde_json::from_str(json).unwrap();
    parsed[section] = value;
    parsed.to_string()
}

#[test]
fn another_normalizer_is_refused_by_name() {
    let Some(json) = minilm_tokenizer_json() else {
        return;
    };
    let changed = with_section(
        &json,
        "normalizer",
        serde_json::json!({"type": "Lowercase"}),
    );
    let error = WordPiece::from_tokenizer_json(&changed)
        .unwrap_err()
        .to_string();
    assert!(error.contains("normalizer.type"), "{error}");
    assert!(error.contains("\"Lowercase\""), "{error}");
    assert!(error.contains("BertNormalizer"), "{error}");

    let changed = with_section(&json, "normalizer", serde_json::Value::Null);
    let error = WordPiece::from_tokenizer_json(&changed)
        .unwrap_err()
        .to_string();
    assert!(error.contains("normalizer is null"), "{error}");
}

#[test]
fn another_pre_tokenizer_model_or_template_is_refused_by_name() {
    let Some(json) = minilm_tokenizer_json() else {
        return;
    };
    let changed = with_section(
        &json,
        "pre_tokenizer",
        serde_json::json!({"type": "Whitespace"}),
    );
    let error = WordPiece::from_tokenizer_json(&changed)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pre_tokenizer.type is \"Whitespace\""),
        "{error}"
    );

    let mut parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    parsed["model"]["type"] = "BPE".into();
    let error = WordPiece::from_tokenizer_json(&parsed.to_string())
        .unwrap_err()
        .to_string();
    assert!(error.contains("model.type is \"BPE\""), "{error}");

    let mut parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    parsed["model"]["unk_token"] = "<unk>".into();
    let error = WordPiece::from_tokenizer_json(&parsed.to_string())
        .unwrap_err()
        .to_string();
    assert!(error.contains("model.unk_token"), "{error}");
    assert!(error.contains("\"<unk>\""), "{error}");

    let mut parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    parsed["post_processor"]["single"] = serde_json::json!([
        {"Sequence": {"id": "A", "type_id": 0}},
        {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
    ]);
    let error = WordPiece::from_tokenizer_json(&parsed.to_string())
        .unwrap_err()
        .to_string();
    assert!(error.contains("post_processor.single"), "{error}");
    assert!(error.contains("$A [SEP]"), "{error}");

    let changed = with_section(
        &json,
        "padding",
        serde_json::json!({"direction": "Left", "pad_id": 0}),
    );
    let error = WordPiece::from_tokenizer_json(&changed)
        .unwrap_err()
        .to_string();
    assert!(error.contains("padding.direction is \"Left\""), "{error}");
}

#[test]
fn normalizer_options_are_honoured() {
    let Some(json) = minilm_tokenizer_json() else {
        return;
    };
    // Cased, accents kept: the uncased vocabulary has no "Hello" and no 'é' piece after "caf",
    // so both words are [UNK], where the uncased tokenizer finds "hello" and "cafe".
    let cased = with_section(
        &json,
        "normalizer",
        serde_json::json!({"type": "BertNormalizer", "lowercase": false, "strip_accents": false}),
    );
    let cased = WordPiece::from_tokenizer_json(&cased).unwrap();
    assert_eq!(pieces(&cased, &cased.tokens("Hello")), ["[UNK]"]);
    assert_eq!(pieces(&cased, &cased.tokens("hello")), ["hello"]);
}

#[test]
fn malformed_json_is_refused() {
    for text in ["", "{", "[1, 2]", "{\"model\": 3}", "not json"] {
        let error = WordPiece::from_tokenizer_json(text).unwrap_err();
        assert!(!error.to_string().is_empty());
    }
    let error = WordPiece::from_tokenizer_json("{").unwrap_err();
    assert!(
        matches!(error, TokenizerError::Json(_)),
        "malformed JSON gives {error}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let path = PathBuf::from("no/such/folder/tokenizer.json");
    let error = WordPiece::from_file(&path).unwrap_err().to_string();
    assert!(error.contains("no/such/folder/tokenizer.json"), "{error}");
}

//! Where the transformer variant's downloaded files live.
//!
//! The pretrained encoder and WordNet are too large (and not ours) to commit, so
//! `scripts/fetch-transformer.sh` fetches them into an ignored cache folder. Everything that reads
//! them (the binary and the tests) finds that folder through these functions, so an environment
//! variable can point all of them elsewhere at once.

use std::path::PathBuf;

/// Environment variable naming the cache folder; unset or empty means [`DEFAULT_TRANSFORMER_DIR`].
pub const TRANSFORMER_DIR_ENV: &str = "SPECDEF_TRANSFORMER_DIR";

/// The cache folder `scripts/fetch-transformer.sh` fills by default, relative to the crate root
/// (the current folder of `cargo test` and of a `specdef` run from a checkout).
pub const DEFAULT_TRANSFORMER_DIR: &str = "cache/transformer";

/// The pretrained encoder's folder name inside the cache folder.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// What to tell someone whose cache folder lacks a file.
pub const FETCH_HINT: &str = "run scripts/fetch-transformer.sh to fetch all-MiniLM-L6-v2 and \
     WordNet into cache/transformer (or set SPECDEF_TRANSFORMER_DIR to where they are)";

/// The cache folder: `$SPECDEF_TRANSFORMER_DIR`, else `cache/transformer`.
pub fn transformer_dir() -> PathBuf {
    match std::env::var_os(TRANSFORMER_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_TRANSFORMER_DIR),
    }
}

/// The pretrained encoder's folder (config.json, model.safetensors, tokenizer.json).
pub fn model_dir() -> PathBuf {
    transformer_dir().join(MODEL_NAME)
}

/// WordNet's folder (data.noun).
pub fn wordnet_dir() -> PathBuf {
    transformer_dir().join("wordnet")
}

/// Where `specdef release-transformer` writes by default and the app's demo reads natively (the
/// browser demo's `transformer/released.safetensors` is a copy web/build.sh makes).
pub fn released_path() -> PathBuf {
    transformer_dir().join("released.safetensors")
}

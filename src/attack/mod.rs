//! The adaptive attacker's rewrites of a defended model before fine-tuning (fusion, injection,
//! factorisation, LoRA). The fine-tuning itself, with first- and second-order optimisers, is
//! `training/`, which attacks, pretraining, suppression and trainability share.

mod adaptive;

pub use adaptive::{AdaptiveAttack, DEFAULT_LORA_RANK, LoraPlacement};

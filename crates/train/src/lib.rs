//! bert2bert-train: candle models, MLM data and the two-stage bert2BERT pre-training loop.
#![warn(missing_docs)]

pub mod bert;
pub mod data;
pub mod error;
pub mod export;
pub mod flops;
pub mod fused;
pub mod gpt2;
pub mod optim;
pub mod schedule;
pub mod trainer;
pub mod vars;

pub use error::{Result, TrainError};

//! bert2bert-train: candle models, MLM data and the two-stage bert2BERT pre-training loop.
#![warn(missing_docs)]

pub mod data;

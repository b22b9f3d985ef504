//! bert2bert-train: candle models, MLM data and the two-stage bert2BERT pre-training loop.
#![warn(missing_docs)]

pub mod arch;
pub mod bert;
pub mod data;
pub mod device;
pub mod error;
pub mod expf;
pub mod export;
pub mod flops;
pub mod fused;
pub mod gpt2;
pub mod layers;
pub mod optim;
pub mod schedule;
pub mod streams;
pub mod trainer;
pub mod vars;

pub use arch::{Arch, FreshConfig, ModelShape};
pub use device::{DeviceKind, device};
pub use error::{Result, TrainError};
pub use streams::{Data, Streams, default_tokenizer_dir, load_data};

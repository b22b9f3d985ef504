//! bert2bert-checkpoint: Hugging Face model folders (`config.json` + safetensors) to typed
//! ndarray weights and back, exactly.
//!
//! Orientation: every linear map is stored as `weight: (in, out)` so that `y = x W + b`
//! (the spec's convention). Loaders transpose Hugging Face `nn.Linear` weights, which are
//! stored `(out, in)`; writers transpose back. Embeddings stay `(rows, hidden)`.
#![warn(missing_docs)]

pub mod bert;
pub mod config;
pub mod dtype;
pub mod error;
pub mod folder;
pub mod gpt2;
pub mod llama;
mod loader;
pub mod memory;
pub mod model;
pub mod nn;
pub mod paths;
mod preflight;
pub mod random;
pub mod safetensors;

pub use bert::{Bert, BertEmbeddings, BertLayer, MlmHead};
pub use config::{Activation, BertConfig, Family, Gpt2Config};
pub use dtype::Dtype;
pub use error::{CheckpointError, Result};
pub use folder::{AtomicDir, ModelDir, WriteOptions, read_model_dir};
pub use gpt2::{Gpt2, Gpt2Block, fuse_qkv};
pub use llama::{Llama, LlamaConfig, LlamaKind, LlamaSource, LlamaWeights};
pub use model::{Dropped, Model, NamedTensor};
pub use nn::{LayerNorm, Linear};

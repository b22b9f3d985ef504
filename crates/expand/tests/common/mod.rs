//! Shared strategies and helpers of the property tests.
#![allow(dead_code)]

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Bert, BertConfig, Model};
use proptest::prelude::*;

/// Cases per property (the issue asks for at least 128 in CI).
pub const CASES: u32 = 128;

/// A small source shape: (layers, heads, head dim, FFN, vocab, max positions).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_pos: usize,
}

impl Shape {
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn config(&self) -> BertConfig {
        BertConfig::new(
            self.vocab,
            self.hidden(),
            self.layers,
            self.heads,
            self.ffn,
            self.max_pos,
        )
    }
}

pub fn shape() -> impl Strategy<Value = Shape> {
    (
        1usize..=3,
        1usize..=4,
        prop::sample::select(vec![2usize, 4, 8]),
        1usize..=24,
        5usize..=50,
        12usize..=16,
    )
        .prop_map(|(layers, heads, head_dim, ffn, vocab, max_pos)| Shape {
            layers,
            heads,
            head_dim,
            ffn,
            vocab,
            max_pos,
        })
}

/// Which optional heads a random model has.
pub fn heads() -> impl Strategy<Value = Heads> {
    prop::sample::select(vec![
        Heads::ALL,
        Heads::MLM,
        Heads {
            mlm: false,
            pooler: true,
            nsp: false,
        },
    ])
}

/// A random model with every parameter of unit scale (biases and LayerNorms perturbed), so
/// that a mistake in any tensor shows.
pub fn model(s: &Shape, heads: Heads, seed: u64) -> Model {
    Model::Bert(Bert::random(&s.config(), heads, Init::TEST, seed))
}

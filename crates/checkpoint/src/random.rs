//! Seeded random weights: test models, benchmark inputs and fresh initialisation, with no
//! dependency beyond this crate. SplitMix64 + Box-Muller: small, portable, reproducible.

use crate::bert::{Bert, BertEmbeddings, BertLayer, MlmHead};
use crate::config::{BertConfig, Gpt2Config};
use crate::gpt2::{Gpt2, Gpt2Block};
use crate::nn::{LayerNorm, Linear};
use ndarray::{Array1, Array2};

/// A small seeded generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// How to draw random weights.
#[derive(Clone, Copy, Debug)]
pub struct Init {
    /// Std of weight matrices and embeddings (Hugging Face uses 0.02).
    pub std: f32,
    /// Std of biases (0 for a fresh model; > 0 makes tests see every bias).
    pub bias_std: f32,
    /// Std of the LayerNorm perturbation around gamma = 1, beta = 0 (0 for a fresh model).
    pub ln_std: f32,
}

impl Init {
    /// Hugging Face's initialisation: N(0, 0.02) weights, zero biases, identity LayerNorms.
    pub const FRESH: Self = Self {
        std: 0.02,
        bias_std: 0.0,
        ln_std: 0.0,
    };
    /// Every parameter random and of unit scale: makes function-preservation tests sensitive.
    pub const TEST: Self = Self {
        std: 0.3,
        bias_std: 0.1,
        ln_std: 0.2,
    };
}

/// Which optional BERT heads to create.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// The MLM head (tied decoder).
    pub mlm: bool,
    /// The pooler.
    pub pooler: bool,
    /// The NSP classifier.
    pub nsp: bool,
}

impl Heads {
    /// `BertForPreTraining`: every head.
    pub const ALL: Self = Self {
        mlm: true,
        pooler: true,
        nsp: true,
    };
    /// `BertForMaskedLM`: MLM head only.
    pub const MLM: Self = Self {
        mlm: true,
        pooler: false,
        nsp: false,
    };
}

struct Draw<'a> {
    rng: &'a mut SplitMix64,
    init: Init,
}

impl Draw<'_> {
    fn mat(&mut self, r: usize, c: usize) -> Array2<f32> {
        let s = self.init.std;
        Array2::from_shape_simple_fn((r, c), || s * self.rng.normal())
    }
    fn vec(&mut self, n: usize, mean: f32, std: f32) -> Array1<f32> {
        Array1::from_shape_simple_fn(n, || mean + std * self.rng.normal())
    }
    fn linear(&mut self, i: usize, o: usize) -> Linear {
        let b = self.init.bias_std;
        Linear {
            weight: self.mat(i, o),
            bias: self.vec(o, 0.0, b),
        }
    }
    fn ln(&mut self, n: usize) -> LayerNorm {
        let s = self.init.ln_std;
        LayerNorm {
            weight: self.vec(n, 1.0, s),
            bias: self.vec(n, 0.0, s),
        }
    }
}

impl Bert {
    /// A BERT of shape `config` with weights drawn from `init`, seeded.
    pub fn random(config: &BertConfig, heads: Heads, init: Init, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut d = Draw {
            rng: &mut rng,
            init,
        };
        let c = config;
        let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let embeddings = BertEmbeddings {
            word: d.mat(v, h),
            position: d.mat(c.max_position_embeddings, h),
            token_type: d.mat(c.type_vocab_size, h),
            layer_norm: d.ln(h),
        };
        let layers = (0..c.num_hidden_layers)
            .map(|_| BertLayer {
                query: d.linear(h, h),
                key: d.linear(h, h),
                value: d.linear(h, h),
                attention_output: d.linear(h, h),
                attention_layer_norm: d.ln(h),
                intermediate: d.linear(h, f),
                output: d.linear(f, h),
                output_layer_norm: d.ln(h),
            })
            .collect();
        let pooler = heads.pooler.then(|| d.linear(h, h));
        let mlm = heads.mlm.then(|| MlmHead {
            transform: d.linear(h, h),
            layer_norm: d.ln(h),
            bias: d.vec(v, 0.0, init.bias_std),
            decoder: None,
        });
        let nsp = heads.nsp.then(|| d.linear(h, 2));
        Self {
            config: config.clone(),
            embeddings,
            layers,
            pooler,
            mlm,
            nsp,
            prefixed: heads.mlm || heads.nsp,
        }
    }
}

impl Gpt2 {
    /// A `GPT2LMHeadModel` (tied LM head, `transformer.` names) of shape `config` with weights
    /// drawn from `init`, seeded.
    pub fn random(config: &Gpt2Config, init: Init, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut d = Draw {
            rng: &mut rng,
            init,
        };
        let c = config;
        let (h, f, v) = (c.n_embd, c.inner_dim(), c.vocab_size);
        let wte = d.mat(v, h);
        let wpe = d.mat(c.n_positions, h);
        let blocks = (0..c.n_layer)
            .map(|_| Gpt2Block {
                ln_1: d.ln(h),
                c_attn: d.linear(h, 3 * h),
                attn_proj: d.linear(h, h),
                ln_2: d.ln(h),
                fc: d.linear(h, f),
                mlp_proj: d.linear(f, h),
            })
            .collect();
        let ln_f = d.ln(h);
        // An untied config gets its own head, so the model is valid either way.
        let lm_head = (!c.tie_word_embeddings).then(|| d.mat(h, v));
        Self {
            config: config.clone(),
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            prefixed: true,
        }
    }
}

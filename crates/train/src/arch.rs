//! Model families of fresh models, and the config of a fresh model of a given shape.

use crate::bert::Params;
use crate::data::causal::END_OF_TEXT_ID;
use crate::gpt2::Gpt2Params;
use crate::trainer::ModelParams;
use bert2bert_checkpoint::{BertConfig, Family, Gpt2Config};
use candle_core::Device;
use serde::{Deserialize, Serialize};

/// Model family of a fresh model (and with it the objective and the bundled tokenizer).
// Serialized as "bert" / "gpt2": experiment plans and pretrain_args.json store them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// BERT (`BertForMaskedLM`), masked-LM objective, WordPiece tokenizer.
    #[default]
    Bert,
    /// GPT-2 (`GPT2LMHeadModel`), next-token objective, byte-level BPE tokenizer.
    Gpt2,
}

impl Arch {
    /// The training objective, as in tables and plots.
    pub fn objective(self) -> &'static str {
        match self {
            Arch::Bert => "MLM",
            Arch::Gpt2 => "next-token",
        }
    }

    /// The checkpoint family.
    pub fn family(self) -> Family {
        match self {
            Arch::Bert => Family::Bert,
            Arch::Gpt2 => Family::Gpt2,
        }
    }
}

/// The shape of a model: everything a fresh config needs besides vocabulary and positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    /// Transformer layers (BERT encoder layers, GPT-2 blocks).
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// FFN size.
    pub ffn: usize,
}

/// The config of a fresh model: Hugging Face defaults, the shape, and the bundled tokenizers'
/// special ids (BERT's `[PAD]` and GPT-2's `<|endoftext|>` are id 0).
#[derive(Clone, Debug, PartialEq)]
pub enum FreshConfig {
    /// A `BertForMaskedLM`.
    Bert(BertConfig),
    /// A `GPT2LMHeadModel`.
    Gpt2(Gpt2Config),
}

impl FreshConfig {
    /// A fresh `arch` model of `shape` with `vocab` tokens and `positions` positions.
    pub fn new(arch: Arch, vocab: usize, positions: usize, shape: ModelShape) -> Self {
        let ModelShape {
            layers,
            hidden,
            heads,
            ffn,
        } = shape;
        match arch {
            Arch::Bert => {
                let mut c = BertConfig::new(vocab, hidden, layers, heads, ffn, positions);
                c.raw.insert("pad_token_id".into(), 0.into());
                Self::Bert(c)
            }
            Arch::Gpt2 => {
                let mut c = Gpt2Config::new(vocab, hidden, layers, heads, positions);
                // `n_inner` stays implicit (null) at the default 4 x hidden.
                if ffn != 4 * hidden {
                    c.n_inner = Some(ffn);
                }
                // The bundled BPE tokenizer's one special token, <|endoftext|>, is id 0.
                for k in ["bos_token_id", "eos_token_id"] {
                    c.raw.insert(k.into(), END_OF_TEXT_ID.into());
                }
                Self::Gpt2(c)
            }
        }
    }

    /// The family.
    pub fn arch(&self) -> Arch {
        match self {
            Self::Bert(_) => Arch::Bert,
            Self::Gpt2(_) => Arch::Gpt2,
        }
    }

    /// The BERT config, if this is a BERT.
    pub fn as_bert(&self) -> Option<&BertConfig> {
        match self {
            Self::Bert(c) => Some(c),
            Self::Gpt2(_) => None,
        }
    }

    /// Seeded fresh weights of this config on `device` (Hugging Face initialisation).
    pub fn params(&self, seed: u64, device: &Device) -> crate::Result<ModelParams> {
        Ok(match self {
            Self::Bert(c) => Params::fresh(c, seed, device)?.into(),
            Self::Gpt2(c) => Gpt2Params::fresh(c, seed, device)?.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(layers: usize, hidden: usize, heads: usize, ffn: usize) -> ModelShape {
        ModelShape {
            layers,
            hidden,
            heads,
            ffn,
        }
    }

    #[test]
    fn serde_names_are_the_stored_ones() {
        assert_eq!(serde_json::to_string(&Arch::Bert).unwrap(), "\"bert\"");
        assert_eq!(serde_json::to_string(&Arch::Gpt2).unwrap(), "\"gpt2\"");
        assert_eq!(Arch::default(), Arch::Bert);
    }

    /// A fresh config is the same whether built at its shape or reshaped from another one
    /// (the experiment reshapes one family config for every run; `pretrain` builds it directly).
    #[test]
    fn fresh_config_equals_a_reshaped_one() {
        let FreshConfig::Bert(b) = FreshConfig::new(Arch::Bert, 100, 64, shape(2, 48, 3, 96))
        else {
            panic!("a BERT config");
        };
        let reshaped = BertConfig::new(100, 32, 1, 1, 32, 64).with_shape(2, 48, 3, 96);
        let mut r = reshaped;
        r.raw.insert("pad_token_id".into(), 0.into());
        assert_eq!(b, r);
        for ffn in [192, 100] {
            let FreshConfig::Gpt2(g) = FreshConfig::new(Arch::Gpt2, 100, 64, shape(2, 48, 3, ffn))
            else {
                panic!("a GPT-2 config");
            };
            let mut r = Gpt2Config::new(100, 32, 1, 1, 64);
            for k in ["bos_token_id", "eos_token_id"] {
                r.raw.insert(k.into(), END_OF_TEXT_ID.into());
            }
            let r = r.with_shape(2, 48, 3, ffn);
            assert_eq!(g, r, "ffn {ffn}");
            assert_eq!(g.n_inner, (ffn != 192).then_some(ffn));
            assert_eq!(g.raw["eos_token_id"], 0);
        }
    }

    #[test]
    fn fresh_params_have_the_shape_and_are_seeded() {
        let dev = Device::Cpu;
        for arch in [Arch::Bert, Arch::Gpt2] {
            let c = FreshConfig::new(arch, 50, 16, shape(2, 16, 2, 32));
            assert_eq!(c.arch(), arch);
            let p = c.params(3, &dev).unwrap();
            assert_eq!(p.family(), arch.family());
            assert_eq!((p.layers(), p.vocab_size(), p.max_positions()), (2, 50, 16));
            let values = |p: &ModelParams| -> Vec<f32> {
                p.named_vars()
                    .iter()
                    .flat_map(|(_, v)| {
                        v.as_tensor()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap()
                    })
                    .collect()
            };
            assert_eq!(values(&p), values(&c.params(3, &dev).unwrap()));
            assert_ne!(values(&p), values(&c.params(4, &dev).unwrap()));
        }
    }
}

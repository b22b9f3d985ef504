//! The weights a [`Trainer`] trains ([`ModelParams`]) and the candle model built over them.

use super::*;

/// The weights a [`Trainer`] trains: a BERT with its MLM head or a GPT-2 with its LM head.
// One value per training run: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ModelParams {
    /// `BertForMaskedLM`, trained on [`Batch::Mlm`].
    Bert(Params),
    /// `GPT2LMHeadModel`, trained on [`Batch::Causal`].
    Gpt2(Gpt2Params),
}

impl From<Params> for ModelParams {
    fn from(p: Params) -> Self {
        ModelParams::Bert(p)
    }
}

impl From<Gpt2Params> for ModelParams {
    fn from(p: Gpt2Params) -> Self {
        ModelParams::Gpt2(p)
    }
}

/// A built candle model over [`ModelParams`].
pub(crate) enum Net {
    Bert(BertForMaskedLM),
    Gpt2(Gpt2LMHeadModel),
}

impl ModelParams {
    /// Exact f32 copies of a typed checkpoint's weights on `device` (BERT needs its MLM head).
    pub fn from_model(model: &Model, device: &Device) -> Result<Self> {
        match model {
            Model::Bert(b) => Ok(Params::from_bert(b, device)?.into()),
            Model::Gpt2(g) => Ok(Gpt2Params::from_gpt2(g, device)?.into()),
        }
    }

    /// The model family.
    pub fn family(&self) -> Family {
        match self {
            ModelParams::Bert(_) => Family::Bert,
            ModelParams::Gpt2(_) => Family::Gpt2,
        }
    }

    /// Transformer layers (BERT encoder layers, GPT-2 blocks).
    pub fn layers(&self) -> usize {
        match self {
            ModelParams::Bert(p) => p.config().num_hidden_layers,
            ModelParams::Gpt2(p) => p.config().n_layer,
        }
    }

    /// Size of the vocabulary.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelParams::Bert(p) => p.config().vocab_size,
            ModelParams::Gpt2(p) => p.config().vocab_size,
        }
    }

    /// The longest sequence the position embeddings cover.
    pub fn max_positions(&self) -> usize {
        match self {
            ModelParams::Bert(p) => p.config().max_position_embeddings,
            ModelParams::Gpt2(p) => p.config().n_positions,
        }
    }

    /// All vars with their Hugging Face names, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        match self {
            ModelParams::Bert(p) => p.named_vars(),
            ModelParams::Gpt2(p) => p.named_vars(),
        }
    }

    /// The BERT parameters, if this is a BERT.
    pub fn as_bert(&self) -> Option<&Params> {
        match self {
            ModelParams::Bert(p) => Some(p),
            ModelParams::Gpt2(_) => None,
        }
    }

    /// The GPT-2 parameters, if this is a GPT-2.
    pub fn as_gpt2(&self) -> Option<&Gpt2Params> {
        match self {
            ModelParams::Gpt2(p) => Some(p),
            ModelParams::Bert(_) => None,
        }
    }

    /// The current weights as a typed checkpoint.
    pub fn to_model(&self) -> Result<Model> {
        Ok(match self {
            ModelParams::Bert(p) => Model::Bert(p.to_bert()?),
            ModelParams::Gpt2(p) => Model::Gpt2(p.to_gpt2()?),
        })
    }

    pub(crate) fn optimizer(&self, cfg: AdamWConfig) -> AdamW {
        match self {
            ModelParams::Bert(p) => AdamW::new(p.named_vars(), cfg, crate::bert::no_weight_decay),
            ModelParams::Gpt2(p) => AdamW::new(p.named_vars(), cfg, crate::gpt2::no_weight_decay),
        }
    }

    pub(crate) fn build(&self) -> Result<Net> {
        Ok(match self {
            ModelParams::Bert(p) => Net::Bert(p.model()?),
            ModelParams::Gpt2(p) => Net::Gpt2(p.model()?),
        })
    }

    /// Training FLOPs of one step on `batch` through sub-model `scope` ([`crate::flops`]).
    pub fn train_flops(&self, batch: &Batch, scope: Scope) -> u64 {
        let (b, s) = batch.dims();
        match self {
            ModelParams::Bert(p) => flops::train_step(p.config(), b, s, batch.predicted(), scope),
            ModelParams::Gpt2(p) => flops::gpt2_train_step(p.config(), b, s, scope),
        }
    }
}

impl Net {
    /// Mean loss of `batch` through `scope` (over its [`Batch::predicted`] positions).
    pub(crate) fn loss(
        &self,
        batch: &Batch,
        scope: Scope,
        dropout: &mut Dropout,
        device: &Device,
    ) -> Result<Tensor> {
        match (self, batch) {
            (Net::Bert(m), Batch::Mlm(b)) => {
                let db = b.to_device(device)?;
                Ok(m.loss(&db, scope, dropout)?)
            }
            (Net::Gpt2(m), Batch::Causal(b)) => {
                let db = CausalDeviceBatch::new(b, device)?;
                Ok(m.loss(&db, scope, dropout)?)
            }
            (Net::Bert(_), Batch::Causal(_)) => Err(TrainError::Data(
                "a causal-LM batch was given to a BERT (masked-LM) model".into(),
            )),
            (Net::Gpt2(_), Batch::Mlm(_)) => Err(TrainError::Data(
                "a masked-LM batch was given to a GPT-2 (causal-LM) model".into(),
            )),
        }
    }
}

impl Net {
    pub(crate) fn layers(&self) -> usize {
        match self {
            Net::Bert(m) => m.num_layers(),
            Net::Gpt2(m) => m.num_layers(),
        }
    }

    pub(crate) fn eval_loss(&self, batches: &[Batch], device: &Device) -> Result<f64> {
        let mut sum = 0.0;
        let mut count = 0usize;
        let scope = Scope::full(self.layers());
        for b in batches {
            let loss = self.loss(b, scope, &mut Dropout::eval(), device)?;
            let n = b.predicted();
            sum += loss.detach().to_scalar::<f32>()? as f64 * n as f64;
            count += n;
        }
        if count == 0 {
            return Err(TrainError::Data("no held-out positions to evaluate".into()));
        }
        Ok(sum / count as f64)
    }
}

/// Mean held-out loss of `params` over `batches` (weighted by predicted positions), dropout off.
pub fn eval_loss(params: &ModelParams, batches: &[Batch], device: &Device) -> Result<f64> {
    params.build()?.eval_loss(batches, device)
}

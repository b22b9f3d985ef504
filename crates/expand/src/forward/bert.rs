//! The BERT reference forward pass: embeddings, post-LN encoder with attention mask, MLM head
//! with tied (or untied) decoder, pooler and NSP head, as Hugging Face `BertForPreTraining`
//! computes them in f32 with dropout off.

use super::{activate, layer_norm, linear, softmax_rows};
use crate::error::ExpandError;
use bert2bert_checkpoint::{Bert, BertLayer};
use ndarray::{Array2, Array3, ArrayView2, Axis, s};

/// Token batches: ids, token types and attention mask, each (batch, seq).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Token ids.
    pub input_ids: Array2<u32>,
    /// Segment ids.
    pub token_type_ids: Array2<u32>,
    /// 1 = attend, 0 = padding.
    pub attention_mask: Array2<u8>,
}

/// Everything the forward pass computes.
#[derive(Clone, Debug)]
pub struct BertOutputs {
    /// Embeddings output, then each layer's output: L + 1 arrays of (batch, seq, D).
    pub hidden_states: Vec<Array3<f32>>,
    /// MLM logits (batch, seq, V), if the model has an MLM head.
    pub mlm_logits: Option<Array3<f32>>,
    /// Pooler output (batch, D), if the model has a pooler.
    pub pooled: Option<Array2<f32>>,
    /// NSP logits (batch, 2), if the model has a pooler and an NSP head.
    pub nsp_logits: Option<Array2<f32>>,
}

fn check_batch(bert: &Bert, b: &Batch) -> Result<(), ExpandError> {
    let c = &bert.config;
    let dim = b.input_ids.dim();
    if b.token_type_ids.dim() != dim || b.attention_mask.dim() != dim {
        return Err(ExpandError::Verify(format!(
            "batch arrays disagree in shape: ids {:?}, token types {:?}, mask {:?}",
            dim,
            b.token_type_ids.dim(),
            b.attention_mask.dim()
        )));
    }
    if dim.1 > c.max_position_embeddings {
        return Err(ExpandError::Verify(format!(
            "sequence length {} exceeds max_position_embeddings {}",
            dim.1, c.max_position_embeddings
        )));
    }
    if let Some(&id) = b.input_ids.iter().find(|&&i| i as usize >= c.vocab_size) {
        return Err(ExpandError::Verify(format!(
            "token id {id} is outside the vocabulary of {}",
            c.vocab_size
        )));
    }
    if let Some(&t) = b
        .token_type_ids
        .iter()
        .find(|&&t| t as usize >= c.type_vocab_size)
    {
        return Err(ExpandError::Verify(format!(
            "token type {t} is outside type_vocab_size {}",
            c.type_vocab_size
        )));
    }
    Ok(())
}

/// Runs `bert` on `batch`.
pub fn forward_bert(bert: &Bert, batch: &Batch) -> Result<BertOutputs, ExpandError> {
    check_batch(bert, batch)?;
    let c = &bert.config;
    let (nb, ns) = batch.input_ids.dim();
    let d = c.hidden_size;
    let e = &bert.embeddings;
    let mut x = Array2::<f32>::zeros((nb * ns, d));
    for b in 0..nb {
        for t in 0..ns {
            let w = e.word.row(batch.input_ids[[b, t]] as usize);
            let tt = e.token_type.row(batch.token_type_ids[[b, t]] as usize);
            let p = e.position.row(t);
            // Hugging Face's order: (word + token type) + position.
            for (((o, &w), &tt), &p) in x.row_mut(b * ns + t).iter_mut().zip(w).zip(tt).zip(p) {
                *o = (w + tt) + p;
            }
        }
    }
    let mut h = layer_norm(x.view(), &e.layer_norm, c.layer_norm_eps);
    let to3 = |a: &Array2<f32>| {
        a.clone()
            .into_shape_with_order((nb, ns, d))
            .expect("rows are batch x seq")
    };
    let mut hidden_states = vec![to3(&h)];
    for layer in &bert.layers {
        h = encoder_layer(bert, layer, h.view(), batch, nb, ns);
        hidden_states.push(to3(&h));
    }
    let mlm_logits = bert.mlm.as_ref().map(|m| {
        let mut t = linear(h.view(), &m.transform);
        activate(&mut t, c.hidden_act);
        let t = layer_norm(t.view(), &m.layer_norm, c.layer_norm_eps);
        let mut logits = match &m.decoder {
            Some(dec) => t.dot(dec),
            None => t.dot(&e.word.t()),
        };
        logits += &m.bias;
        logits
            .into_shape_with_order((nb, ns, c.vocab_size))
            .expect("rows are batch x seq")
    });
    let pooled = bert.pooler.as_ref().map(|p| {
        let first = h.slice(s![..;ns, ..]);
        let mut y = linear(first, p);
        y.mapv_inplace(f32::tanh);
        y
    });
    let nsp_logits = match (&pooled, &bert.nsp) {
        (Some(p), Some(n)) => Some(linear(p.view(), n)),
        _ => None,
    };
    Ok(BertOutputs {
        hidden_states,
        mlm_logits,
        pooled,
        nsp_logits,
    })
}

/// One post-LN encoder layer on rows `x` of shape (batch * seq, D).
fn encoder_layer(
    bert: &Bert,
    l: &BertLayer,
    x: ArrayView2<'_, f32>,
    batch: &Batch,
    nb: usize,
    ns: usize,
) -> Array2<f32> {
    let c = &bert.config;
    let (d, dh) = (c.hidden_size, c.head_dim());
    let q = linear(x, &l.query);
    let k = linear(x, &l.key);
    let v = linear(x, &l.value);
    let scale = 1.0 / (dh as f32).sqrt();
    let mut ctx = Array2::<f32>::zeros((nb * ns, d));
    for b in 0..nb {
        let rows = b * ns..(b + 1) * ns;
        let mask = batch.attention_mask.row(b);
        for hd in 0..c.num_attention_heads {
            let cols = hd * dh..(hd + 1) * dh;
            let qh = q.slice(s![rows.clone(), cols.clone()]);
            let kh = k.slice(s![rows.clone(), cols.clone()]);
            let vh = v.slice(s![rows.clone(), cols.clone()]);
            let mut scores = qh.dot(&kh.t());
            scores *= scale;
            // Hugging Face's additive mask: the most negative f32 on padded keys.
            for mut r in scores.axis_iter_mut(Axis(0)) {
                for (sc, &m) in r.iter_mut().zip(mask.iter()) {
                    if m == 0 {
                        *sc += f32::MIN;
                    }
                }
            }
            softmax_rows(&mut scores);
            ctx.slice_mut(s![rows.clone(), cols])
                .assign(&scores.dot(&vh));
        }
    }
    let mut a = linear(ctx.view(), &l.attention_output);
    a += &x;
    let a = layer_norm(a.view(), &l.attention_layer_norm, c.layer_norm_eps);
    let mut f = linear(a.view(), &l.intermediate);
    activate(&mut f, c.hidden_act);
    let mut o = linear(f.view(), &l.output);
    o += &a;
    layer_norm(o.view(), &l.output_layer_norm, c.layer_norm_eps)
}

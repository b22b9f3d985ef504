//! Exporting the exact training batches of a run with the losses the trainer computed on them,
//! so another implementation (the PyTorch package in `python/`) can be checked step for step on
//! identical tokens and masks.
//!
//! The file is safetensors: every tensor stacks one row per recorded step (format in
//! `docs/distributed.md`).

use crate::data::causal::CausalBatch;
use crate::trainer::{Batch, BatchSource, StepReport};
use crate::{Result, TrainError};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The value of the file's `format` metadata.
pub const BATCHES_FORMAT: &str = "bert2bert-batches";
/// The version this code writes.
pub const BATCHES_VERSION: u32 = 1;

/// Wraps a batch source and keeps a copy of every batch it hands out.
pub struct Recording<'a> {
    inner: &'a mut dyn BatchSource,
    /// The batches handed out, in order.
    pub batches: Vec<Batch>,
}

impl<'a> Recording<'a> {
    /// Records the batches `inner` produces from now on.
    pub fn new(inner: &'a mut dyn BatchSource) -> Self {
        Self {
            inner,
            batches: Vec::new(),
        }
    }
}

impl BatchSource for Recording<'_> {
    fn next_batch(&mut self) -> Result<Batch> {
        let b = self.inner.next_batch()?;
        self.batches.push(b.clone());
        Ok(b)
    }
}

fn stack_i64(rows: &[Vec<i64>], shape: (usize, usize, usize)) -> Result<Tensor> {
    let flat: Vec<i64> = rows.concat();
    Ok(Tensor::from_vec(flat, shape, &Device::Cpu)?)
}

fn to_i64<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
    v.iter().map(|&x| x.into()).collect()
}

/// Writes `batches` and the trainer's record of each step (`steps[i]` belongs to `batches[i]`)
/// to `path` as safetensors; `first_step` is the 0-based step of the first batch.
pub fn write_batches(
    path: &Path,
    family: &str,
    first_step: usize,
    batches: &[Batch],
    steps: &[StepReport],
) -> Result<()> {
    let bad = |m: String| TrainError::Data(format!("{}: {m}", path.display()));
    if batches.is_empty() || batches.len() != steps.len() {
        return Err(bad(format!(
            "{} batches with {} step records (need the same, at least one)",
            batches.len(),
            steps.len()
        )));
    }
    let (b, s) = batches[0].dims();
    if batches.iter().any(|x| x.dims() != (b, s)) {
        return Err(bad("batches of different shapes".into()));
    }
    let n = batches.len();
    let shape = (n, b, s);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    match &batches[0] {
        Batch::Mlm(_) => {
            let mut ids = Vec::new();
            let mut types = Vec::new();
            let mut attn = Vec::new();
            let mut labels = Vec::new();
            for x in batches {
                let Batch::Mlm(m) = x else {
                    return Err(bad("a causal batch among masked ones".into()));
                };
                ids.push(to_i64(&m.input_ids));
                types.push(to_i64(&m.token_type_ids));
                attn.push(to_i64(&m.attention_mask));
                labels.push(m.labels.clone());
            }
            t.insert("input_ids".into(), stack_i64(&ids, shape)?);
            t.insert("token_type_ids".into(), stack_i64(&types, shape)?);
            t.insert("attention_mask".into(), stack_i64(&attn, shape)?);
            t.insert("labels".into(), stack_i64(&labels, shape)?);
        }
        Batch::Causal(_) => {
            let mut ids = Vec::new();
            let mut targets = Vec::new();
            for x in batches {
                let Batch::Causal(CausalBatch {
                    input_ids: i,
                    targets: tg,
                    ..
                }) = x
                else {
                    return Err(bad("a masked batch among causal ones".into()));
                };
                ids.push(to_i64(i));
                targets.push(to_i64(tg));
            }
            t.insert("input_ids".into(), stack_i64(&ids, shape)?);
            t.insert("targets".into(), stack_i64(&targets, shape)?);
        }
    }
    let col_i64 = |f: &dyn Fn(&StepReport) -> i64| -> Result<Tensor> {
        Ok(Tensor::from_vec(
            steps.iter().map(f).collect::<Vec<_>>(),
            n,
            &Device::Cpu,
        )?)
    };
    let col_f64 = |f: &dyn Fn(&StepReport) -> f64| -> Result<Tensor> {
        Ok(Tensor::from_vec(
            steps.iter().map(f).collect::<Vec<_>>(),
            n,
            &Device::Cpu,
        )?)
    };
    t.insert("step".into(), col_i64(&|r: &StepReport| r.step as i64 - 1)?);
    t.insert("stage".into(), col_i64(&|r: &StepReport| r.stage as i64)?);
    t.insert(
        "depth".into(),
        col_i64(&|r: &StepReport| r.scope.layers as i64)?,
    );
    t.insert(
        "frozen_below".into(),
        col_i64(&|r: &StepReport| r.scope.frozen_below as i64)?,
    );
    t.insert("loss".into(), col_f64(&|r: &StepReport| r.loss)?);
    t.insert("lr".into(), col_f64(&|r: &StepReport| r.lr)?);
    if steps
        .iter()
        .enumerate()
        .any(|(i, r)| r.step != first_step + i + 1)
    {
        return Err(bad("step records are not consecutive".into()));
    }
    // candle's `safetensors::save` writes no header metadata, so the format, family and shape
    // go into a JSON file beside it (`<name>.json`).
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&t, &tmp)?;
    std::fs::rename(&tmp, path).map_err(crate::error::io_err(path))?;
    let meta = serde_json::json!({
        "format": BATCHES_FORMAT,
        "version": BATCHES_VERSION,
        "family": family,
        "first_step": first_step,
        "steps": n,
        "batch_size": b,
        "seq_len": s,
    });
    let meta_path = path.with_extension("json");
    std::fs::write(
        &meta_path,
        serde_json::to_string_pretty(&meta).expect("serialisable") + "\n",
    )
    .map_err(crate::error::io_err(&meta_path))
}

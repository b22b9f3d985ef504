//! `cargo xtask grow` and `verify` for Llama-family folders (llama, mistral, qwen2, qwen3):
//! the source is streamed (headers checked up front, one or two tensors read at a time), the
//! output written tensor by tensor, sharded like transformers above `--max-shard-size`, and
//! the verification runs both models layer by layer from disk.

use crate::Usage;
use crate::grow::{Args, Outcome, Streamed, print_outcome, write_streamed};
use anyhow::{Context, Result};
use bert2bert_checkpoint::config::read_raw_config;
use bert2bert_checkpoint::{LlamaConfig, LlamaKind, LlamaSource};
use bert2bert_expand::llama::verify_llama;
use bert2bert_expand::{GrowOptions, LlamaPlan, LlamaTarget, VerifyOptions, VerifyReport};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

/// The Llama-family member folder `dir`'s config names, if any (`model_type`, else
/// `architectures`).
pub fn llama_kind(dir: &Path) -> Option<LlamaKind> {
    let raw = read_raw_config(dir).ok()?;
    kind_of(&raw)
}

fn kind_of(raw: &serde_json::Map<String, Value>) -> Option<LlamaKind> {
    match raw.get("model_type").and_then(Value::as_str) {
        Some(t) => LlamaKind::from_model_type(t),
        None => raw
            .get("architectures")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(Value::as_str)
            .find_map(LlamaKind::from_architecture),
    }
}

/// The target shape from the flags, `--target-config`, or the default: 1.5x the hidden size
/// rounded to whole heads, query heads scaled alike (whole GQA groups), the group size kept,
/// the FFN scaled like the hidden size, same depth.
pub fn resolve_target(args: &Args, c: &LlamaConfig) -> Result<LlamaTarget> {
    let src = LlamaTarget::of(c);
    if let Some(path) = &args.target_config {
        return target_from_config(path, c);
    }
    let any = args.layers.is_some()
        || args.hidden.is_some()
        || args.heads.is_some()
        || args.kv_heads.is_some()
        || args.intermediate.is_some();
    let hd = c.head_dim;
    let hidden = match args.hidden {
        Some(h) => h,
        None if !any => (src.hidden * 3 / 2).div_ceil(hd) * hd,
        None => src.hidden,
    };
    let group = c.group_size();
    let heads = args.heads.unwrap_or_else(|| {
        let scaled = (src.heads as u128 * hidden as u128 / src.hidden as u128) as usize;
        (scaled / group * group).max(src.heads)
    });
    let kv_heads = args.kv_heads.unwrap_or(if heads.is_multiple_of(group) {
        heads / group
    } else {
        src.kv_heads
    });
    let intermediate = args.intermediate.unwrap_or_else(|| {
        (src.intermediate as u128 * hidden as u128 / src.hidden as u128) as usize
    });
    Ok(LlamaTarget {
        layers: args.layers.unwrap_or(src.layers),
        hidden,
        heads,
        kv_heads,
        intermediate,
    })
}

/// The target shape in a transformers config.json of the same family member; its `head_dim`
/// (explicit or hidden / heads) must be the source's.
fn target_from_config(path: &Path, c: &LlamaConfig) -> Result<LlamaTarget> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the target config", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: malformed JSON", path.display()))?;
    let raw = v
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("{}: not a JSON object", path.display()))?;
    match kind_of(raw) {
        Some(k) if k == c.kind => {}
        found => {
            return Err(Usage::new(format!(
                "{}: the target config is a {} model but the source is {}",
                path.display(),
                found.map_or_else(
                    || {
                        raw.get("model_type")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown")
                            .to_owned()
                    },
                    |k| k.name().to_owned()
                ),
                c.kind.name()
            ))
            .into());
        }
    }
    // Only the shape is read: per-layer lists the source's config carries (`layer_types`) are
    // rebuilt from the layer order, so a target config edited by hand need not match them.
    let mut raw = raw.clone();
    raw.remove("layer_types");
    let t = LlamaConfig::from_raw(path, raw)?;
    if t.head_dim != c.head_dim {
        return Err(Usage::new(format!(
            "{}: head_dim {} differs from the source's {}: heads grow in number, never in size",
            path.display(),
            t.head_dim,
            c.head_dim
        ))
        .into());
    }
    if t.vocab_size != c.vocab_size {
        return Err(Usage::new(format!(
            "{}: vocab_size {} differs from the source's {}: growth keeps the vocabulary",
            path.display(),
            t.vocab_size,
            c.vocab_size
        ))
        .into());
    }
    Ok(LlamaTarget::of(&t))
}

/// `cargo xtask grow` on a Llama-family source.
pub fn run(args: Args, source_dir: &Path) -> Result<()> {
    let t0 = Instant::now();
    // Before anything is read: `--overwrite` onto (or around) the source would destroy it.
    bert2bert_checkpoint::paths::check_disjoint(&args.out, source_dir, "source")
        .map_err(|e| Usage::new(e.to_string()))?;
    let src = LlamaSource::open(source_dir)?;
    let target = resolve_target(&args, &src.config)?;
    let opts = GrowOptions {
        method: args.method,
        map: args.map,
        aki_scope: args.aki_scope,
        depth: args.depth,
        seed: args.seed,
    };
    let plan = LlamaPlan::new(&src, &target, &opts).map_err(Usage::from_expand)?;
    let report = plan.report();
    let dtype = args.dtype.unwrap_or(src.dtype);
    // Before anything is written: bad schedule flags leave no output behind.
    let schedule = args.schedule.llama_schedule(
        src.config.kind.name(),
        target.layers,
        plan.table().iter().map(|d| d.name.clone()).collect(),
    )?;
    let out = write_streamed(
        &Streamed {
            growth: &plan,
            dtype,
            schedule: Some(&schedule),
        },
        &src.path,
        &src.other_files,
        &args.out,
        args.overwrite,
        Some(args.max_shard_size),
    )?;
    let grow_s = t0.elapsed().as_secs_f64();
    let verified = if args.no_verify {
        None
    } else {
        Some(verify_dirs(&src, &out, &args.verify.options())?)
    };
    print_outcome(&Outcome {
        source: source_dir,
        out: &out,
        dtype,
        seconds: grow_s,
        target: Some(serde_json::to_value(target)?),
        report: &report,
        verified: verified.as_ref(),
        schedule: &schedule,
        json: args.json,
    })
}

/// Verifies grown folder `grown` against the opened source, both streamed.
pub fn verify_dirs(src: &LlamaSource, grown: &Path, opts: &VerifyOptions) -> Result<VerifyReport> {
    let g = LlamaSource::open(grown)?;
    Ok(verify_llama(src, &g, opts)?)
}

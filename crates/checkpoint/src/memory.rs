//! Memory estimates: what a load or a growth will hold, checked against what the machine has
//! before anything is allocated, so a job that cannot fit is refused with both figures instead
//! of being killed midway.

use crate::bert::Bert;
use crate::error::{CheckpointError, Result};
use crate::gpt2::Gpt2;
use crate::model::Model;
use std::path::Path;

/// Environment variable that, when set to a number of bytes, replaces the machine's available
/// memory in every check (for tests, or to go ahead on a machine with swap).
pub const LIMIT_ENV: &str = "BERT2BERT_MEMORY_LIMIT_BYTES";

/// Memory available for new allocations, and where that figure comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// Where the figure comes from, for messages.
    pub source: String,
}

/// The memory available now: [`LIMIT_ENV`] if set, else `MemAvailable` of `/proc/meminfo`,
/// lowered to the room left under this process's cgroup limit if that is smaller. `None` where
/// neither can be read (then nothing is refused).
pub fn available() -> Option<Available> {
    if let Ok(v) = std::env::var(LIMIT_ENV) {
        match v.trim().parse::<u64>() {
            Ok(bytes) => {
                return Some(Available {
                    bytes,
                    source: format!("{LIMIT_ENV}={bytes}"),
                });
            }
            Err(_) => tracing::warn!(value = %v, "{LIMIT_ENV} is not a number of bytes; ignored"),
        }
    }
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_available(&t))
        .map(|bytes| Available {
            bytes,
            source: "MemAvailable in /proc/meminfo".into(),
        });
    match (mem, cgroup_room()) {
        (Some(m), Some(c)) if c < m.bytes => Some(Available {
            bytes: c,
            source: "room under this process's cgroup memory.max".into(),
        }),
        (Some(m), _) => Some(m),
        (None, c) => c.map(|bytes| Available {
            bytes,
            source: "room under this process's cgroup memory.max".into(),
        }),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `memory.max - memory.current` of this process's cgroup (v2), if it has a limit.
fn cgroup_room() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max" (no limit) does not parse
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Refuses `what` (reading or writing `path`) if the `needed` bytes exceed `available`; no
/// figure (`None`) refuses nothing.
pub fn check_fits(
    path: &Path,
    what: &str,
    needed: u128,
    available: Option<&Available>,
) -> Result<()> {
    match available {
        Some(a) if needed > u128::from(a.bytes) => Err(CheckpointError::OutOfMemory {
            path: path.to_owned(),
            what: what.to_owned(),
            needed,
            available: a.bytes,
            source_of: format!(
                "{}; set {LIMIT_ENV} to a number of bytes to override",
                a.source
            ),
        }),
        _ => Ok(()),
    }
}

/// [`check_fits`] against the memory [`available`] now.
pub fn ensure_fits(path: &Path, what: &str, needed: u128) -> Result<()> {
    let avail = available();
    tracing::debug!(what, needed = %needed, available = ?avail, "memory estimate");
    check_fits(path, what, needed, avail.as_ref())
}

/// A byte count for people: `1.50 GiB (1610612736 bytes)`.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.2} {unit} ({bytes} bytes)")
}

/// Element counts of a set of tensors, computed from shapes alone (nothing allocated), with
/// saturating arithmetic so that absurd shapes give a huge number, not an overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TensorSizes {
    /// Elements in all.
    pub elements: u128,
    /// Elements of the largest tensor.
    pub largest: u128,
}

impl TensorSizes {
    /// Adds `count` tensors of `shape`.
    fn add(&mut self, count: u128, shape: &[usize]) {
        let n = shape
            .iter()
            .fold(1u128, |acc, &d| acc.saturating_mul(d as u128));
        self.elements = self.elements.saturating_add(n.saturating_mul(count));
        if count > 0 {
            self.largest = self.largest.max(n);
        }
    }

    /// Bytes of all the tensors as f32.
    pub fn f32_bytes(&self) -> u128 {
        self.elements.saturating_mul(4)
    }

    /// Bytes of the largest tensor as f32.
    pub fn largest_f32_bytes(&self) -> u128 {
        self.largest.saturating_mul(4)
    }
}

/// The tensor sizes `model` would have with `layers` layers, hidden size `hidden` and FFN size
/// `intermediate` (everything else, heads included, as it is): what growing it to that shape
/// produces. Only shapes are computed.
pub fn sizes_with_shape(
    model: &Model,
    layers: usize,
    hidden: usize,
    intermediate: usize,
) -> TensorSizes {
    match model {
        Model::Bert(b) => bert_sizes(b, layers as u128, hidden, intermediate),
        Model::Gpt2(g) => gpt2_sizes(g, layers as u128, hidden, intermediate),
    }
}

/// The tensor sizes of `model` as it is.
pub fn sizes(model: &Model) -> TensorSizes {
    match model {
        Model::Bert(b) => sizes_with_shape(
            model,
            b.layers.len(),
            b.config.hidden_size,
            b.config.intermediate_size,
        ),
        Model::Gpt2(g) => {
            sizes_with_shape(model, g.blocks.len(), g.config.n_embd, g.config.inner_dim())
        }
    }
}

fn bert_sizes(b: &Bert, layers: u128, d: usize, f: usize) -> TensorSizes {
    let c = &b.config;
    let mut s = TensorSizes::default();
    s.add(1, &[c.vocab_size, d]);
    s.add(1, &[c.max_position_embeddings, d]);
    s.add(1, &[c.type_vocab_size, d]);
    s.add(2, &[d]);
    // Per layer: Q, K, V, W_O with biases; two LayerNorms; the FFN pair with biases.
    s.add(4 * layers, &[d, d]);
    s.add((4 + 4 + 1) * layers, &[d]);
    s.add(layers, &[f, d]);
    s.add(layers, &[f]);
    s.add(layers, &[d, f]);
    if b.pooler.is_some() {
        s.add(1, &[d, d]);
        s.add(1, &[d]);
    }
    if let Some(m) = &b.mlm {
        s.add(1, &[d, d]);
        s.add(3, &[d]);
        s.add(1, &[c.vocab_size]);
        if m.decoder.is_some() {
            s.add(1, &[c.vocab_size, d]);
        }
    }
    if b.nsp.is_some() {
        s.add(1, &[2, d]);
        s.add(1, &[2]);
    }
    s
}

fn gpt2_sizes(g: &Gpt2, layers: u128, d: usize, f: usize) -> TensorSizes {
    let c = &g.config;
    let mut s = TensorSizes::default();
    s.add(1, &[c.vocab_size, d]);
    s.add(1, &[c.n_positions, d]);
    // Per block: c_attn, c_proj, c_fc, mlp.c_proj with biases; ln_1 and ln_2 (weight, bias).
    s.add(layers, &[d, 3 * d]);
    s.add(layers, &[3 * d]);
    s.add(layers, &[d, d]);
    s.add((2 + 2 + 1 + 1) * layers, &[d]);
    s.add(layers, &[d, f]);
    s.add(layers, &[f]);
    s.add(layers, &[f, d]);
    s.add(2, &[d]);
    if g.lm_head.is_some() {
        s.add(1, &[c.vocab_size, d]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   1234 kB\n";
        assert_eq!(meminfo_available(text), Some(1234 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn refusal_names_both_figures_and_the_override() {
        let a = Available {
            bytes: 1 << 30,
            source: "test".into(),
        };
        check_fits(Path::new("m"), "loading", 1 << 30, Some(&a)).unwrap();
        check_fits(Path::new("m"), "loading", u128::MAX, None).unwrap();
        let err = check_fits(Path::new("m"), "loading", 3 << 30, Some(&a)).unwrap_err();
        let msg = err.to_string();
        for part in ["m: loading", "3.00 GiB", "1.00 GiB", "test", LIMIT_ENV] {
            assert!(msg.contains(part), "{msg} lacks {part}");
        }
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(1536), "1.50 KiB (1536 bytes)");
    }

    #[test]
    fn sizes_match_the_tensors_of_every_family_and_head_set() {
        use crate::random::{Heads, Init};
        use crate::{BertConfig, Gpt2Config};
        let mut models = Vec::new();
        for heads in [Heads::ALL, Heads::MLM] {
            let mut b = Bert::random(&BertConfig::new(30, 8, 3, 2, 20, 10), heads, Init::TEST, 1);
            models.push(Model::Bert(b.clone()));
            if let Some(m) = &mut b.mlm {
                m.decoder = Some(b.embeddings.word.t().to_owned());
            }
            models.push(Model::Bert(b));
        }
        let mut g = Gpt2::random(&Gpt2Config::new(30, 8, 2, 2, 10), Init::TEST, 2);
        models.push(Model::Gpt2(g.clone()));
        g.lm_head = Some(g.wte.t().to_owned());
        models.push(Model::Gpt2(g));
        for m in &models {
            let t = m.named_tensors();
            let want = TensorSizes {
                elements: t.iter().map(|(_, t)| t.len() as u128).sum(),
                largest: t.iter().map(|(_, t)| t.len() as u128).max().unwrap(),
            };
            assert_eq!(sizes(m), want, "{:?}", m.family());
        }
    }

    #[test]
    fn absurd_shapes_saturate_instead_of_overflowing() {
        use crate::random::{Heads, Init};
        let b = Bert::random(
            &crate::BertConfig::new(30, 8, 1, 2, 20, 10),
            Heads::ALL,
            Init::TEST,
            1,
        );
        let s = sizes_with_shape(&Model::Bert(b), usize::MAX, usize::MAX, usize::MAX);
        assert_eq!(s.f32_bytes(), u128::MAX);
    }
}

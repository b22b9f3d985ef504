//! Hugging Face model folders: read one into typed weights, write one atomically.

use crate::bert::Bert;
use crate::config::{BertConfig, Family, Gpt2Config, read_raw_config};
use crate::dtype::Dtype;
use crate::error::{CheckpointError, Result, io_err};
use crate::gpt2::Gpt2;
use crate::model::{Dropped, Model};
use crate::preflight::check_layer_count;
use crate::safetensors::{INDEX_FILE, SafetensorsWriter, TensorSpec, TensorStore, WEIGHTS_FILE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A model folder read into memory: typed weights plus the files to carry through.
#[derive(Clone, Debug)]
pub struct ModelDir {
    /// The folder it was read from.
    pub path: PathBuf,
    /// Typed weights and config.
    pub model: Model,
    /// The float dtype most of the stored weights had.
    pub dtype: Dtype,
    /// Other files (tokenizer, vocabulary, README, ...), relative to `path`, copied on write.
    pub other_files: Vec<PathBuf>,
    /// Stored tensors deliberately not loaded, with reasons.
    pub dropped: Vec<Dropped>,
}

/// Files that are weights or config in some format: never copied through, since the written
/// folder replaces them.
fn is_weights_or_config(name: &str) -> bool {
    name == "config.json"
        || name == WEIGHTS_FILE
        || name == INDEX_FILE
        || name.ends_with(".safetensors")
        || name.ends_with(".bin")
        || name.ends_with(".h5")
        || name.ends_with(".msgpack")
        || name.ends_with(".ot")
        || name.ends_with(".onnx")
        || name.ends_with(".ckpt.index")
}

/// Reads the model folder `dir`.
pub fn read_model_dir(dir: &Path) -> Result<ModelDir> {
    let meta = std::fs::metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(CheckpointError::Io {
            path: dir.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder"),
        });
    }
    let raw = read_raw_config(dir)?;
    let cfg_path = dir.join("config.json");
    let family = Family::detect(&cfg_path, &raw)?;
    let store = TensorStore::open_dir(dir)?;
    // Before anything is allocated: the config against the headers, the whole load against the
    // memory there is.
    let (model, dropped) = match family {
        Family::Bert => {
            let config = BertConfig::from_raw(&cfg_path, raw)?;
            let (field, layers) = ("num_hidden_layers", config.num_hidden_layers);
            // The prefix as `Bert::load` detects it.
            let prefixed = store.contains("bert.embeddings.word_embeddings.weight");
            let p = if prefixed {
                "bert.encoder.layer."
            } else {
                "encoder.layer."
            };
            check_layer_count(&cfg_path, field, layers, &store, p)?;
            ensure_load_fits(&store)?;
            let (m, dropped) = Bert::load(&store, config)?;
            (Model::Bert(m), dropped)
        }
        Family::Gpt2 => {
            let config = Gpt2Config::from_raw(&cfg_path, raw)?;
            // The prefix as `Gpt2::load` detects it.
            let prefixed = store.contains("transformer.wte.weight");
            let p = if prefixed { "transformer.h." } else { "h." };
            check_layer_count(&cfg_path, "n_layer", config.n_layer, &store, p)?;
            ensure_load_fits(&store)?;
            let (m, dropped) = Gpt2::load(&store, config)?;
            (Model::Gpt2(m), dropped)
        }
    };
    let mut other_files = Vec::new();
    list_other_files(dir, Path::new(""), &mut other_files)?;
    Ok(ModelDir {
        path: dir.to_owned(),
        model,
        dtype: store.dominant_float_dtype().unwrap_or(Dtype::F32),
        other_files,
        dropped,
    })
}

/// Refuses a load whose typed weights (every float tensor as f32) exceed the memory available.
fn ensure_load_fits(store: &TensorStore) -> Result<()> {
    let needed = store.total_f32_bytes() as u128;
    crate::memory::ensure_fits(store.root(), "loading the weights as f32", needed)
}

pub(crate) fn list_other_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .collect::<std::io::Result<_>>()
        .map_err(io_err(&dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') {
            continue;
        }
        let rel_path = rel.join(&name);
        let ft = e.file_type().map_err(io_err(e.path()))?;
        if ft.is_dir() {
            list_other_files(root, &rel_path, out)?;
        } else if rel.as_os_str().is_empty() && is_weights_or_config(&name_str) {
            continue;
        } else if ft.is_file() || ft.is_symlink() {
            out.push(rel_path);
        }
    }
    Ok(())
}

/// How to write a model folder.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Dtype of the written weights; `None` keeps the source's.
    pub dtype: Option<Dtype>,
    /// Replace an existing output folder.
    pub overwrite: bool,
}

/// A temporary sibling folder that becomes `target` on [`AtomicDir::commit`], and is removed if
/// dropped before: a failure leaves nothing behind and never touches an existing `target`.
pub struct AtomicDir {
    target: PathBuf,
    tmp: PathBuf,
    overwrite: bool,
    committed: bool,
}

/// The temporary folders of `target` in `parent` left by processes that are not running any
/// more: `(path, pid, is_old)`, where `is_old` marks a `.old` folder (the previous `target`,
/// moved aside during a commit).
fn stale_temporaries(parent: &Path, name: &str) -> Vec<(PathBuf, u32, bool)> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let prefix = format!(".{name}.tmp-");
    let mut out = Vec::new();
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let (rest, is_old) = match rest.strip_suffix(".old") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let Some((pid, n)) = rest.split_once('-') else {
            continue;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !digits(n) || pid == 0 || process_alive(pid) {
            continue;
        }
        out.push((e.path(), pid, is_old));
    }
    // The moved-aside old folders first: one may have to be put back before its new one goes.
    out.sort_by_key(|(p, _, is_old)| (!is_old, p.clone()));
    out
}

/// Whether process `pid` exists (signal 0 checks without sending anything).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true; // not a PID this system hands out: leave the folder alone
    };
    // SAFETY: kill with signal 0 only checks for the process's existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists but belongs to someone else.
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl AtomicDir {
    /// Cleans up after writers of `target` that were killed (SIGKILL, power loss) and so could
    /// not remove their temporary sibling `.NAME.tmp-PID-N`: each one whose PID no longer runs
    /// is removed, except that a moved-aside `.NAME.tmp-PID-N.old` (the previous `target`, when
    /// the kill came between the two renames of a commit) is renamed back to `target` if
    /// `target` is missing. Returns what was removed or put back; each is logged. A folder that
    /// cannot be removed is logged with the command to remove it, and left.
    pub fn clean_stale(target: &Path) -> Vec<PathBuf> {
        let (Some(name), parent) = (target.file_name(), parent_of(target)) else {
            return Vec::new();
        };
        let mut cleaned = Vec::new();
        for (path, pid, is_old) in stale_temporaries(&parent, &name.to_string_lossy()) {
            // An old output whose replacement never took its name is the only copy: put it back.
            let restore = is_old && !target.exists();
            let done = if restore {
                std::fs::rename(&path, target)
            } else if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            let (from, to) = (path.display(), target.display());
            match done {
                Ok(()) if restore => tracing::warn!(
                    %from, %to, pid,
                    "put back the previous output, moved aside by a writer that was killed mid-commit"
                ),
                Ok(()) => tracing::warn!(
                    path = %from, pid,
                    "removed a temporary folder left by a writer that is no longer running"
                ),
                Err(e) => {
                    let fix = if restore {
                        format!("mv {from} {to}")
                    } else {
                        format!("rm -r {from}")
                    };
                    tracing::warn!(path = %from, error = %e, "cannot clean up after a killed writer; run `{fix}`");
                    continue;
                }
            }
            cleaned.push(path);
        }
        cleaned
    }

    /// Creates the temporary folder; fails early if `target` exists and `overwrite` is false.
    /// Stale temporaries of `target` left by killed writers are cleaned up first
    /// ([`AtomicDir::clean_stale`]).
    pub fn new(target: &Path, overwrite: bool) -> Result<Self> {
        Self::clean_stale(target);
        if target.exists() && !overwrite {
            return Err(CheckpointError::OutputExists {
                path: target.to_owned(),
            });
        }
        let name = target
            .file_name()
            .ok_or_else(|| CheckpointError::Io {
                path: target.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "output path has no folder name",
                ),
            })?
            .to_string_lossy()
            .into_owned();
        let parent = parent_of(target);
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        // Process id plus a per-process counter: concurrent writers never share a temporary.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        Ok(Self {
            target: target.to_owned(),
            tmp,
            overwrite,
            committed: false,
        })
    }

    /// The temporary folder to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Moves the finished folder into place, replacing an old one only if overwrite was asked for.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            if !self.overwrite {
                return Err(CheckpointError::OutputExists {
                    path: self.target.clone(),
                });
            }
            // Two renames: the old folder moves aside, the new one takes its name. If the second
            // fails the old one is put back, so the target is never left missing or half-written.
            let mut old = self.tmp.clone().into_os_string();
            old.push(".old");
            let old = PathBuf::from(old);
            std::fs::rename(&self.target, &old).map_err(io_err(&self.target))?;
            if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
                let _ = std::fs::rename(&old, &self.target);
                return Err(io_err(&self.target)(e));
            }
            let removed = if old.is_dir() {
                std::fs::remove_dir_all(&old)
            } else {
                std::fs::remove_file(&old)
            };
            if let Err(e) = removed {
                // The new folder is in place; a leftover old copy is untidy, not a failure.
                tracing::warn!(path = %old.display(), error = %e, "could not remove the replaced folder");
            }
        } else {
            std::fs::rename(&self.tmp, &self.target).map_err(io_err(&self.target))?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

/// The folder `target` lives in (`.` for a bare name).
fn parent_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Writes `config.json` for `model` (with `dtype` recorded) into folder `dir`.
pub fn write_config(dir: &Path, model: &Model, dtype: Dtype) -> Result<()> {
    write_config_json(dir, model.config_json(), dtype)
}

/// Writes the config object `cfg` as `config.json` in folder `dir`, recording `dtype`.
pub fn write_config_json(
    dir: &Path,
    mut cfg: serde_json::Map<String, serde_json::Value>,
    dtype: Dtype,
) -> Result<()> {
    if let Some(name) = dtype.torch_name() {
        // transformers 5 writes `dtype`, 4.x wrote `torch_dtype`: update whichever is there.
        let mut any = false;
        for key in ["dtype", "torch_dtype"] {
            if cfg.contains_key(key) {
                cfg.insert(key.into(), name.into());
                any = true;
            }
        }
        if !any {
            cfg.insert("torch_dtype".into(), name.into());
        }
    }
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&cfg).expect("serialisable") + "\n";
    std::fs::write(&path, text).map_err(io_err(&path))
}

/// Writes the weights of `model` as `model.safetensors` in folder `dir`, in `dtype`.
pub fn write_weights(dir: &Path, model: &Model, dtype: Dtype) -> Result<()> {
    model.validate()?;
    let tensors = model.named_tensors();
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, t)| TensorSpec {
            name: n.clone(),
            dtype,
            shape: t.shape().to_vec(),
        })
        .collect();
    let meta = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    let path = dir.join(WEIGHTS_FILE);
    let mut w = SafetensorsWriter::create(&path, &specs, &meta)?;
    for (name, t) in &tensors {
        crate::safetensors::check_finite(&path, name, t.iter())?;
        w.write_f32(name, t.view())?;
    }
    w.finish()
}

/// Copies `files` (relative to `from`) into `to`, creating sub-folders.
pub fn copy_files(from: &Path, files: &[PathBuf], to: &Path) -> Result<()> {
    for rel in files {
        let src = from.join(rel);
        let dst = to.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::copy(&src, &dst).map_err(io_err(&src))?;
    }
    Ok(())
}

impl ModelDir {
    /// Wraps a model built in memory; `other_files` are relative to `path`.
    pub fn new(path: PathBuf, model: Model, dtype: Dtype, other_files: Vec<PathBuf>) -> Self {
        Self {
            path,
            model,
            dtype,
            other_files,
            dropped: Vec::new(),
        }
    }

    /// Writes config, weights and the carried files into `out`, atomically.
    ///
    /// The model is checked (shapes against the config, every value finite) before anything
    /// touches the disk; any failure leaves `out` as it was and no temporary folder behind.
    pub fn write(&self, out: &Path, opts: &WriteOptions) -> Result<PathBuf> {
        let dtype = opts.dtype.unwrap_or(self.dtype);
        if !dtype.is_weight_float() {
            return Err(CheckpointError::NotWritten {
                path: out.to_owned(),
                source: Box::new(CheckpointError::InvalidModel(format!(
                    "weights cannot be written as {dtype}; use F32, F16, BF16 or F64"
                ))),
            });
        }
        if out.exists() && !opts.overwrite {
            return Err(CheckpointError::OutputExists {
                path: out.to_owned(),
            });
        }
        self.model
            .validate()
            .map_err(|e| CheckpointError::NotWritten {
                path: out.to_owned(),
                source: Box::new(e),
            })?;
        let weights = out.join(WEIGHTS_FILE);
        for (name, t) in self.model.named_tensors() {
            crate::safetensors::check_finite(&weights, &name, t.iter())?;
        }
        let dir = AtomicDir::new(out, opts.overwrite)?;
        write_weights(dir.path(), &self.model, dtype)?;
        write_config(dir.path(), &self.model, dtype)?;
        copy_files(&self.path, &self.other_files, dir.path())?;
        dir.commit()
    }
}

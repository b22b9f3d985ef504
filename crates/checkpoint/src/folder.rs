//! Hugging Face model folders: read one into typed weights, write one atomically.

use crate::bert::Bert;
use crate::config::{BertConfig, Family, Gpt2Config, read_raw_config};
use crate::dtype::Dtype;
use crate::error::{CheckpointError, Result, io_err};
use crate::gpt2::Gpt2;
use crate::model::{Dropped, Model};
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
    let (model, dropped) = match family {
        Family::Bert => {
            let config = BertConfig::from_raw(&cfg_path, raw)?;
            let (m, dropped) = Bert::load(&store, config)?;
            (Model::Bert(m), dropped)
        }
        Family::Gpt2 => {
            let config = Gpt2Config::from_raw(&cfg_path, raw)?;
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

impl AtomicDir {
    /// Creates the temporary folder; fails early if `target` exists and `overwrite` is false.
    pub fn new(target: &Path, overwrite: bool) -> Result<Self> {
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
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
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

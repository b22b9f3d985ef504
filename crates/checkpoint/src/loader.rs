//! Name bookkeeping for family loaders: every stored tensor is either taken, dropped on purpose
//! with a reason, or reported as unexpected. Nothing is lost by accident.

use crate::error::{CheckpointError, Result};
use crate::nn::{LayerNorm, Linear};
use crate::safetensors::TensorStore;
use ndarray::{Array1, Array2, ArrayD, Ix1, Ix2};
use std::collections::{BTreeMap, BTreeSet};

/// Takes tensors out of a store, checking shapes against the config.
pub(crate) struct Taker<'a> {
    pub store: &'a TensorStore,
    pub taken: BTreeSet<String>,
    /// Every float tensor, decoded up front on all cores (or the error its read gave), until
    /// taken. Errors surface at `take`, in the loader's order, exactly as a lazy read's would.
    ready: BTreeMap<String, Result<ArrayD<f32>>>,
}

impl<'a> Taker<'a> {
    /// A taker over `store`; `unread` names the tensors the family drops without reading
    /// (buffers), which are not decoded ahead.
    pub fn new(store: &'a TensorStore, unread: impl Fn(&str) -> bool) -> Self {
        let names: Vec<&str> = store
            .names()
            .filter(|n| !unread(n) && store.info(n).is_some_and(|i| i.dtype.is_weight_float()))
            .collect();
        let ready = names
            .iter()
            .map(|n| (*n).to_owned())
            .zip(store.read_many_f32(&names))
            .collect();
        Self {
            store,
            taken: BTreeSet::new(),
            ready,
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.store.contains(name)
    }

    fn path_of(&self, name: &str) -> std::path::PathBuf {
        self.store
            .file_of(name)
            .unwrap_or(self.store.root())
            .to_owned()
    }

    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<ArrayD<f32>> {
        let info = self
            .store
            .info(name)
            .ok_or_else(|| CheckpointError::MissingTensor {
                path: self.store.root().to_owned(),
                tensor: name.to_owned(),
            })?;
        if info.shape != expected {
            return Err(CheckpointError::Shape {
                path: self.path_of(name),
                tensor: name.to_owned(),
                found: info.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        // A name taken twice (an alias checked against another) is read again.
        let t = match self.ready.remove(name) {
            Some(r) => r?,
            None => self.store.read_f32(name)?,
        };
        self.taken.insert(name.to_owned());
        Ok(t)
    }

    pub fn vec(&mut self, name: &str, n: usize) -> Result<Array1<f32>> {
        Ok(self
            .take(name, &[n])?
            .into_dimensionality::<Ix1>()
            .expect("1-d"))
    }

    /// A matrix as stored, (rows, cols).
    pub fn mat(&mut self, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>> {
        Ok(self
            .take(name, &[rows, cols])?
            .into_dimensionality::<Ix2>()
            .expect("2-d"))
    }

    /// An `nn.Linear` stored (out, in), returned in (in, out), column-major: the stored bytes
    /// as they are (see [`Linear`]).
    pub fn linear_t(&mut self, prefix: &str, din: usize, dout: usize) -> Result<Linear> {
        let w = self.mat(&format!("{prefix}.weight"), dout, din)?;
        Ok(Linear {
            weight: w.reversed_axes(),
            bias: self.vec(&format!("{prefix}.bias"), dout)?,
        })
    }

    /// A GPT-2 `Conv1D` stored (in, out), returned as is.
    pub fn conv1d(&mut self, prefix: &str, din: usize, dout: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.mat(&format!("{prefix}.weight"), din, dout)?,
            bias: self.vec(&format!("{prefix}.bias"), dout)?,
        })
    }

    /// A LayerNorm under `weight`/`bias` or the old `gamma`/`beta` names.
    pub fn layer_norm(&mut self, prefix: &str, n: usize) -> Result<LayerNorm> {
        let legacy = !self.has(&format!("{prefix}.weight")) && self.has(&format!("{prefix}.gamma"));
        let (w, b) = if legacy {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm {
            weight: self.vec(&format!("{prefix}.{w}"), n)?,
            bias: self.vec(&format!("{prefix}.{b}"), n)?,
        })
    }

    /// Names not taken yet.
    pub fn rest(&self) -> Vec<String> {
        self.store
            .names()
            .filter(|n| !self.taken.contains(*n))
            .map(str::to_owned)
            .collect()
    }
}

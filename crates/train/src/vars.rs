//! Helpers over candle `VarMap`s shared by the model families' parameter sets.

use bert2bert_checkpoint::{LayerNorm, Linear, NamedTensor};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use ndarray::{Array1, Array2, ArrayViewD, ArrayViewMutD};

/// All vars of `varmap` with their names, sorted by name (a stable order for optimizers and tests).
pub fn sorted(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A builder over `varmap` on the device its vars live on, so models built from it train them.
pub fn builder(varmap: &VarMap) -> VarBuilder<'static> {
    let dev = sorted(varmap)
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    VarBuilder::from_varmap(varmap, DType::F32, &dev)
}

/// A var map holding exact f32 copies of `tensors` on `device`, under their names.
pub fn from_tensors<'a>(
    tensors: impl IntoIterator<Item = NamedTensor<'a>>,
    device: &Device,
) -> crate::Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().expect("varmap lock");
        for (name, t) in tensors {
            let values: Vec<f32> = t.iter().copied().collect();
            let tensor = Tensor::from_vec(values, t.shape(), device)?;
            data.insert(name, Var::from_tensor(&tensor)?);
        }
    }
    Ok(varmap)
}

/// Reads the current values of a var map back as host arrays, by Hugging Face name.
pub struct VarReader {
    vars: Vec<(String, Var)>,
}

impl VarReader {
    /// A reader over the vars of `varmap` as they are now.
    pub fn new(varmap: &VarMap) -> Self {
        Self {
            vars: sorted(varmap),
        }
    }

    /// The var `name`, detached; fails if there is none.
    pub fn tensor(&self, name: &str) -> crate::Result<Tensor> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_detached_tensor())
            .ok_or_else(|| crate::TrainError::Model(format!("no parameter `{name}`")))
    }

    /// Copies the var `name` into `dst`, which must have its shape (as stored).
    pub fn read_into(&self, name: &str, mut dst: ArrayViewMutD<'_, f32>) -> crate::Result<()> {
        let t = self.tensor(name)?.to_dtype(DType::F32)?;
        if t.dims() != dst.shape() {
            return Err(crate::TrainError::Model(format!(
                "parameter `{name}` is {:?}, the model holds {:?}",
                t.dims(),
                dst.shape()
            )));
        }
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        let src = ArrayViewD::from_shape(dst.shape(), &v).expect("shape checked");
        dst.assign(&src);
        Ok(())
    }

    /// The 1-D var `name`.
    pub fn vec1(&self, name: &str) -> crate::Result<Array1<f32>> {
        Ok(Array1::from(
            self.tensor(name)?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        ))
    }

    /// The 2-D var `name`, as stored.
    pub fn mat(&self, name: &str) -> crate::Result<Array2<f32>> {
        let t = self.tensor(name)?.to_dtype(DType::F32)?;
        let (r, c) = t.dims2()?;
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        Ok(Array2::from_shape_vec((r, c), v).expect("shape"))
    }

    /// The 2-D var `name` transposed, in standard layout: an `(out, in)` `nn.Linear` weight
    /// as the checkpoint crate's `(in, out)`.
    pub fn mat_t(&self, name: &str) -> crate::Result<Array2<f32>> {
        Ok(self
            .mat(name)?
            .reversed_axes()
            .as_standard_layout()
            .into_owned())
    }

    /// The `nn.Linear` at `prefix` (`.weight` held `(out, in)`, `.bias`).
    pub fn linear(&self, prefix: &str) -> crate::Result<Linear> {
        Ok(Linear {
            weight: self.mat_t(&format!("{prefix}.weight"))?,
            bias: self.vec1(&format!("{prefix}.bias"))?,
        })
    }

    /// The GPT-2 `Conv1D` at `prefix` (`.weight` held `(in, out)`, as the checkpoint crate does).
    pub fn conv1d(&self, prefix: &str) -> crate::Result<Linear> {
        Ok(Linear {
            weight: self.mat(&format!("{prefix}.weight"))?,
            bias: self.vec1(&format!("{prefix}.bias"))?,
        })
    }

    /// The LayerNorm at `prefix` (`.weight`, `.bias`).
    pub fn layer_norm(&self, prefix: &str) -> crate::Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.vec1(&format!("{prefix}.weight"))?,
            bias: self.vec1(&format!("{prefix}.bias"))?,
        })
    }
}

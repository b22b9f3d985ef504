//! Helpers over candle `VarMap`s shared by the model families' parameter sets.

use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};

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

//! The device a run trains on.

use crate::{Result, TrainError};
use candle_core::Device;
use serde::{Deserialize, Serialize};

/// Where to run.
// Serialized by its variant names ("Cpu", "Cuda"): `pretrain_args.json` files store them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DeviceKind {
    /// The CPU (f32).
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

impl DeviceKind {
    /// The device's name on the command line (`cpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// Opens the requested device.
pub fn device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => Device::new_cuda(0).map_err(TrainError::NoCuda),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_command_line_spellings() {
        assert_eq!(DeviceKind::Cpu.name(), "cpu");
        assert_eq!(DeviceKind::Cuda.name(), "cuda");
        // The stored spelling of pretrain_args.json.
        assert_eq!(serde_json::to_string(&DeviceKind::Cpu).unwrap(), "\"Cpu\"");
        assert!(matches!(device(DeviceKind::Cpu), Ok(Device::Cpu)));
    }

    /// Worker processes are started with `name()`: it must be what clap parses.
    #[cfg(feature = "clap")]
    #[test]
    fn names_match_clap() {
        for k in [DeviceKind::Cpu, DeviceKind::Cuda] {
            let v = clap::ValueEnum::to_possible_value(&k).unwrap();
            assert_eq!(v.get_name(), k.name());
        }
    }
}

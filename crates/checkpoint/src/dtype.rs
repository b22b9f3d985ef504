//! Element types of safetensors files and conversion of float data to and from f32.

use half::{bf16, f16};
use std::fmt;

/// A safetensors element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// bool, one byte.
    Bool,
    /// u8.
    U8,
    /// i8.
    I8,
    /// i16.
    I16,
    /// u16.
    U16,
    /// i32.
    I32,
    /// u32.
    U32,
    /// i64.
    I64,
    /// u64.
    U64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// 8-bit float, e4m3.
    F8E4M3,
    /// 8-bit float, e5m2.
    F8E5M2,
}

impl Dtype {
    /// Parses the name used in safetensors headers (`"F32"`, `"BF16"`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "BOOL" => Self::Bool,
            "U8" => Self::U8,
            "I8" => Self::I8,
            "I16" => Self::I16,
            "U16" => Self::U16,
            "I32" => Self::I32,
            "U32" => Self::U32,
            "I64" => Self::I64,
            "U64" => Self::U64,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "F32" => Self::F32,
            "F64" => Self::F64,
            "F8_E4M3" => Self::F8E4M3,
            "F8_E5M2" => Self::F8E5M2,
            _ => return None,
        })
    }

    /// The name used in safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "U8",
            Self::I8 => "I8",
            Self::I16 => "I16",
            Self::U16 => "U16",
            Self::I32 => "I32",
            Self::U32 => "U32",
            Self::I64 => "I64",
            Self::U64 => "U64",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F32 => "F32",
            Self::F64 => "F64",
            Self::F8E4M3 => "F8_E4M3",
            Self::F8E5M2 => "F8_E5M2",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 | Self::F8E4M3 | Self::F8E5M2 => 1,
            Self::I16 | Self::U16 | Self::F16 | Self::BF16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 | Self::F64 => 8,
        }
    }

    /// Whether weights of this type can be read into f32 and written back.
    pub fn is_weight_float(self) -> bool {
        matches!(self, Self::F16 | Self::BF16 | Self::F32 | Self::F64)
    }

    /// The `torch_dtype`/`dtype` string Hugging Face writes into config.json.
    pub fn torch_name(self) -> Option<&'static str> {
        match self {
            Self::F16 => Some("float16"),
            Self::BF16 => Some("bfloat16"),
            Self::F32 => Some("float32"),
            Self::F64 => Some("float64"),
            _ => None,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            _ => Err(format!(
                "unsupported weight dtype `{s}` (use f32, f16 or bf16)"
            )),
        }
    }
}

/// Decodes little-endian float bytes of `dtype` into `out` (which has the element count).
pub(crate) fn decode_into(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Dtype::F64 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }
        }
        other => unreachable!("decode_into called with non-float dtype {other}"),
    }
}

/// Encodes a slice of f32 values as little-endian bytes of `dtype`, appending to `out`: the
/// same bytes as [`encode_extend`], written into space reserved once instead of pushed value by
/// value (the per-push length checks were a third of a bf16 Llama growth's time).
pub(crate) fn encode_slice(dtype: Dtype, values: &[f32], out: &mut Vec<u8>) {
    /// Resizes `out` by `N` bytes a value and fills them with `f(value)`.
    fn fill<const N: usize>(values: &[f32], out: &mut Vec<u8>, f: impl Fn(f32) -> [u8; N]) {
        let start = out.len();
        out.resize(start + N * values.len(), 0);
        for (dst, &v) in out[start..].chunks_exact_mut(N).zip(values) {
            dst.copy_from_slice(&f(v));
        }
    }
    match dtype {
        Dtype::F32 => fill(values, out, |v| v.to_le_bytes()),
        Dtype::F16 => fill(values, out, |v| f16::from_f32(v).to_le_bytes()),
        Dtype::BF16 => fill(values, out, |v| bf16::from_f32(v).to_le_bytes()),
        Dtype::F64 => fill(values, out, |v| (v as f64).to_le_bytes()),
        other => unreachable!("encode_slice called with non-float dtype {other}"),
    }
}

/// Encodes f32 values as little-endian bytes of `dtype`, appending to `out`.
pub(crate) fn encode_extend(dtype: Dtype, values: impl Iterator<Item = f32>, out: &mut Vec<u8>) {
    match dtype {
        Dtype::F32 => values.for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Dtype::F16 => values.for_each(|v| out.extend_from_slice(&f16::from_f32(v).to_le_bytes())),
        Dtype::BF16 => values.for_each(|v| out.extend_from_slice(&bf16::from_f32(v).to_le_bytes())),
        Dtype::F64 => values.for_each(|v| out.extend_from_slice(&(v as f64).to_le_bytes())),
        other => unreachable!("encode_extend called with non-float dtype {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_a_slice_gives_the_bytes_of_encoding_value_by_value() {
        // Signed zeros, a subnormal, the f32 extremes, infinities, NaN, and values that sit on
        // bf16/f16 rounding ties, after bytes already in the buffer.
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.5,
            f32::MIN_POSITIVE / 3.0,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            65504.0,
            70000.0,
        ];
        values.extend((0..1000).map(|i| (i as f32 * 0.37).sin() * 1e3));
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
            let mut a = vec![7u8, 9];
            let mut b = a.clone();
            encode_extend(dtype, values.iter().copied(), &mut a);
            encode_slice(dtype, &values, &mut b);
            assert_eq!(a, b, "{dtype}");
            assert_eq!(b.len(), 2 + values.len() * dtype.size(), "{dtype}");
        }
    }
}

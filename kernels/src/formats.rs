//! Tensor element types and their block formats: the one place where the byte layout of every
//! quantized block is defined (mirrors ggml's `ggml-common.h`, so GGUF files map onto these
//! structs without copying). Everything else asks this file for sizes and field offsets: the
//! constants `Q4_0_BYTES`, `Q6_K_D`, `Q8_K_BSUMS`, ... are derived from the structs at compile
//! time, so kernels slice blocks with constants.

use half::f16;
use std::mem::{offset_of, size_of};

/// Element types lckv reads and writes. Discriminants are the GGUF / ggml type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q8_0 = 8,
    Q8_1 = 9,
    Q4K = 12,
    Q6K = 14,
    Q8K = 15,
    BF16 = 30,
}

/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;
/// Elements per block of the simple quants.
pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;
/// Bytes of packed 6-bit scales/mins in a Q4_K super-block.
pub const K_SCALE_SIZE: usize = 12;

impl GgmlType {
    /// Every type, in the order of [`GgmlType::index`].
    pub const ALL: [GgmlType; 11] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::Q8K,
        GgmlType::BF16,
    ];

    /// Dense index 0..11 into [`GgmlType::ALL`], for per-type tables.
    pub fn index(self) -> usize {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 4,
            GgmlType::Q8_0 => 5,
            GgmlType::Q8_1 => 6,
            GgmlType::Q4K => 7,
            GgmlType::Q6K => 8,
            GgmlType::Q8K => 9,
            GgmlType::BF16 => 10,
        }
    }

    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            15 => GgmlType::Q8K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name for the type (as llama.cpp prints it).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q8_1 => "q8_1",
            GgmlType::Q4K => "q4_K",
            GgmlType::Q6K => "q6_K",
            GgmlType::Q8K => "q8_K",
            GgmlType::BF16 => "bf16",
        }
    }

    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Elements per block.
    pub const fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 => QK4_0,
            GgmlType::Q4_1 => QK4_1,
            GgmlType::Q5_0 => QK5_0,
            GgmlType::Q8_0 => QK8_0,
            GgmlType::Q8_1 => QK8_1,
            GgmlType::Q4K | GgmlType::Q6K | GgmlType::Q8K => QK_K,
        }
    }

    /// Bytes per block: the `*_BYTES` constants below for the quantized types.
    pub const fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => size_of::<f32>(),
            GgmlType::F16 | GgmlType::BF16 => size_of::<f16>(),
            GgmlType::Q4_0 => Q4_0_BYTES,
            GgmlType::Q4_1 => Q4_1_BYTES,
            GgmlType::Q5_0 => Q5_0_BYTES,
            GgmlType::Q8_0 => Q8_0_BYTES,
            GgmlType::Q8_1 => Q8_1_BYTES,
            GgmlType::Q4K => Q4_K_BYTES,
            GgmlType::Q6K => Q6_K_BYTES,
            GgmlType::Q8K => Q8_K_BYTES,
        }
    }

    /// Bytes of one row of `n` elements, or None when `n` is not a whole number of blocks.
    pub fn row_size(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// The type activations are quantized to before a dot product with weights of this type
    /// (as in llama.cpp, so that results agree with it).
    pub fn vec_dot_type(self) -> GgmlType {
        match self {
            GgmlType::F32 => GgmlType::F32,
            GgmlType::F16 => GgmlType::F16,
            GgmlType::BF16 => GgmlType::BF16,
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
            GgmlType::Q4_1 => GgmlType::Q8_1,
            GgmlType::Q8_1 => GgmlType::Q8_1,
            GgmlType::Q4K | GgmlType::Q6K | GgmlType::Q8K => GgmlType::Q8K,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// 4-bit, one scale: x = d * (q - 8).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    /// Low nibbles are elements 0..16, high nibbles 16..32.
    pub qs: [u8; QK4_0 / 2],
}

/// 4-bit, scale and minimum: x = d * q + m.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK4_1 / 2],
}

/// 5-bit, one scale: x = d * (q - 16), the fifth bits packed in `qh`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}

/// 8-bit, one scale: x = d * q.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK8_0],
}

/// 8-bit activation block with `s = d * sum(qs)`, paired with Q4_1 weights.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK8_1],
}

/// 4-bit K-quant: 8 sub-blocks of 32 with 6-bit scales and mins.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

/// 6-bit K-quant: 16 sub-blocks of 16 with 8-bit scales.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

/// 8-bit activation super-block for K-quant dot products (f32 scale, per-16 sums).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

// Bytes per block and the byte offset of each field, for kernels that work on raw block bytes
// (`chunks_exact(Q4_0_BYTES)`, `&x[Q4_0_QS..]`). They are constants, so a chunk size is known at
// compile time: that is what lets the compiler drop bounds checks and unroll the hot loops. The
// scale `d` that opens every block but Q6_K's has no constant: kernels read it at the block's
// start (asserted below); Q6_K's comes last, at `Q6_K_D`.

pub const Q4_0_BYTES: usize = size_of::<BlockQ4_0>();
pub const Q4_0_QS: usize = offset_of!(BlockQ4_0, qs);

pub const Q4_1_BYTES: usize = size_of::<BlockQ4_1>();
pub const Q4_1_M: usize = offset_of!(BlockQ4_1, m);
pub const Q4_1_QS: usize = offset_of!(BlockQ4_1, qs);

pub const Q5_0_BYTES: usize = size_of::<BlockQ5_0>();
pub const Q5_0_QH: usize = offset_of!(BlockQ5_0, qh);
pub const Q5_0_QS: usize = offset_of!(BlockQ5_0, qs);

pub const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
pub const Q8_0_QS: usize = offset_of!(BlockQ8_0, qs);

pub const Q8_1_BYTES: usize = size_of::<BlockQ8_1>();
pub const Q8_1_S: usize = offset_of!(BlockQ8_1, s);
pub const Q8_1_QS: usize = offset_of!(BlockQ8_1, qs);

pub const Q4_K_BYTES: usize = size_of::<BlockQ4K>();
pub const Q4_K_DMIN: usize = offset_of!(BlockQ4K, dmin);
pub const Q4_K_SCALES: usize = offset_of!(BlockQ4K, scales);
pub const Q4_K_QS: usize = offset_of!(BlockQ4K, qs);

pub const Q6_K_BYTES: usize = size_of::<BlockQ6K>();
pub const Q6_K_QL: usize = offset_of!(BlockQ6K, ql);
pub const Q6_K_QH: usize = offset_of!(BlockQ6K, qh);
pub const Q6_K_SCALES: usize = offset_of!(BlockQ6K, scales);
pub const Q6_K_D: usize = offset_of!(BlockQ6K, d);

pub const Q8_K_BYTES: usize = size_of::<BlockQ8K>();
pub const Q8_K_QS: usize = offset_of!(BlockQ8K, qs);
pub const Q8_K_BSUMS: usize = offset_of!(BlockQ8K, bsums);

// ggml's sizes (the static_asserts of ggml-common.h): GGUF files hold blocks of exactly these.
const _: () = {
    assert!(Q4_0_BYTES == 18);
    assert!(Q4_1_BYTES == 20);
    assert!(Q5_0_BYTES == 22);
    assert!(Q8_0_BYTES == 34);
    assert!(Q8_1_BYTES == 36);
    assert!(Q4_K_BYTES == 144);
    assert!(Q6_K_BYTES == 210);
    assert!(Q8_K_BYTES == 292);
};

// The opening scale is at byte 0, and the last field ends the block (no padding under repr(C)).
const _: () = {
    assert!(offset_of!(BlockQ4_0, d) == 0 && Q4_0_QS + QK4_0 / 2 == Q4_0_BYTES);
    assert!(offset_of!(BlockQ4_1, d) == 0 && Q4_1_QS + QK4_1 / 2 == Q4_1_BYTES);
    assert!(offset_of!(BlockQ5_0, d) == 0 && Q5_0_QS + QK5_0 / 2 == Q5_0_BYTES);
    assert!(offset_of!(BlockQ8_0, d) == 0 && Q8_0_QS + QK8_0 == Q8_0_BYTES);
    assert!(offset_of!(BlockQ8_1, d) == 0 && Q8_1_QS + QK8_1 == Q8_1_BYTES);
    assert!(offset_of!(BlockQ4K, d) == 0 && Q4_K_QS + QK_K / 2 == Q4_K_BYTES);
    assert!(Q6_K_QL == 0 && Q6_K_D + size_of::<f16>() == Q6_K_BYTES);
    assert!(
        offset_of!(BlockQ8K, d) == 0 && Q8_K_BSUMS + size_of::<[i16; QK_K / 16]>() == Q8_K_BYTES
    );
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_ggml() {
        assert_eq!(GgmlType::Q4_0.type_size(), 18);
        assert_eq!(GgmlType::Q4_1.type_size(), 20);
        assert_eq!(GgmlType::Q5_0.type_size(), 22);
        assert_eq!(GgmlType::Q8_0.type_size(), 34);
        assert_eq!(GgmlType::Q8_1.type_size(), 36);
        assert_eq!(GgmlType::Q4K.type_size(), 144);
        assert_eq!(GgmlType::Q6K.type_size(), 210);
        assert_eq!(GgmlType::Q8K.type_size(), 292);
    }

    #[test]
    fn row_size_rejects_partial_blocks() {
        assert_eq!(GgmlType::Q4_0.row_size(64), Some(36));
        assert_eq!(GgmlType::Q4_0.row_size(33), None);
        assert_eq!(GgmlType::F32.row_size(7), Some(28));
    }
}

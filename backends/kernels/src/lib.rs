//! # gllm-kernels: CPU weight kernels
//!
//! Every weight format the CPU backends multiply by: GGUF's block types (legacy
//! 32-value blocks Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; k-quant 256-value super-blocks Q2_K,
//! Q3_K, Q4_K, Q5_K, Q6_K), 16-bit floats (bf16, f16) and f32 ([`packed_f32`], for
//! products of a few rows). Weights are repacked once at
//! load into groups of eight interleaved rows ([`grouped`]), so one SIMD instruction
//! advances eight output rows and the weights stream from memory sequentially.
//!
//! ## Arithmetic
//! The same as llama.cpp's: activations are quantized once per matmul, to Q8_0 blocks
//! (32 values, f16 scale) for the legacy types and to Q8_K blocks (256 values, f32
//! scale, sums of 16) for the k-quants ([`act`]); each block's dot product is computed
//! exactly in integers and scaled in f32. Weights are stored as unsigned integers
//! `u`, with a type's offset or minimum taken back out through the activation block
//! sums: `Σ (u − off)·a = Σ u·a − off·Σ a`.
//!
//! ## Layout
//! Each block type is one file ([`q4_0`], …, [`q6_k`]) implementing [`BlockFormat`]:
//! how a GGUF block decodes into unsigned values and scales, and which packed
//! [`Layout`] it uses. The shared machinery does the rest: [`planes`] (bit planes of
//! eight interleaved rows), [`legacy`] and [`kquant`] (repacking, dequantization,
//! scalar and SIMD kernels), [`half`] (bf16/f16).
//!
//! Kernels are chosen at run time ([`isa::Isa`]): AVX-512 VNNI (on 256-bit registers),
//! else AVX2 + FMA + F16C, else portable scalar code. All compute the same integer
//! sums, so they agree up to the order of f32 additions.
//!
//! ## Prefill
//! A matmul over several activation rows (a prompt, or the sequences of a batch)
//! unpacks each block of eight weight rows once and multiplies it into a tile of
//! activation rows held in registers, so weights are read once per tile, not per row.

#![warn(missing_docs)]

pub mod act;
pub mod error;
pub mod exp;
pub mod format;
pub mod grouped;
pub mod half;
pub mod isa;
pub mod kquant;
pub mod legacy;
pub mod packed_f32;
pub mod planes;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod quant;
pub mod testdata;

#[cfg(test)]
mod testing;

pub use error::KernelError;
pub use format::{BlockFormat, BlockType, Decoded, Layout, Scales};
pub use half::{HalfKind, PackedHalf};
pub use isa::Isa;
pub use packed_f32::PackedF32;
pub use quant::QuantMatrix;

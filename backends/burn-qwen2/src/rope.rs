//! Rotary position embedding in Qwen2's (Hugging Face's) half-rotation layout:
//! dimension `i` of a head rotates with dimension `i + head_dim / 2`, by the
//! angle `position * rope_theta^(-2i / head_dim)`.

use burn::tensor::{DType, Device, Tensor, TensorData};

/// The inverse frequencies of one head, computed as transformers does (in f32).
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

/// `cos` and `sin` of the angles of some positions, `[1, positions, 1, head_dim]`,
/// each half of `head_dim` holding the same angles.
pub struct RopeTables {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope {
    /// The frequencies for heads of `head_dim` (even) with base `theta`.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let theta = theta as f32;
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Self { inv_freq, head_dim }
    }

    /// The tables for `positions` (one row each), in `dtype` on `device`.
    pub fn tables(&self, positions: &[usize], dtype: DType, device: &Device) -> RopeTables {
        let (d, len) = (self.head_dim, positions.len());
        let mut cos = Vec::with_capacity(len * d);
        let mut sin = Vec::with_capacity(len * d);
        for &p in positions {
            // transformers multiplies in f32, then takes cos/sin of that f32 angle.
            let angles: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| (*a as f64).cos() as f32));
                sin.extend(angles.iter().map(|a| (*a as f64).sin() as f32));
            }
        }
        let make = |v: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(v, [1, len, 1, d]), device).cast(dtype)
        };
        RopeTables {
            cos: make(cos),
            sin: make(sin),
        }
    }
}

impl RopeTables {
    /// Rotates `x` `[batch, positions, heads, head_dim]`:
    /// `x * cos + rotate_half(x) * sin`, `rotate_half(x) = [-x2, x1]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let d = x.dims()[3];
        let half = d / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

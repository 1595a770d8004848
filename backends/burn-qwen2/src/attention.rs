//! Grouped-query attention over a KV cache, without repeating the K/V heads:
//! the query heads that share one K/V head are stacked into the rows of one
//! matrix, so each K/V head is multiplied once, whatever the group size.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, DType, Device, Tensor, TensorData};

/// Attention of `q` `[1, heads, n, head_dim]` (positions `offset..offset + n`)
/// over `k`, `v` `[1, kv_heads, offset + n, head_dim]` (every position so far),
/// causal: a query sees the keys at its own position and before.
/// Returns `[1, heads, n, head_dim]`. Scores, softmax and the weighted sum run
/// in f32 whatever the inputs' dtype (the result has the inputs' dtype).
pub fn grouped_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    offset: usize,
    device: &Device,
) -> Tensor<4> {
    let dtype = q.dtype();
    let (q, k, v) = (q.cast(DType::F32), k.cast(DType::F32), v.cast(DType::F32));
    let [b, heads, n, d] = q.dims();
    let [_, kv_heads, total, _] = k.dims();
    let group = heads / kv_heads;
    // Rows of one K/V head: query head g of the group at position i is row g * n + i.
    let q = q.reshape([b, kv_heads, group * n, d]);
    let scale = 1.0 / (d as f64).sqrt();
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    let scores = if n > 1 {
        // True where the key lies after the query's own position.
        let mut mask = Vec::with_capacity(group * n * total);
        for _ in 0..group {
            for i in 0..n {
                mask.extend((0..total).map(|j| j > offset + i));
            }
        }
        let mask =
            Tensor::<4, Bool>::from_data(TensorData::new(mask, [1, 1, group * n, total]), device)
                .expand([b, kv_heads, group * n, total]);
        scores.mask_fill(mask, f32::NEG_INFINITY)
    } else {
        scores
    };
    let probs = softmax(scores, 3);
    probs.matmul(v).reshape([b, heads, n, d]).cast(dtype)
}

//! The KV cache of one sequence: per layer, keys and values
//! `[1, kv_heads, capacity, head_dim]` on the model's device, of which the
//! first `len` positions are valid.
//!
//! Nothing is allocated until the first forward; capacity then grows in
//! chunks (at least [`MIN_CHUNK`] positions, and half the current capacity
//! beyond that), never past the model's context. Truncation only moves `len`.

use burn::tensor::{DType, Device, Tensor};
use gllm_api::{BackendError, KvCache};

/// The smallest growth step, in positions.
pub const MIN_CHUNK: usize = 256;

/// Keys and values of one layer.
#[derive(Clone)]
pub(crate) struct LayerKv {
    pub k: Tensor<4>,
    pub v: Tensor<4>,
}

/// The KV cache of one sequence of a [`crate::BurnQwen2`] model.
pub struct Qwen2Cache {
    /// Which loaded model created it.
    pub(crate) model_id: u64,
    /// Positions held.
    pub(crate) len: usize,
    /// Positions allocated (0 before the first forward).
    pub(crate) capacity: usize,
    /// Per layer; `None` before the first forward, or after a forward failed
    /// half-way (the cache is then reset on the next use).
    pub(crate) layers: Vec<Option<LayerKv>>,
    /// The most positions the model accepts.
    pub(crate) max_positions: usize,
}

impl Qwen2Cache {
    pub(crate) fn new(model_id: u64, layers: usize, max_positions: usize) -> Self {
        Self {
            model_id,
            len: 0,
            capacity: 0,
            layers: (0..layers).map(|_| None).collect(),
            max_positions,
        }
    }

    /// Positions allocated.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when every layer holds its tensors (false after a failed forward).
    pub(crate) fn is_whole(&self) -> bool {
        self.capacity == 0 || self.layers.iter().all(Option::is_some)
    }

    /// Forgets everything and frees the memory.
    pub(crate) fn reset(&mut self) {
        self.len = 0;
        self.capacity = 0;
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    /// Makes room for `needed` positions, keeping the first `len`.
    pub(crate) fn reserve(
        &mut self,
        needed: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) {
        if needed <= self.capacity {
            return;
        }
        let grown = self.capacity + (self.capacity / 2).max(MIN_CHUNK);
        let capacity = needed.max(grown).min(self.max_positions.max(needed));
        let len = self.len;
        for layer in &mut self.layers {
            let fresh = || Tensor::<4>::zeros([1, kv_heads, capacity, head_dim], (device, dtype));
            let (mut k, mut v) = (fresh(), fresh());
            if let Some(old) = layer.take()
                && len > 0
            {
                let keep = [0..1, 0..kv_heads, 0..len, 0..head_dim];
                k = k.slice_assign(keep.clone(), old.k.narrow(2, 0, len));
                v = v.slice_assign(keep, old.v.narrow(2, 0, len));
            }
            *layer = Some(LayerKv { k, v });
        }
        self.capacity = capacity;
    }
}

impl KvCache for Qwen2Cache {
    fn len(&self) -> usize {
        self.len
    }

    /// Burn's tensors are values (an operation on a shared one writes a new one), so
    /// cloning the handles gives a copy that shares no state.
    fn try_clone(&self) -> Result<Box<dyn KvCache>, BackendError> {
        Ok(Box::new(Self {
            model_id: self.model_id,
            len: self.len,
            capacity: self.capacity,
            layers: self.layers.clone(),
            max_positions: self.max_positions,
        }))
    }

    fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.k.shape().num_elements() + l.v.shape().num_elements()) * l.k.dtype().size())
            .sum()
    }

    fn truncate(&mut self, len: usize) -> Result<(), BackendError> {
        if len > self.len {
            return Err(BackendError::invalid_input(format!(
                "cannot truncate a KV cache of {} positions to {len}",
                self.len
            )));
        }
        self.len = len;
        Ok(())
    }
}

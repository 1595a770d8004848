//! The caller-owned KV cache of one sequence: per layer, keys and values that grow as
//! positions are appended. On the CPU they are plain buffers that [`crate::attention`]
//! reads in place (keys in blocks of sixteen positions, values position-major), f32 or
//! f16 (option `kv_cache`); on other devices, tensors [kv_heads, capacity, head_dim]
//! that grow in chunks.

use candle_core::{DType, Tensor};
use gllm_api::{BackendError, KvCache};
use half::f16;

use crate::attention::KvElem;
use crate::error::Result;

/// Keys and values of one layer on the CPU, in elements of type `T`.
#[derive(Debug, Default, Clone)]
pub(crate) struct HostKv<T> {
    k: Vec<T>,
    v: Vec<T>,
}

impl<T: KvElem> HostKv<T> {
    /// Writes `k`, `v` ([n, kv_heads, head_dim], position-major) at positions
    /// `len..len + n` and returns the key cache (the block layout of
    /// [`crate::attention::key_index`]) and the values ([positions, kv_heads, head_dim])
    /// of positions `0..len + n`.
    pub(crate) fn append(
        &mut self,
        len: usize,
        kv_heads: usize,
        head_dim: usize,
        k: &[f32],
        v: &[f32],
    ) -> (&[T], &[T]) {
        let width = kv_heads * head_dim;
        let n = k.len() / width.max(1);
        let keys = crate::attention::key_cache_len(len + n, kv_heads, head_dim);
        if self.k.len() < keys {
            self.k.resize(keys, T::default());
        }
        crate::attention::store_keys(&mut self.k, len, k, kv_heads, head_dim);
        let end = len * width + v.len();
        if self.v.len() < end {
            self.v.resize(end, T::default());
        }
        for (dst, src) in self.v[len * width..end].iter_mut().zip(v) {
            *dst = T::from_f32(*src);
        }
        (&self.k[..keys], &self.v[..end])
    }

    fn bytes(&self) -> usize {
        (self.k.capacity() + self.v.capacity()) * std::mem::size_of::<T>()
    }
}

/// Positions added at a time when a layer's buffers fill up.
const CHUNK: usize = 256;

/// Keys and values of one layer.
#[derive(Debug, Default)]
pub(crate) struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// The CPU cache in f32 (the default).
    pub(crate) host: HostKv<f32>,
    /// The CPU cache in f16 (`kv_cache = "f16"`); a model uses one of the two.
    pub(crate) host16: HostKv<f16>,
}

impl LayerKv {
    /// A deep copy (device tensors copied too: appends write into them in place).
    fn deep_copy(&self) -> Result<Self> {
        let copy = |t: &Option<Tensor>| t.as_ref().map(Tensor::copy).transpose();
        Ok(Self {
            k: copy(&self.k)?,
            v: copy(&self.v)?,
            host: self.host.clone(),
            host16: self.host16.clone(),
        })
    }

    fn bytes(&self) -> usize {
        let tensor = |t: &Option<Tensor>| t.as_ref().map_or(0, |t| t.elem_count() * 4);
        self.host.bytes() + self.host16.bytes() + tensor(&self.k) + tensor(&self.v)
    }

    fn capacity(&self) -> usize {
        self.k.as_ref().and_then(|k| k.dim(1).ok()).unwrap_or(0)
    }

    /// Writes `k`, `v` ([kv_heads, n, head_dim]) at positions `len..len + n` and returns
    /// views of positions `0..len + n`.
    pub(crate) fn append(
        &mut self,
        len: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (heads, n, dim) = k.dims3()?;
        let need = len + n;
        if need > self.capacity() {
            let cap = need.next_multiple_of(CHUNK);
            let grow = |old: &Option<Tensor>| -> Result<Tensor> {
                let t = Tensor::zeros((heads, cap, dim), DType::F32, k.device())?;
                if let Some(old) = old
                    && len > 0
                {
                    t.slice_set(&old.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
                }
                Ok(t)
            };
            self.k = Some(grow(&self.k)?);
            self.v = Some(grow(&self.v)?);
        }
        let (Some(kc), Some(vc)) = (&self.k, &self.v) else {
            return Err(crate::error::internal(
                "KV cache buffers missing after growth",
            ));
        };
        kc.slice_set(&k.contiguous()?, 1, len)?;
        vc.slice_set(&v.contiguous()?, 1, len)?;
        Ok((kc.narrow(1, 0, need)?, vc.narrow(1, 0, need)?))
    }
}

/// The KV cache of one sequence of a [`crate::Qwen2Backend`].
#[derive(Debug)]
pub struct Qwen2Cache {
    pub(crate) model_id: u64,
    pub(crate) len: usize,
    pub(crate) layers: Vec<LayerKv>,
}

impl Qwen2Cache {
    pub(crate) fn new(model_id: u64, layers: usize) -> Self {
        Self {
            model_id,
            len: 0,
            layers: (0..layers).map(|_| LayerKv::default()).collect(),
        }
    }

    /// Layer `li`'s keys and values.
    pub(crate) fn layer_mut(&mut self, li: usize) -> Result<&mut LayerKv> {
        self.layers
            .get_mut(li)
            .ok_or_else(|| crate::error::internal("KV cache has the wrong number of layers"))
    }
}

impl KvCache for Qwen2Cache {
    fn len(&self) -> usize {
        self.len
    }

    fn truncate(&mut self, len: usize) -> std::result::Result<(), BackendError> {
        if len > self.len {
            return Err(BackendError::invalid_input(format!(
                "cannot truncate a KV cache of {} positions to {len}",
                self.len
            )));
        }
        // Positions from `len` on are overwritten by the next append.
        self.len = len;
        Ok(())
    }

    fn try_clone(&self) -> std::result::Result<Box<dyn KvCache>, BackendError> {
        let layers = self
            .layers
            .iter()
            .map(LayerKv::deep_copy)
            .collect::<Result<Vec<_>>>()
            .map_err(BackendError::from)?;
        Ok(Box::new(Self {
            model_id: self.model_id,
            len: self.len,
            layers,
        }))
    }

    fn bytes(&self) -> usize {
        self.layers.iter().map(LayerKv::bytes).sum()
    }
}

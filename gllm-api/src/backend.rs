//! The trait a loaded model implements, and the values that cross it.

use std::any::Any;

use crate::{BackendError, DType, Device, Task};

/// One tokenized input: a sentence for `embed`, a (query, document) pair for `rerank`.
///
/// The runtime tokenizes, truncates to the model's length and adds special tokens;
/// the backend pads batches itself and builds the attention mask from the lengths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedInput {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Segment ids (BERT `token_type_ids`); empty means all zeros.
    pub type_ids: Vec<u32>,
}

impl EncodedInput {
    /// An input with the given ids and all-zero segment ids.
    pub fn new(ids: Vec<u32>) -> Self {
        Self {
            ids,
            type_ids: Vec::new(),
        }
    }
}

/// What a loaded model is, as the runtime needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The task the model was loaded for.
    pub task: Task,
    /// Where its weights live.
    pub device: Device,
    /// The dtype it computes in.
    pub dtype: DType,
    /// The most positions (tokens) one input or one KV cache may hold.
    pub max_positions: usize,
    /// Size of the input vocabulary; larger token ids are invalid input.
    pub vocab_size: usize,
    /// Length of one output row: embedding size, number of labels, or logits (vocabulary) size.
    pub output_dim: usize,
}

/// The key/value cache of one generated sequence, owned by the caller.
///
/// Created by [`InferenceBackend::new_cache`] of one loaded model and only valid
/// with that model (backends downcast it through [`Any`] and refuse other types).
/// Dropping it frees its memory.
pub trait KvCache: Any + Send {
    /// How many positions (tokens) the cache holds.
    fn len(&self) -> usize;

    /// True when the cache holds no position.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every position from `len` on, to roll back or to reuse a prefix.
    /// `len` larger than [`KvCache::len`] is invalid input.
    fn truncate(&mut self, len: usize) -> Result<(), BackendError>;

    /// A copy of the cache that shares no state with it (the runtime's prompt cache
    /// keeps one per prompt prefix). Unsupported by default: a backend or plugin
    /// without it simply gets no prompt cache.
    fn try_clone(&self) -> Result<Box<dyn KvCache>, BackendError> {
        Err(BackendError::unsupported(
            "this backend's KV cache cannot be copied",
        ))
    }

    /// Bytes of memory the cache holds (what a prompt cache's budget counts); 0 when
    /// the backend does not say.
    fn bytes(&self) -> usize {
        0
    }
}

/// A loaded model. Weights are immutable and shared: one instance serves many
/// threads and many sequences at once (each sequence has its own [`KvCache`]).
///
/// Every method has a default that reports [`crate::ErrorKind::Unsupported`],
/// so a backend implements only the task it serves.
pub trait InferenceBackend: Send + Sync {
    /// What was loaded, where, and its limits.
    fn info(&self) -> ModelInfo;

    /// Pooled (and, where the model says so, normalized) embeddings, one row per input.
    /// The row of an input never depends on the other inputs of the batch.
    fn embed(&self, inputs: &[EncodedInput]) -> Result<Vec<Vec<f32>>, BackendError> {
        let _ = inputs;
        Err(BackendError::unsupported("this backend does not embed"))
    }

    /// Raw classifier logits, one row (of `num_labels` values) per (query, document) pair.
    fn rerank(&self, pairs: &[EncodedInput]) -> Result<Vec<Vec<f32>>, BackendError> {
        let _ = pairs;
        Err(BackendError::unsupported("this backend does not rerank"))
    }

    /// A new, empty KV cache for one sequence.
    fn new_cache(&self) -> Result<Box<dyn KvCache>, BackendError> {
        Err(BackendError::unsupported("this backend does not generate"))
    }

    /// Appends `tokens` to the sequence of `cache` (a prefill of many tokens or a
    /// one-token decode step) and returns the logits of the last position.
    fn forward(&self, cache: &mut dyn KvCache, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        let _ = (cache, tokens);
        Err(BackendError::unsupported("this backend does not generate"))
    }

    /// [`InferenceBackend::forward`] for several independent sequences at once;
    /// backends that can batch decode steps override it. Results are in input order.
    ///
    /// The same function of each sequence as `forward` alone (up to float rounding).
    /// On an error, a cache of the batch may hold part of its tokens: callers discard
    /// the caches of a failed batch.
    fn forward_batch(
        &self,
        steps: &mut [(&mut dyn KvCache, &[u32])],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        steps
            .iter_mut()
            .map(|(cache, tokens)| self.forward(&mut **cache, tokens))
            .collect()
    }

    /// Whether [`InferenceBackend::forward_batch`] runs its sequences in one pass
    /// (reading the weights once for all) rather than one after another. When it does,
    /// the runtime gathers the decode steps of concurrent generations on this model
    /// into batches.
    fn batches_steps(&self) -> bool {
        false
    }

    /// Bytes of KV cache one position of one sequence takes (what a server's KV
    /// memory budget counts); `None` when the backend does not say.
    fn kv_bytes_per_token(&self) -> Option<usize> {
        None
    }
}

/// Downcasts a cache to the backend's own type, or reports that it came from another model.
pub fn downcast_cache<T: KvCache>(cache: &mut dyn KvCache) -> Result<&mut T, BackendError> {
    let any: &mut dyn Any = cache;
    any.downcast_mut::<T>().ok_or_else(|| {
        BackendError::invalid_input("KV cache was created by another model or backend")
    })
}

//! The Qwen2 / Qwen3 decoder on Burn tensors: embedding, decoder layers (RMSNorm,
//! grouped-query attention with RoPE, q/k/v biases (Qwen2) or RMSNorm per q/k head
//! (Qwen3), SwiGLU MLP), final RMSNorm, and the tied or separate output projection.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::activation::silu;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use gllm_api::BackendError;
use rayon::prelude::*;

use crate::attention::grouped_attention;
use crate::cache::{LayerKv, Qwen2Cache};
use crate::rope::Rope;
use crate::weights::WeightStore;
use gllm_arch::schema::{self, HfNaming, Naming};
use gllm_arch::{DecoderConfig, LayerPart, Part};

/// A dense layer, weight stored `[out, in]` as PyTorch stores it: a block of
/// output columns is a contiguous block of rows, and a matrix-vector product
/// reads each row as one dot product.
struct Dense {
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
}

/// Below this many rows a product is a matrix-vector one, which the CPU
/// kernel runs on one thread: the output columns are then split over the
/// threads instead (views of the one weight, no copy).
const SPLIT_BELOW_ROWS: usize = 8;

/// `x @ w^T + b` for `x` `[rows, in]`, `w` `[out, in]`.
fn project(x: Tensor<2>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<2> {
    let y = x.matmul(w.transpose());
    match b {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    }
}

impl Dense {
    /// `x @ weight^T + bias` for `x` `[rows, in]`, over `splits` row blocks of the weight run in parallel.
    fn forward(&self, x: Tensor<2>, splits: usize) -> Tensor<2> {
        let out = self.weight.dims()[0];
        if splits <= 1 || x.dims()[0] >= SPLIT_BELOW_ROWS || out < 64 * splits {
            return project(x, self.weight.clone(), self.bias.clone());
        }
        let parts: Vec<Tensor<2>> = column_blocks(out, splits)
            .into_par_iter()
            .map(|(start, len)| {
                let w = self.weight.clone().narrow(0, start, len);
                let b = self.bias.clone().map(|b| b.narrow(0, start, len));
                project(x.clone(), w, b)
            })
            .collect();
        Tensor::cat(parts, 1)
    }
}

/// `splits` (start, len) blocks covering `0..n`, multiples of 16 but the last.
fn column_blocks(n: usize, splits: usize) -> Vec<(usize, usize)> {
    let step = n.div_ceil(splits).div_ceil(16) * 16;
    (0..n)
        .step_by(step.max(1))
        .map(|s| (s, step.min(n - s)))
        .collect()
}

struct Layer {
    input_norm: Tensor<1>,
    /// RMSNorm over each query head, and over each key head (Qwen3).
    head_norms: Option<(Tensor<1>, Tensor<1>)>,
    /// q, k and v projections fused into one `[hidden, q_dim + 2 * kv_dim]`.
    qkv: Dense,
    o: Dense,
    post_norm: Tensor<1>,
    /// gate and up projections fused into one `[hidden, 2 * intermediate]`.
    gate_up: Dense,
    down: Dense,
}

/// What a forward pass returns.
pub enum Output {
    /// Logits of the last position, `[vocab]`.
    LastLogits,
    /// Final hidden states (after the final RMSNorm) of every new position, `[n, hidden]`.
    Hidden,
}

/// A Qwen2 decoder whose weights live on one Burn device.
pub struct Qwen2Model {
    config: DecoderConfig,
    device: Device,
    dtype: DType,
    /// `[vocab, hidden]`.
    embed: Tensor<2>,
    /// The output projection `[vocab, hidden]`: the embedding matrix itself
    /// (the same tensor, not a copy) when tied.
    lm_head: Dense,
    norm: Tensor<1>,
    layers: Vec<Layer>,
    rope: Rope,
    /// Column blocks of a matrix-vector product run in parallel (1 on a GPU).
    splits: usize,
}

/// Takes tensors from the store and creates them on the device in the
/// compute dtype; missing or mis-shaped ones are recorded by the store and
/// come back as `None`.
struct Loader<'a> {
    store: &'a mut WeightStore,
    naming: Naming,
    device: &'a Device,
    dtype: DType,
}

impl Loader<'_> {
    fn tensor<const D: usize>(&self, data: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
        Tensor::<D>::from_data(TensorData::new(data, shape), self.device).cast(self.dtype)
    }

    fn vector(&mut self, part: Part, len: usize) -> Option<Tensor<1>> {
        let data = self.store.take(&self.naming.name(part), &[len])?;
        Some(self.tensor(data, [len]))
    }

    fn matrix(&mut self, part: Part, rows: usize, cols: usize) -> Option<Tensor<2>> {
        let data = self.store.take(&self.naming.name(part), &[rows, cols])?;
        Some(self.tensor(data, [rows, cols]))
    }

    /// Several PyTorch `[out_j, in]` weights (and, with `biases`, their biases) of layer
    /// `l` as one `[sum out_j, in]` layer.
    fn fused(
        &mut self,
        l: usize,
        parts: &[(LayerPart, Option<LayerPart>, usize)],
        inp: usize,
        bias: bool,
    ) -> Option<Dense> {
        let total: usize = parts.iter().map(|p| p.2).sum();
        let mut weight = Some(Vec::with_capacity(total * inp));
        let mut biases = bias.then(|| Vec::with_capacity(total));
        for &(w, b, out) in parts {
            let name = |p: LayerPart| self.naming.name(Part::Layer(l, p));
            let (w, b) = (name(w), b.map(name));
            // Every part is taken (and checked) even after one failed.
            match self.store.take(&w, &[out, inp]) {
                Some(w) => {
                    if let Some(all) = &mut weight {
                        all.extend_from_slice(&w);
                    }
                }
                None => weight = None,
            }
            if let (true, Some(b)) = (bias, b) {
                match self.store.take(&b, &[out]) {
                    Some(b) => {
                        if let Some(all) = &mut biases {
                            all.extend_from_slice(&b);
                        }
                    }
                    None => biases = None,
                }
            }
        }
        let bias = match biases {
            Some(all) => Some(self.tensor(all, [total])),
            None if bias => return None,
            None => None,
        };
        Some(Dense {
            weight: self.tensor(weight?, [total, inp]),
            bias,
        })
    }
}

fn rms_norm(x: Tensor<2>, weight: &Tensor<1>, eps: f64, dtype: DType) -> Tensor<2> {
    let x = x.cast(DType::F32);
    let mean_square = x.clone().square().mean_dim(1);
    let x = x * mean_square.add_scalar(eps).sqrt().recip();
    x.cast(dtype) * weight.clone().unsqueeze::<2>()
}

/// RMSNorm over the last dimension of `x` `[1, rows, heads, head_dim]` (each head).
fn head_norm(x: Tensor<4>, weight: &Tensor<1>, eps: f64, dtype: DType) -> Tensor<4> {
    let [b, rows, heads, d] = x.dims();
    rms_norm(x.reshape([b * rows * heads, d]), weight, eps, dtype).reshape([b, rows, heads, d])
}

fn internal(e: impl std::fmt::Debug) -> BackendError {
    BackendError::internal(format!("reading back a result: {e:?}"))
}

impl Qwen2Model {
    /// Builds the decoder from `store` on `device`, computing in `dtype`. The
    /// checkpoint is first checked against the schema of [`gllm_arch`] (every
    /// missing, unexpected or mis-shaped tensor named at once); what the store then
    /// finds (unreadable dtypes, truncated data) is reported by [`WeightStore::finish`].
    pub fn load(
        config: &DecoderConfig,
        mut store: WeightStore,
        device: &Device,
        dtype: DType,
        splits: usize,
        dir: &Path,
    ) -> Result<Self, BackendError> {
        use LayerPart::*;
        let shapes: BTreeMap<String, Vec<usize>> = store
            .names()
            .filter_map(|n| Some((n.to_string(), store.shape(n)?.to_vec())))
            .collect();
        let naming = Naming::Hf(HfNaming::detect(&shapes));
        schema::check_strict(config, &shapes, naming).map_err(|e| BackendError {
            message: format!("{}: {}", dir.display(), e.message),
            ..e
        })?;
        for (name, shape) in naming.tolerated(config) {
            store.ignore_shaped(&name, &shape);
        }
        let c = config;
        let h = c.hidden_size;
        let mut l = Loader {
            store: &mut store,
            naming,
            device,
            dtype,
        };
        let embed = l.matrix(Part::Embed, c.vocab_size, h);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let at = |p: LayerPart| Part::Layer(i, p);
            let input_norm = l.vector(at(InputNorm), h);
            let head_norms = if c.qk_norm {
                match (
                    l.vector(at(QNorm), c.head_dim),
                    l.vector(at(KNorm), c.head_dim),
                ) {
                    (Some(q), Some(k)) => Some(Some((q, k))),
                    _ => None,
                }
            } else {
                Some(None)
            };
            let qkv = l.fused(
                i,
                &[
                    (QW, Some(QB), c.q_dim()),
                    (KW, Some(KB), c.kv_dim()),
                    (VW, Some(VB), c.kv_dim()),
                ],
                h,
                c.attention_bias,
            );
            let o = l.fused(i, &[(OW, None, h)], c.q_dim(), false);
            let post_norm = l.vector(at(PostNorm), h);
            let (im, none) = (c.intermediate_size, None);
            let gate_up = l.fused(i, &[(Gate, none, im), (Up, none, im)], h, false);
            let down = l.fused(i, &[(Down, None, h)], im, false);
            if let (
                Some(input_norm),
                Some(head_norms),
                Some(qkv),
                Some(o),
                Some(post_norm),
                Some(gate_up),
                Some(down),
            ) = (input_norm, head_norms, qkv, o, post_norm, gate_up, down)
            {
                layers.push(Layer {
                    input_norm,
                    head_norms,
                    qkv,
                    o,
                    post_norm,
                    gate_up,
                    down,
                });
            }
        }
        let norm = l.vector(Part::Norm, h);
        // `None`: tied (a stored copy of the head was accepted above, and ignored).
        let separate_head = if c.tie_word_embeddings {
            None
        } else {
            l.matrix(Part::LmHead, c.vocab_size, h)
        };
        store.finish(dir)?;
        let complete = layers.len() == c.num_hidden_layers
            && (c.tie_word_embeddings || separate_head.is_some());
        match (embed, norm) {
            (Some(embed), Some(norm)) if complete => Ok(Self {
                config: config.clone(),
                device: device.clone(),
                dtype,
                lm_head: Dense {
                    weight: separate_head.unwrap_or_else(|| embed.clone()),
                    bias: None,
                },
                embed,
                norm,
                layers,
                rope: Rope::new(c.head_dim, c.rope_theta),
                splits,
            }),
            _ => Err(BackendError::internal(format!(
                "{}: weights are incomplete but no problem was recorded",
                dir.display()
            ))),
        }
    }

    /// The configuration the decoder was built from.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The dtype it computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Appends `tokens` (valid ids, not empty, fitting the context: checked by
    /// the caller) to `cache` and returns what `output` asks for, row-major f32.
    /// The cache's length moves only when the whole pass succeeded.
    pub fn forward(
        &self,
        cache: &mut Qwen2Cache,
        tokens: &[u32],
        output: Output,
    ) -> Result<Vec<f32>, BackendError> {
        let mut segments = [(cache, tokens)];
        let (x, _) = self.run(&mut segments)?;
        let values = match output {
            Output::Hidden => read(x)?,
            Output::LastLogits => read(self.logits(x.narrow(0, tokens.len() - 1, 1)))?,
        };
        let [(cache, tokens)] = segments;
        cache.len += tokens.len();
        Ok(values)
    }

    /// Several sequences in one pass: every sequence's new tokens go through
    /// the projections and the MLP together (each weight is read once for all
    /// of them), attention runs per sequence over its own cache. Returns the
    /// last-position logits of each sequence, in order.
    pub fn forward_many(
        &self,
        segments: &mut [(&mut Qwen2Cache, &[u32])],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let (x, starts) = self.run(segments)?;
        let last: Vec<usize> = starts
            .iter()
            .zip(segments.iter())
            .map(|(s, (_, t))| s + t.len() - 1)
            .collect();
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(
                last.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [last.len()],
            ),
            &self.device,
        );
        let vocab = self.config.vocab_size;
        let all = read(self.logits(x.select(0, index)))?;
        for (cache, tokens) in segments.iter_mut() {
            cache.len += tokens.len();
        }
        Ok(all.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Logits `[rows, vocab]` of final hidden states `[rows, hidden]`.
    fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        self.lm_head.forward(x, self.splits)
    }

    /// The decoder over the new tokens of every segment, writing their keys and
    /// values into each segment's cache (lengths are left to the caller): the
    /// final hidden states `[all new tokens, hidden]`, and the first row of each segment.
    fn run(
        &self,
        segments: &mut [(&mut Qwen2Cache, &[u32])],
    ) -> Result<(Tensor<2>, Vec<usize>), BackendError> {
        let c = &self.config;
        let (heads, kv_heads, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let mut starts = Vec::with_capacity(segments.len());
        let mut positions = Vec::new();
        let mut ids = Vec::new();
        for (cache, tokens) in segments.iter_mut() {
            starts.push(ids.len());
            positions.extend(cache.len..cache.len + tokens.len());
            ids.extend(tokens.iter().map(|&t| t as i64));
            cache.reserve(
                cache.len + tokens.len(),
                kv_heads,
                hd,
                self.dtype,
                &self.device,
            );
        }
        let rows = ids.len();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [rows]), &self.device);
        let mut x = self.embed.clone().select(0, ids);
        let rope = self.rope.tables(&positions, self.dtype, &self.device);
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let splits = self.splits;
        for (l, layer) in self.layers.iter().enumerate() {
            let a = rms_norm(x.clone(), &layer.input_norm, c.rms_norm_eps, self.dtype);
            let qkv = layer.qkv.forward(a, splits);
            let q = qkv.clone().narrow(1, 0, qd).reshape([1, rows, heads, hd]);
            let k = qkv
                .clone()
                .narrow(1, qd, kvd)
                .reshape([1, rows, kv_heads, hd]);
            let v = qkv
                .narrow(1, qd + kvd, kvd)
                .reshape([1, rows, kv_heads, hd]);
            let (q, k) = match &layer.head_norms {
                Some((qn, kn)) => (
                    head_norm(q, qn, c.rms_norm_eps, self.dtype),
                    head_norm(k, kn, c.rms_norm_eps, self.dtype),
                ),
                None => (q, k),
            };
            let (q, k) = (rope.apply(q), rope.apply(k));

            let mut ctx = Vec::with_capacity(segments.len());
            for ((cache, tokens), &start) in segments.iter_mut().zip(&starts) {
                let (n, offset) = (tokens.len(), cache.len);
                let total = offset + n;
                let mine = |t: &Tensor<4>| t.clone().narrow(1, start, n).swap_dims(1, 2);
                let slot = &mut cache.layers[l];
                let kv = slot.take().ok_or_else(|| {
                    BackendError::internal("KV cache layer missing after reserve")
                })?;
                let at = [0..1, 0..kv_heads, offset..total, 0..hd];
                let k_all = kv.k.slice_assign(at.clone(), mine(&k));
                let v_all = kv.v.slice_assign(at, mine(&v));
                let keys = k_all.clone().narrow(2, 0, total);
                let values = v_all.clone().narrow(2, 0, total);
                *slot = Some(LayerKv { k: k_all, v: v_all });
                ctx.push(
                    grouped_attention(mine(&q), keys, values, offset, &self.device)
                        .swap_dims(1, 2)
                        .reshape([n, qd]),
                );
            }
            let ctx = if ctx.len() == 1 {
                ctx.pop()
                    .ok_or_else(|| BackendError::internal("no segment"))?
            } else {
                Tensor::cat(ctx, 0)
            };
            x = x + layer.o.forward(ctx, splits);

            let m = rms_norm(x.clone(), &layer.post_norm, c.rms_norm_eps, self.dtype);
            let gu = layer.gate_up.forward(m, splits);
            let i = c.intermediate_size;
            let act = silu(gu.clone().narrow(1, 0, i)) * gu.narrow(1, i, i);
            x = x + layer.down.forward(act, splits);
        }
        Ok((rms_norm(x, &self.norm, c.rms_norm_eps, self.dtype), starts))
    }
}

/// A result read back from the device as f32 values, row-major.
fn read(t: Tensor<2>) -> Result<Vec<f32>, BackendError> {
    t.cast(DType::F32)
        .try_into_data()
        .map_err(internal)?
        .try_into_vec::<f32>()
        .map_err(internal)
}

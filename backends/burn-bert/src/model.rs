//! The BERT-family encoder on Burn tensors: embeddings, encoder layers, and the
//! sequence-classification head (dense + tanh on the first token, then the
//! output projection: BERT's pooler and classifier, or RoBERTa's
//! `classifier.dense` and `classifier.out_proj`).

use std::path::Path;
use std::sync::Arc;

use burn::tensor::activation::{gelu, gelu_approximate, relu};
use burn::tensor::module::{attention, layer_norm, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use gllm_api::BackendError;
use gllm_kernels::{BlockType, KernelError, PackedF32, QuantMatrix, q8_0};

use crate::attention;
use crate::config::{Activation, BertConfig, Family};
use crate::cpu;
use crate::weights::WeightStore;

/// The weight of a dense layer (four per encoder layer: their size does not matter).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Weight {
    /// `[in, out]` f32 on the device (transposed from PyTorch's `[out, in]`).
    F32(Tensor<2>),
    /// `[out, in]` int8 on the host: Q8_0 blocks of 32 values with an f16 scale each,
    /// multiplied by int8 activations (option `quantize = "int8"`).
    Int8(Arc<QuantMatrix>),
    /// `[out, in]` f32 on the host in gllm-kernels' groups of eight rows (the CPU
    /// path): a product of a few rows (one short query) costs its arithmetic, where a
    /// GEMM library packs the weights on every call.
    Packed(Arc<PackedF32>),
}

/// A dense layer.
#[derive(Clone)]
struct Dense {
    weight: Weight,
    bias: Tensor<1>,
    /// The bias on the host, for the CPU path's fused kernels.
    bias_host: Vec<f32>,
}

impl Dense {
    /// `x · Wᵀ + b` on the device (int8 weights go through the host).
    fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, BackendError> {
        match &self.weight {
            Weight::F32(w) => Ok(linear(x, w.clone(), Some(self.bias.clone()))),
            Weight::Int8(_) | Weight::Packed(_) => {
                let device = x.device();
                let mut y = self.product(x)?;
                let out = self.bias_host.len();
                for row in y
                    .as_mut_slice::<f32>()
                    .map_err(internal)?
                    .chunks_exact_mut(out)
                {
                    for (v, b) in row.iter_mut().zip(&self.bias_host) {
                        *v += b;
                    }
                }
                Ok(Tensor::from_data(y, &device))
            }
        }
    }

    /// `x · Wᵀ` (no bias), read back to the host: the CPU path's matmul.
    fn product(&self, x: Tensor<2>) -> Result<TensorData, BackendError> {
        match &self.weight {
            Weight::F32(w) => data(x.matmul(w.clone())),
            Weight::Int8(q) => {
                let (rows, cols) = q.dims();
                host_product(x, rows, cols, |xs, m, out| q.matmul(xs, m, out))
            }
            Weight::Packed(p) => host_product(x, p.rows, p.cols, |xs, m, out| p.matmul(xs, m, out)),
        }
    }

    /// The same layer with an f32 weight repacked for the host kernels (int8 ones
    /// stay as they are).
    fn to_packed(&self, name: &str) -> Result<Self, BackendError> {
        let Weight::F32(w) = &self.weight else {
            return Ok(self.clone());
        };
        let [inp, out] = w.dims();
        let p = PackedF32::from_transposed(out, inp, &host(w.clone())?).ok_or_else(|| {
            BackendError::internal(format!("repacking `{name}`: not [{inp}, {out}]"))
        })?;
        Ok(Self {
            weight: Weight::Packed(Arc::new(p)),
            ..self.clone()
        })
    }

    /// The same layer with its weight quantized to int8 (`name` for messages).
    fn to_int8(&self, name: &str) -> Result<Self, BackendError> {
        let Weight::F32(w) = &self.weight else {
            return Ok(self.clone());
        };
        let [inp, out] = w.dims();
        if !inp.is_multiple_of(32) {
            return Err(BackendError::unsupported(format!(
                "quantize = \"int8\": `{name}` is {inp} wide, not a multiple of 32"
            )));
        }
        let t = host(w.clone())?;
        let mut rows = vec![0f32; inp * out];
        for (i, row) in t.chunks_exact(out).enumerate() {
            for (o, v) in row.iter().enumerate() {
                rows[o * inp + i] = *v;
            }
        }
        let quantized =
            |e: KernelError| BackendError::internal(format!("quantizing `{name}`: {e}"));
        let blocks = q8_0::quantize(out, inp, &rows).map_err(quantized)?;
        let q = QuantMatrix::from_gguf(BlockType::Q8_0, out, inp, &blocks).map_err(quantized)?;
        Ok(Self {
            weight: Weight::Int8(Arc::new(q)),
            ..self.clone()
        })
    }
}

#[derive(Clone)]
struct Norm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    gamma_host: Vec<f32>,
    beta_host: Vec<f32>,
}

// The dense layers' names within an encoder layer, as checkpoints name them: the
// query/key/value projection (its three tensors' prefix), the attention output, the
// intermediate and the output.
const QKV: &str = "attention.self";
const ATTN_OUT: &str = "attention.output.dense";
const INTERMEDIATE: &str = "intermediate.dense";
const OUTPUT: &str = "output.dense";

#[derive(Clone)]
struct Layer {
    /// Query, key and value fused into one `[hidden, 3 * hidden]` projection.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

impl Layer {
    /// The dense layers with their names within the layer (as checkpoints name them).
    fn denses_mut(&mut self) -> [(&'static str, &mut Dense); 4] {
        [
            (QKV, &mut self.qkv),
            (ATTN_OUT, &mut self.attn_out),
            (INTERMEDIATE, &mut self.intermediate),
            (OUTPUT, &mut self.output),
        ]
    }
}

/// The sequence-classification head: `out(tanh(dense(first token)))`. In
/// BertForSequenceClassification `dense` is the pooler and `out` the classifier;
/// in RobertaForSequenceClassification they are `classifier.dense` and `classifier.out_proj`.
#[derive(Clone)]
struct Classifier {
    dense: Dense,
    out: Dense,
    num_labels: usize,
}

/// What the loaded weights are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Hidden states only (an embedder; an unused pooler, and the language-model
    /// head of a masked-LM checkpoint, are accepted).
    None,
    /// Pooler and classifier (a cross-encoder).
    Classifier,
}

/// One batch, padded on the right to its longest input.
pub struct Batch<'a> {
    /// Token ids of each input.
    pub ids: Vec<&'a [u32]>,
    /// Segment ids of each input (empty: all zeros).
    pub type_ids: Vec<&'a [u32]>,
}

impl Batch<'_> {
    /// Length of the longest input.
    pub fn max_len(&self) -> usize {
        self.ids.iter().map(|i| i.len()).max().unwrap_or(0)
    }
}

/// A BERT encoder whose weights live on one Burn device.
#[derive(Clone)]
pub struct BertEncoder {
    config: BertConfig,
    device: Device,
    word: Tensor<2>,
    position: Tensor<2>,
    token_type: Tensor<2>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    classifier: Option<Classifier>,
    /// CPU path: packed hidden states and fused host kernels.
    packed: bool,
}

/// Takes tensors from the store, creating them on the device; missing or
/// mis-shaped ones are recorded by the store and come back as `None`.
struct Loader<'a> {
    store: &'a mut WeightStore,
    device: &'a Device,
    prefix: &'static str,
}

impl Loader<'_> {
    fn vector(&mut self, name: &str, len: usize) -> Option<(Tensor<1>, Vec<f32>)> {
        let t = self.store.take(&format!("{}{name}", self.prefix), &[len])?;
        let host = t.clone();
        Some((
            Tensor::from_data(TensorData::new(t, [len]), self.device),
            host,
        ))
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Option<Tensor<2>> {
        let t = self
            .store
            .take(&format!("{}{name}", self.prefix), &[rows, cols])?;
        Some(Tensor::from_data(
            TensorData::new(t, [rows, cols]),
            self.device,
        ))
    }

    /// A PyTorch `[out, in]` weight, transposed to `[in, out]`, as raw values.
    fn weight_t(&mut self, name: &str, out: usize, inp: usize) -> Option<Vec<f32>> {
        let t = self
            .store
            .take(&format!("{}{name}", self.prefix), &[out, inp])?;
        let mut data = vec![0.0f32; out * inp];
        for (o, row) in t.chunks_exact(inp).enumerate() {
            for (i, v) in row.iter().enumerate() {
                data[i * out + o] = *v;
            }
        }
        Some(data)
    }

    fn dense(&mut self, name: &str, out: usize, inp: usize) -> Option<Dense> {
        let w = self.weight_t(&format!("{name}.weight"), out, inp);
        let (bias, bias_host) = self.vector(&format!("{name}.bias"), out)?;
        Some(Dense {
            weight: Weight::F32(Tensor::from_data(
                TensorData::new(w?, [inp, out]),
                self.device,
            )),
            bias,
            bias_host,
        })
    }

    fn norm(&mut self, name: &str, len: usize) -> Option<Norm> {
        let gamma = self.vector(&format!("{name}.weight"), len);
        let (beta, beta_host) = self.vector(&format!("{name}.bias"), len)?;
        let (gamma, gamma_host) = gamma?;
        Some(Norm {
            gamma,
            beta,
            gamma_host,
            beta_host,
        })
    }

    /// Query, key and value of one layer as one `[h, 3h]` projection.
    fn qkv(&mut self, name: &str, h: usize) -> Option<Dense> {
        let parts = ["query", "key", "value"].map(|p| {
            (
                self.weight_t(&format!("{name}.{p}.weight"), h, h),
                self.store
                    .take(&format!("{}{name}.{p}.bias", self.prefix), &[h]),
            )
        });
        let mut weight = vec![0.0f32; h * 3 * h];
        let mut bias = Vec::with_capacity(3 * h);
        for (j, (w, b)) in parts.into_iter().enumerate() {
            let (w, b) = (w?, b?);
            for i in 0..h {
                weight[i * 3 * h + j * h..i * 3 * h + (j + 1) * h]
                    .copy_from_slice(&w[i * h..(i + 1) * h]);
            }
            bias.extend_from_slice(&b);
        }
        Some(Dense {
            weight: Weight::F32(Tensor::from_data(
                TensorData::new(weight, [h, 3 * h]),
                self.device,
            )),
            bias: Tensor::from_data(TensorData::new(bias.clone(), [3 * h]), self.device),
            bias_host: bias,
        })
    }
}

fn norm(x: Tensor<2>, n: &Norm, eps: f64) -> Tensor<2> {
    layer_norm(x, n.gamma.clone(), Some(n.beta.clone()), eps)
}

fn internal(e: impl std::fmt::Debug) -> BackendError {
    BackendError::internal(format!("reading back a result: {e:?}"))
}

impl BertEncoder {
    /// Builds the encoder from `store` on `device`. Both the unprefixed layout
    /// (`embeddings.…`, as sentence-transformers saves BertModel / RobertaModel) and
    /// the prefixed one of task checkpoints (`bert.…`, `roberta.…`) are read. Every
    /// problem with the weights is reported at once by [`WeightStore::finish`].
    /// `packed` selects the CPU path (packed hidden states, fused host kernels),
    /// which needs a backend whose tensors reach the host without a copy (`flex`).
    /// `int8` quantizes the encoder layers' attention output, intermediate and output
    /// matmuls to int8 ([`Weight::Int8`], three quarters of the encoder's
    /// multiply-adds); the q/k/v projection, embeddings, attention, LayerNorm and
    /// the classification head stay f32.
    pub fn load(
        config: &BertConfig,
        mut store: WeightStore,
        head: Head,
        device: &Device,
        dir: &Path,
        packed: bool,
        int8: bool,
    ) -> Result<Self, BackendError> {
        let c = config;
        let prefix = if store.names().any(|n| n.starts_with(c.family.prefix())) {
            c.family.prefix()
        } else {
            ""
        };
        let h = c.hidden_size;
        let (dense_name, out_name) = match c.family {
            Family::Bert => ("pooler.dense", "classifier"),
            Family::Roberta => ("classifier.dense", "classifier.out_proj"),
        };
        let num_labels = match head {
            Head::None => 0,
            Head::Classifier => match (c.num_labels, store.shape(&format!("{out_name}.weight"))) {
                (Some(n), _) => n,
                (None, Some([n, _])) => *n,
                _ => 1,
            },
        };
        // Parts of the checkpoint this head does not use: the pooler (RoBERTa's
        // classifier has none), and the language-model head of a masked-LM checkpoint.
        let unused: Vec<String> = store
            .names()
            .filter(|n| {
                let pooler = n.starts_with(&format!("{prefix}pooler."));
                let lm_head = n.starts_with("lm_head.") || n.starts_with("cls.");
                match (head, c.family) {
                    (Head::None, _) => pooler || lm_head,
                    (Head::Classifier, Family::Roberta) => pooler,
                    (Head::Classifier, Family::Bert) => false,
                }
            })
            .map(str::to_string)
            .collect();
        for name in &unused {
            store.ignore(name);
        }
        let mut l = Loader {
            store: &mut store,
            device,
            prefix,
        };
        let word = l.matrix("embeddings.word_embeddings.weight", c.vocab_size, h);
        let position = l.matrix(
            "embeddings.position_embeddings.weight",
            c.max_position_embeddings,
            h,
        );
        let token_type = l.matrix(
            "embeddings.token_type_embeddings.weight",
            c.type_vocab_size,
            h,
        );
        let embed_norm = l.norm("embeddings.LayerNorm", h);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        let mut complete = true;
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let qkv = l.qkv(&format!("{p}.{QKV}"), h);
            let attn_out = l.dense(&format!("{p}.{ATTN_OUT}"), h, h);
            let attn_norm = l.norm(&format!("{p}.attention.output.LayerNorm"), h);
            let intermediate = l.dense(&format!("{p}.{INTERMEDIATE}"), c.intermediate_size, h);
            let output = l.dense(&format!("{p}.{OUTPUT}"), h, c.intermediate_size);
            let output_norm = l.norm(&format!("{p}.output.LayerNorm"), h);
            match (qkv, attn_out, attn_norm, intermediate, output, output_norm) {
                (
                    Some(qkv),
                    Some(attn_out),
                    Some(attn_norm),
                    Some(intermediate),
                    Some(output),
                    Some(output_norm),
                ) => layers.push(Layer {
                    qkv,
                    attn_out,
                    attn_norm,
                    intermediate,
                    output,
                    output_norm,
                }),
                _ => complete = false,
            }
        }
        let classifier = match head {
            Head::None => None,
            Head::Classifier => {
                // BERT's pooler is part of the encoder (under `bert.`); RoBERTa's
                // head and BERT's classifier sit beside the encoder, never under it.
                let dense = match c.family {
                    Family::Bert => l.dense(dense_name, h, h),
                    Family::Roberta => None,
                };
                let mut top = Loader {
                    store: l.store,
                    device,
                    prefix: "",
                };
                let dense = match c.family {
                    Family::Bert => dense,
                    Family::Roberta => top.dense(dense_name, h, h),
                };
                let out = top.dense(out_name, num_labels, h);
                match (dense, out) {
                    (Some(dense), Some(out)) => Some(Classifier {
                        dense,
                        out,
                        num_labels,
                    }),
                    _ => {
                        complete = false;
                        None
                    }
                }
            }
        };
        for buffer in ["embeddings.position_ids", "embeddings.token_type_ids"] {
            store.ignore(&format!("{prefix}{buffer}"));
        }
        store.finish(dir)?;
        // int8: every dense layer but the query/key/value projection, which stays f32:
        // errors in q and k are amplified by the softmax over their products. With all
        // four in int8, all-MiniLM-L6-v2's reference sentences fall to cosine 0.9983;
        // with this one in f32 they keep ≥ 0.9993 (tiny-bert ≥ 0.9998).
        // Packed: the host path multiplies by gllm-kernels, so the f32 weights left are
        // repacked (and the device copies dropped).
        if int8 || packed {
            for (i, layer) in layers.iter_mut().enumerate() {
                for (part, dense) in layer.denses_mut() {
                    let name = format!("encoder.layer.{i}.{part}");
                    if int8 && part != QKV {
                        *dense = dense.to_int8(&name)?;
                    }
                    if packed {
                        *dense = dense.to_packed(&name)?;
                    }
                }
            }
        }
        match (word, position, token_type, embed_norm) {
            (Some(word), Some(position), Some(token_type), Some(embed_norm)) if complete => {
                Ok(Self {
                    config: config.clone(),
                    device: device.clone(),
                    word,
                    position,
                    token_type,
                    embed_norm,
                    layers,
                    classifier,
                    packed,
                })
            }
            _ => Err(BackendError::internal(format!(
                "{}: weights are incomplete but no problem was recorded",
                dir.display()
            ))),
        }
    }

    /// The configuration the encoder was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Labels of the classifier head (0 without one).
    pub fn num_labels(&self) -> usize {
        self.classifier.as_ref().map_or(0, |c| c.num_labels)
    }

    /// Runs the encoder on a batch: the last hidden state `[batch * max_len, hidden]`
    /// on the device (rows of padding included).
    fn encode(&self, batch: &Batch) -> Result<Tensor<2>, BackendError> {
        let c = &self.config;
        let (b, s, h) = (batch.ids.len(), batch.max_len(), c.hidden_size);
        let (heads, hd) = (c.num_attention_heads, c.head_dim());
        let first = c.first_position() as i64;
        let n = b * s;
        let mut ids = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for (row, tt) in batch.ids.iter().zip(&batch.type_ids) {
            ids.extend(row.iter().map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(c.pad_token_id as i64, s - row.len()));
            if tt.is_empty() {
                types.extend(std::iter::repeat_n(0i64, s));
            } else {
                types.extend(tt.iter().map(|&t| t as i64));
                types.extend(std::iter::repeat_n(0i64, s - tt.len()));
            }
            positions.extend(first..first + s as i64);
        }
        let index =
            |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &self.device);
        let x = self.word.clone().select(0, index(ids))
            + self.token_type.clone().select(0, index(types));
        let x = x + self.position.clone().select(0, index(positions));
        let mut x = norm(x, &self.embed_norm, c.layer_norm_eps);

        let mask = attention_mask(batch, heads, &self.device);
        let options = AttentionModuleOptions {
            scale: Some(1.0 / (hd as f64).sqrt()),
            softcap: None,
            is_causal: false,
        };
        let split = |t: Tensor<2>| t.reshape([b, s, heads, hd]).swap_dims(1, 2);
        for layer in &self.layers {
            let qkv = layer.qkv.forward(x.clone())?;
            let q = split(qkv.clone().narrow(1, 0, h));
            let k = split(qkv.clone().narrow(1, h, h));
            let v = split(qkv.narrow(1, 2 * h, h));
            let ctx = attention(q, k, v, mask.clone(), None, options);
            let ctx = ctx.swap_dims(1, 2).reshape([n, h]);
            let a = norm(
                layer.attn_out.forward(ctx)? + x,
                &layer.attn_norm,
                c.layer_norm_eps,
            );
            let i = layer.intermediate.forward(a.clone())?;
            let i = match c.hidden_act {
                Activation::Gelu => gelu(i),
                Activation::GeluTanh => gelu_approximate(i),
                Activation::Relu => relu(i),
            };
            x = norm(
                layer.output.forward(i)? + a,
                &layer.output_norm,
                c.layer_norm_eps,
            );
        }
        Ok(x)
    }

    /// Runs the encoder on a batch on the CPU path: hidden states stay packed
    /// (`[tokens, hidden]`, real tokens only) and the element-wise work runs
    /// in the fused host kernels of [`crate::cpu`] and attention in
    /// [`crate::attention`]; Burn does the matmuls.
    fn encode_packed(&self, batch: &Batch) -> Result<Tensor<2>, BackendError> {
        let c = &self.config;
        let h = c.hidden_size;
        let (heads, hd) = (c.num_attention_heads, c.head_dim());
        let eps = c.layer_norm_eps as f32;
        let first = c.first_position() as i64;
        let lens: Vec<usize> = batch.ids.iter().map(|r| r.len()).collect();
        let starts: Vec<usize> = lens
            .iter()
            .scan(0, |acc, l| {
                let start = *acc;
                *acc += l;
                Some(start)
            })
            .collect();
        let n: usize = lens.iter().sum();
        let packing = cpu::Packing {
            lens: &lens,
            starts: &starts,
        };
        let mut ids = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for (row, tt) in batch.ids.iter().zip(&batch.type_ids) {
            ids.extend(row.iter().map(|&t| t as i64));
            if tt.is_empty() {
                types.extend(std::iter::repeat_n(0i64, row.len()));
            } else {
                types.extend(tt.iter().map(|&t| t as i64));
            }
            positions.extend(first..first + row.len() as i64);
        }
        let index =
            |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &self.device);
        let x = self.word.clone().select(0, index(ids))
            + self.token_type.clone().select(0, index(types));
        let x = x + self.position.clone().select(0, index(positions));
        let mut x = norm(x, &self.embed_norm, c.layer_norm_eps);

        // Buffers go to the host and back as `TensorData`, which `flex`
        // moves without copying (a `Vec` would need a copy to change alignment).
        let back = |d: TensorData| Tensor::<2>::from_data(d, &self.device);
        for layer in &self.layers {
            let qkv = layer.qkv.product(x.clone())?;
            let ctx = attention::packed_attention(
                qkv.as_slice::<f32>().map_err(internal)?,
                &layer.qkv.bias_host,
                &packing,
                heads,
                hd,
            );
            drop(qkv);
            let ctx = Tensor::<2>::from_data(TensorData::new(ctx, [n, h]), &self.device);

            let mut a = layer.attn_out.product(ctx)?;
            let residual = data(x)?;
            cpu::bias_residual_norm(
                a.as_mut_slice::<f32>().map_err(internal)?,
                &layer.attn_out.bias_host,
                residual.as_slice::<f32>().map_err(internal)?,
                &layer.attn_norm.gamma_host,
                &layer.attn_norm.beta_host,
                eps,
            );
            drop(residual);
            let a = back(a);

            let mut i = layer.intermediate.product(a.clone())?;
            cpu::bias_activation(
                i.as_mut_slice::<f32>().map_err(internal)?,
                &layer.intermediate.bias_host,
                c.hidden_act,
            );
            let i = back(i);

            let mut o = layer.output.product(i)?;
            let residual = data(a)?;
            cpu::bias_residual_norm(
                o.as_mut_slice::<f32>().map_err(internal)?,
                &layer.output.bias_host,
                residual.as_slice::<f32>().map_err(internal)?,
                &layer.output_norm.gamma_host,
                &layer.output_norm.beta_host,
                eps,
            );
            x = back(o);
        }
        Ok(x)
    }

    /// The last hidden state of a batch, read back, each input's rows apart from padding.
    pub fn hidden_states(&self, batch: &Batch) -> Result<Hidden, BackendError> {
        let lens: Vec<usize> = batch.ids.iter().map(|r| r.len()).collect();
        let (data, starts) = if self.packed {
            let data = host(self.encode_packed(batch)?)?;
            let starts = lens
                .iter()
                .scan(0, |acc, l| {
                    let start = *acc;
                    *acc += l;
                    Some(start)
                })
                .collect();
            (data, starts)
        } else {
            let s = batch.max_len();
            (
                host(self.encode(batch)?)?,
                (0..lens.len()).map(|i| i * s).collect(),
            )
        };
        Ok(Hidden {
            data,
            starts,
            lens,
            hidden: self.config.hidden_size,
        })
    }

    /// Raw classifier logits of a batch: `[batch, num_labels]` row-major.
    pub fn logits(&self, batch: &Batch) -> Result<Vec<f32>, BackendError> {
        let Some(head) = &self.classifier else {
            return Err(BackendError::unsupported(
                "this model has no classification head",
            ));
        };
        let (b, s, h) = (batch.ids.len(), batch.max_len(), self.config.hidden_size);
        let first = if self.packed {
            let states = self.hidden_states(batch)?;
            let cls: Vec<f32> = (0..b)
                .flat_map(|i| states.rows(i)[..h].iter().copied())
                .collect();
            Tensor::<2>::from_data(TensorData::new(cls, [b, h]), &self.device)
        } else {
            let x = self.encode(batch)?.reshape([b, s, h]);
            x.narrow(1, 0, 1).reshape([b, h])
        };
        let pooled = head.dense.forward(first)?.tanh();
        host(head.out.forward(pooled)?)
    }
}

/// Hidden states read back from the device.
pub struct Hidden {
    data: Vec<f32>,
    starts: Vec<usize>,
    lens: Vec<usize>,
    hidden: usize,
}

impl Hidden {
    /// The rows (`[tokens, hidden]`, row-major) of input `i` of the batch.
    pub fn rows(&self, i: usize) -> &[f32] {
        let h = self.hidden;
        &self.data[self.starts[i] * h..(self.starts[i] + self.lens[i]) * h]
    }
}

/// The attention mask of a padded batch, `[batch, heads, max_len, max_len]`
/// (true = masked: the padding keys), or none when nothing is padded.
fn attention_mask(batch: &Batch, heads: usize, device: &Device) -> Option<Tensor<4, Bool>> {
    let (b, s) = (batch.ids.len(), batch.max_len());
    if batch.ids.iter().all(|r| r.len() == s) {
        return None;
    }
    let mut m = Vec::with_capacity(b * s * s);
    for row in &batch.ids {
        for _ in 0..s {
            m.extend((0..s).map(|j| j >= row.len()));
        }
    }
    let m = Tensor::<4, Bool>::from_data(TensorData::new(m, [b, 1, s, s]), device);
    Some(m.expand([b, heads, s, s]))
}

/// A tensor's values on the host (without a copy where the backend allows).
fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, BackendError> {
    t.try_into_data()
        .map_err(internal)?
        .try_into_vec::<f32>()
        .map_err(internal)
}

/// `x · Wᵀ` by a host kernel `f(x, m, out)` for a weight of `rows` outputs and `cols`
/// inputs: [m, rows].
fn host_product(
    x: Tensor<2>,
    rows: usize,
    cols: usize,
    f: impl FnOnce(&[f32], usize, &mut [f32]),
) -> Result<TensorData, BackendError> {
    let x = data(x)?;
    let xs = x.as_slice::<f32>().map_err(internal)?;
    if cols == 0 || !xs.len().is_multiple_of(cols) {
        return Err(BackendError::internal(format!(
            "matmul: {} inputs for rows of width {cols}",
            xs.len()
        )));
    }
    let m = xs.len() / cols;
    let mut out = vec![0f32; m * rows];
    f(xs, m, &mut out);
    Ok(TensorData::new(out, [m, rows]))
}

/// A tensor's data on the host (moved, not copied, where the backend allows).
fn data<const D: usize>(t: Tensor<D>) -> Result<TensorData, BackendError> {
    t.try_into_data().map_err(internal)
}

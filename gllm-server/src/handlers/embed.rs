//! `POST /v1/embeddings` (OpenAI) and `POST /embed` (TEI).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use base64::Engine;
use gllm_runtime::api::EncodedInput;
use gllm_runtime::{Embedding, RuntimeError};
use tokio::sync::oneshot;

use super::{ApiJson, blocking, check, json_for};
use crate::batching::EmbedJob;
use crate::error::ApiError;
use crate::state::{AppState, EmbedModel};
use crate::types::embeddings::*;

/// Most inputs in one request (OpenAI's limit).
pub(crate) const MAX_INPUTS: usize = 2048;

/// Texts or token ids, as the request gave them.
enum Inputs {
    Texts(Vec<String>),
    Ids(Vec<Vec<u32>>),
}

impl Inputs {
    fn len(&self) -> usize {
        match self {
            Self::Texts(t) => t.len(),
            Self::Ids(t) => t.len(),
        }
    }
}

/// Tokenizes (off the async threads), queues one job and waits for its rows.
async fn embed(
    model: &EmbedModel,
    inputs: Inputs,
    param: &str,
    prompt_name: Option<String>,
) -> Result<Vec<Embedding>, ApiError> {
    check(
        inputs.len() > 0,
        param,
        format!("`{param}` must not be empty"),
    )?;
    check(
        inputs.len() <= MAX_INPUTS,
        param,
        format!("at most {MAX_INPUTS} inputs per request"),
    )?;
    let encoded: Vec<EncodedInput> = match inputs {
        Inputs::Texts(texts) => {
            let handle = model.handle.clone();
            blocking(move || {
                handle
                    .tokenize_all(&texts, prompt_name.as_deref())
                    .map_err(|e| match e {
                        RuntimeError::InvalidRequest(m) => {
                            ApiError::invalid_param("prompt_name", m)
                        }
                        other => ApiError::from(other),
                    })
            })
            .await?
        }
        Inputs::Ids(_) if prompt_name.is_some() => {
            return Err(ApiError::invalid_param(
                "prompt_name",
                "`prompt_name` applies to text inputs, not to token ids",
            ));
        }
        Inputs::Ids(lists) => {
            if lists.iter().any(Vec::is_empty) {
                return Err(ApiError::invalid_param(
                    param,
                    "a token list must not be empty",
                ));
            }
            lists.into_iter().map(EncodedInput::new).collect()
        }
    };
    let (reply, rx) = oneshot::channel();
    model.queue.submit(EmbedJob {
        inputs: encoded,
        reply,
    })?;
    rx.await
        .map_err(|_| ApiError::unavailable("the embedding worker stopped before answering"))?
}

fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Keeps the first `dims` values; renormalizes when the model's vectors are normalized.
fn truncate_dims(v: &mut Vec<f32>, dims: usize) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.truncate(dims);
    if (norm - 1.0).abs() < 1e-3 {
        l2_normalize(v);
    }
}

/// Checks `dimensions` against the model's embedding width before anything is computed
/// (and against the rows' width for a backend that reports none).
fn check_dims(
    dims: Option<usize>,
    model: &EmbedModel,
    rows: Option<&[Embedding]>,
) -> Result<(), ApiError> {
    let reported = model.handle.active().info.output_dim;
    let full = match rows {
        None if reported == 0 => return Ok(()),
        None => reported,
        Some(_) if reported != 0 => return Ok(()),
        Some(rows) => rows.first().map(|r| r.embedding.len()).unwrap_or(0),
    };
    if let Some(d) = dims {
        check(
            d >= 1 && d <= full,
            "dimensions",
            format!("`dimensions` must be between 1 and {full}, got {d}"),
        )?;
    }
    Ok(())
}

/// Little-endian f32 bytes in standard base64, as OpenAI's `encoding_format: base64`.
pub(crate) fn to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) async fn openai(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let model = state.embedder(req.model.as_deref())?;
    let id = model.id.as_str();
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("`encoding_format` must be `float` or `base64`, got `{other}`"),
            )
            .for_model(id));
        }
    };
    let inputs = match req.input {
        EmbedInput::One(t) => Inputs::Texts(vec![t]),
        EmbedInput::Many(t) => Inputs::Texts(t),
        EmbedInput::Tokens(ids) => Inputs::Ids(vec![ids]),
        EmbedInput::TokenLists(lists) => Inputs::Ids(lists),
    };
    check_dims(req.dimensions, model, None).map_err(|e| e.for_model(id))?;
    let mut rows = embed(model, inputs, "input", req.prompt_name)
        .await
        .map_err(|e| e.for_model(id))?;
    check_dims(req.dimensions, model, Some(&rows)).map_err(|e| e.for_model(id))?;
    let tokens: usize = rows.iter().map(|r| r.tokens).sum();
    state.metrics.embedded(id, rows.len());
    let data: Vec<EmbeddingData> = rows
        .iter_mut()
        .enumerate()
        .map(|(index, row)| {
            if let Some(d) = req.dimensions {
                truncate_dims(&mut row.embedding, d);
            }
            let embedding = if base64 {
                EmbeddingValue::Base64(to_base64(&row.embedding))
            } else {
                EmbeddingValue::Floats(std::mem::take(&mut row.embedding))
            };
            EmbeddingData {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Ok(json_for(
        id,
        EmbeddingsResponse {
            object: "list",
            data,
            model: id.to_string(),
            usage: EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        },
    ))
}

/// TEI's `/embed`: `[[f32]]`. `normalize` (default true) L2-normalizes; with `false`
/// the vectors are what the model's own pipeline gives (already normalized when the
/// model has a Normalize module). Inputs are always truncated to the model's length.
pub(crate) async fn tei(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TeiEmbedRequest>,
) -> Result<Response, ApiError> {
    let model = state.embedder(req.model.as_deref())?;
    let id = model.id.as_str();
    let texts = match req.inputs {
        TeiInputs::One(t) => vec![t],
        TeiInputs::Many(t) => t,
    };
    check_dims(req.dimensions, model, None).map_err(|e| e.for_model(id))?;
    let mut rows = embed(model, Inputs::Texts(texts), "inputs", req.prompt_name)
        .await
        .map_err(|e| e.for_model(id))?;
    check_dims(req.dimensions, model, Some(&rows)).map_err(|e| e.for_model(id))?;
    state.metrics.embedded(id, rows.len());
    let normalize = req.normalize.unwrap_or(true);
    let out: Vec<Vec<f32>> = rows
        .iter_mut()
        .map(|row| {
            let mut v = std::mem::take(&mut row.embedding);
            if let Some(d) = req.dimensions {
                truncate_dims(&mut v, d);
            }
            if normalize {
                l2_normalize(&mut v);
            }
            v
        })
        .collect();
    Ok(json_for(id, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        // 1.0f32 = 00 00 80 3f; -2.0f32 = 00 00 00 c0
        assert_eq!(to_base64(&[1.0, -2.0]), "AACAPwAAAMA=");
    }

    #[test]
    fn dimensions_truncate_then_renormalize() {
        let mut v = vec![0.6, 0.0, 0.8];
        truncate_dims(&mut v, 2);
        assert_eq!(v, vec![1.0, 0.0]);
        // Not normalized to begin with: truncated only.
        let mut w = vec![3.0, 4.0, 5.0];
        truncate_dims(&mut w, 2);
        assert_eq!(w, vec![3.0, 4.0]);
    }
}

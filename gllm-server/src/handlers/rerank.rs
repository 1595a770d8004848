//! `POST /v1/rerank` (Cohere/Jina shape) and `POST /rerank` (TEI).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use tokio::sync::oneshot;

use super::{ApiJson, blocking, check, json_for};
use crate::batching::RerankJob;
use crate::error::ApiError;
use crate::state::{AppState, RerankModel};
use crate::types::rerank::*;

/// Most documents in one request.
pub(crate) const MAX_DOCUMENTS: usize = 4096;

/// `(logit, score)` per document in request order, and the tokens of every pair.
async fn score(
    model: &RerankModel,
    query: String,
    documents: Vec<String>,
    param: &str,
) -> Result<(Vec<(f32, f32)>, usize), ApiError> {
    check(
        documents.len() <= MAX_DOCUMENTS,
        param,
        format!("at most {MAX_DOCUMENTS} documents per request"),
    )?;
    if documents.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let handle = model.handle.clone();
    // The query is tokenized once, and over-long texts are cut before tokenizing.
    let pairs = blocking(move || {
        handle
            .encode_pairs(&query, &documents)
            .map_err(ApiError::from)
    })
    .await?;
    let tokens = pairs.iter().map(|p| p.ids.len()).sum();
    let longest = pairs.iter().map(|p| p.ids.len()).max().unwrap_or(0);
    let (reply, rx) = oneshot::channel();
    model.queue.submit(RerankJob {
        pairs,
        longest,
        reply,
    })?;
    let rows = rx
        .await
        .map_err(|_| ApiError::unavailable("the rerank worker stopped before answering"))??;
    Ok((rows, tokens))
}

/// Indices sorted by score, best first (ties: request order).
fn ranking(rows: &[(f32, f32)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rows[b].1.total_cmp(&rows[a].1).then(a.cmp(&b)));
    order
}

/// `results: [{index, relevance_score, document?: {text}}]`, best first, cut to `top_n`;
/// `relevance_score` is the activated score (sigmoid for a one-label cross-encoder).
pub(crate) async fn openai(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Response, ApiError> {
    let model = state.reranker(req.model.as_deref())?;
    let id = model.id.as_str();
    let documents: Vec<String> = req
        .documents
        .into_iter()
        .map(|d| match d {
            Document::Text(t) | Document::Object { text: t } => t,
        })
        .collect();
    let (rows, tokens) = score(model, req.query, documents.clone(), "documents")
        .await
        .map_err(|e| e.for_model(id))?;
    state.metrics.reranked(id, rows.len());
    let return_documents = req.return_documents.unwrap_or(false);
    let top_n = req.top_n.unwrap_or(rows.len());
    let results: Vec<RerankResult> = ranking(&rows)
        .into_iter()
        .take(top_n)
        .map(|i| RerankResult {
            index: i,
            relevance_score: rows[i].1,
            document: return_documents.then(|| DocumentText {
                text: documents[i].clone(),
            }),
        })
        .collect();
    Ok(json_for(
        id,
        RerankResponse {
            id: state.new_id("rerank"),
            model: id.to_string(),
            results,
            usage: RerankUsage {
                total_tokens: tokens,
            },
        },
    ))
}

/// TEI: `[{index, score, text?}]` best first; `score` is the activated score, or the
/// raw logit with `raw_scores: true`.
pub(crate) async fn tei(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TeiRerankRequest>,
) -> Result<Response, ApiError> {
    let model = state.reranker(req.model.as_deref())?;
    let id = model.id.as_str();
    let texts = req.texts;
    let (rows, _) = score(model, req.query, texts.clone(), "texts")
        .await
        .map_err(|e| e.for_model(id))?;
    state.metrics.reranked(id, rows.len());
    let raw = req.raw_scores.unwrap_or(false);
    let return_text = req.return_text.unwrap_or(false);
    let results: Vec<TeiRank> = ranking(&rows)
        .into_iter()
        .map(|i| TeiRank {
            index: i,
            score: if raw { rows[i].0 } else { rows[i].1 },
            text: return_text.then(|| texts[i].clone()),
        })
        .collect();
    Ok(json_for(id, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_is_by_score_then_index() {
        let rows = [(0.1, 0.5), (0.3, 0.7), (0.1, 0.5), (-1.0, 0.2)];
        assert_eq!(ranking(&rows), vec![1, 0, 2, 3]);
    }
}

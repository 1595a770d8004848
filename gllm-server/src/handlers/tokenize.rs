//! `POST /tokenize` and `POST /detokenize` for a generation model (vLLM's and
//! llama-server's shapes, see [`crate::types::tokenize`]).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::generate::messages;
use super::tools::{Tools, template_kwargs};
use super::{ApiJson, blocking, json_for};
use crate::error::ApiError;
use crate::state::AppState;
use crate::types::tokenize::*;

pub(crate) async fn tokenize(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Response, ApiError> {
    let model = state.generator(req.model.as_deref())?;
    let id = model.id.clone();
    let handle = model.handle.clone();
    let max_model_len = handle.active().info.max_positions;
    let run = async {
        let tokens = match (req.prompt.or(req.content), req.messages) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_param(
                    "messages",
                    "give either a text (`prompt` or `content`) or `messages`, not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::invalid_param(
                    "prompt",
                    "give a text (`prompt` or `content`) or `messages`",
                ));
            }
            (Some(text), None) => {
                let special = req.add_special_tokens.or(req.add_special).unwrap_or(true);
                blocking(move || handle.tokenize(&text, special).map_err(ApiError::from)).await?
            }
            (None, Some(m)) => {
                let messages = messages(m)?;
                let tools = Tools::read(req.tools, None, None)?;
                let kwargs = template_kwargs(req.chat_template_kwargs, &tools)?;
                let open = req.add_generation_prompt.unwrap_or(true);
                blocking(move || {
                    let text = handle.render_chat_with(&messages, open, &kwargs)?;
                    Ok(handle.tokenize(&text, false)?)
                })
                .await?
            }
        };
        Ok(json_for(
            &id,
            TokenizeResponse {
                count: tokens.len(),
                tokens,
                max_model_len,
            },
        ))
    };
    run.await.map_err(|e: ApiError| e.for_model(&id))
}

pub(crate) async fn detokenize(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Response, ApiError> {
    let model = state.generator(req.model.as_deref())?;
    let id = model.id.clone();
    let handle = model.handle.clone();
    let vocab = handle.active().info.vocab_size;
    if let Some(bad) = req.tokens.iter().find(|t| **t as usize >= vocab) {
        return Err(ApiError::invalid_param(
            "tokens",
            format!("token id {bad} is outside the model's vocabulary ({vocab})"),
        )
        .for_model(&id));
    }
    let tokens = req.tokens;
    let text = blocking(move || handle.decode(&tokens, false).map_err(ApiError::from))
        .await
        .map_err(|e| e.for_model(&id))?;
    Ok(json_for(
        &id,
        DetokenizeResponse {
            prompt: text.clone(),
            content: text,
        },
    ))
}

//! `GET /health`, `GET /metrics`, `GET /v1/models`, `GET /v1/models/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::{AppState, Served};
use crate::types::models::*;

/// The readiness probe: 200 once every model is loaded, 503 before.
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let models = state.models()?;
    let models = models
        .iter()
        .map(|m| {
            let a = m.active();
            HealthModel {
                id: m.id().to_string(),
                task: m.task().as_str(),
                backend: a.backend,
                device: a.device.to_string(),
            }
        })
        .collect();
    Ok(Json(Health {
        status: "ok",
        models,
    })
    .into_response())
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.render_metrics(),
    )
        .into_response()
}

fn describe(state: &AppState, m: &Served) -> ModelCard {
    let a = m.active();
    ModelCard {
        id: m.id().to_string(),
        object: "model",
        created: state.started,
        owned_by: "gllm",
        task: m.task().as_str(),
        backend: a.backend,
        device: a.device.to_string(),
    }
}

pub(crate) async fn models(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let data = state
        .models()?
        .iter()
        .map(|m| describe(&state, m))
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    })
    .into_response())
}

pub(crate) async fn model(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let models = state.models()?;
    match models.iter().find(|m| m.id() == id) {
        Some(m) => Ok(Json(describe(&state, m)).into_response()),
        None => {
            let known: Vec<&str> = models.iter().map(Served::id).collect();
            Err(ApiError::model_not_found(&id, &known.join(", ")))
        }
    }
}

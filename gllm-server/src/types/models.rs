//! `GET /v1/models`, `GET /v1/models/{id}` (OpenAI's model objects, with gllm's task,
//! backend and device) and `GET /health`.

use serde::Serialize;

/// One served model.
#[derive(Serialize)]
pub(crate) struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub task: &'static str,
    pub backend: String,
    pub device: String,
}

#[derive(Serialize)]
pub(crate) struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

/// A model as `/health` lists it.
#[derive(Serialize)]
pub(crate) struct HealthModel {
    pub id: String,
    pub task: &'static str,
    pub backend: String,
    pub device: String,
}

#[derive(Serialize)]
pub(crate) struct Health {
    pub status: &'static str,
    pub models: Vec<HealthModel>,
}

//! Request and response bodies as serde types, one module per API surface (OpenAI's
//! chat and text completions, llama-server's and vLLM's tokenize endpoints). The
//! handlers read and write these, never untyped JSON.

pub(crate) mod completions;
pub(crate) mod tokenize;

//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use gllm_runtime::{SamplingOverrides, SamplingParams};

/// gllm: local text embeddings, reranking and text generation, in pure Rust.
#[derive(Parser, Debug)]
#[command(name = "gllm", version, about)]
pub struct Cli {
    /// The model manifest [default: ./models.toml when it exists; without one, name
    /// models by location: --model DIR|FILE.gguf|hf:org/name].
    #[arg(long, global = true, env = "GLLM_MANIFEST")]
    pub manifest: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the manifest's models, where each would load, and why other candidates are skipped.
    Models {
        /// Also show how this model location would load (a model directory, a .gguf
        /// file or hf:org/name[:file]; repeatable).
        #[arg(long)]
        model: Vec<String>,
        /// The task of the --model locations (read from their files when left out).
        #[arg(long)]
        task: Option<TaskArg>,
    },
    /// Embed texts.
    Embed {
        /// Model id from the manifest, or a model directory, .gguf file or
        /// hf:org/name[:file].
        #[arg(long)]
        model: String,
        /// Print JSON: {"model", "data": [{"index", "embedding"}], "usage": {"prompt_tokens"}}.
        #[arg(long)]
        json: bool,
        /// Prepend the model's prompt of this name (from config_sentence_transformers.json,
        /// e.g. `query` for Qwen3-Embedding); default: the model's default prompt, if any.
        #[arg(long)]
        prompt_name: Option<String>,
        /// Texts to embed.
        texts: Vec<String>,
    },
    /// Score documents against a query with a cross-encoder, best first.
    Rerank {
        /// Model id from the manifest, or a model directory, .gguf file or
        /// hf:org/name[:file].
        #[arg(long)]
        model: String,
        /// The query.
        #[arg(long)]
        query: String,
        /// Keep only the N best documents.
        #[arg(long)]
        top_n: Option<usize>,
        /// Include each document's text in the results.
        #[arg(long)]
        return_documents: bool,
        /// Print JSON: {"model", "results": [{"index", "score", "logit"}]}.
        #[arg(long)]
        json: bool,
        /// Documents to score.
        documents: Vec<String>,
    },
    /// Generate a continuation of PROMPT (streamed).
    Generate {
        /// Model id from the manifest, or a model directory, .gguf file or
        /// hf:org/name[:file].
        #[arg(long)]
        model: String,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Print {"text", "token_ids", "finish_reason", "prompt_tokens"} at the end instead of streaming text.
        #[arg(long)]
        json: bool,
        /// The prompt.
        prompt: String,
    },
    /// Chat with a model through its chat template (interactive without MESSAGE).
    Chat {
        /// Model id from the manifest, or a model directory, .gguf file or
        /// hf:org/name[:file].
        #[arg(long)]
        model: String,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// A system message.
        #[arg(long)]
        system: Option<String>,
        /// Print {"text", "token_ids", "finish_reason", "prompt_tokens"} per answer instead of streaming text.
        #[arg(long)]
        json: bool,
        /// One message to answer; without it, read messages from standard input.
        message: Option<String>,
    },
    /// Measure throughput on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Serve the manifest's models, and any given with --model, over HTTP (OpenAI- and
    /// TEI-compatible).
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
    /// Write a random-weight Qwen2 model of a config's shape (for benchmarks).
    #[cfg(feature = "synth")]
    Synth {
        /// A Hugging Face config.json (e.g. ../shared/bench/qwen2-0.5b.config.json).
        #[arg(long)]
        config: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Formats to write: safetensors, f16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k (comma-separated; the k-quants need widths that are multiples of 256).
        #[arg(long, value_delimiter = ',', default_value = "safetensors,q8_0,q4_0")]
        formats: Vec<String>,
        /// A tokenizer.json to copy beside the weights (the vocabulary must match the config).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
}

/// A task, as `--task` names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TaskArg {
    /// Text embeddings.
    Embed,
    /// Cross-encoder scores.
    Rerank,
    /// Text generation.
    Generate,
}

impl From<TaskArg> for gllm_runtime::api::Task {
    fn from(t: TaskArg) -> Self {
        match t {
            TaskArg::Embed => Self::Embed,
            TaskArg::Rerank => Self::Rerank,
            TaskArg::Generate => Self::Generate,
        }
    }
}

/// `gllm serve` flags.
#[cfg(feature = "serve")]
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A model to serve besides the manifest's: an id, or a model directory, .gguf file
    /// or hf:org/name[:file], served under the file or directory name (repeatable).
    #[arg(long)]
    pub model: Vec<String>,
    /// The task of the --model locations (read from their files when left out).
    #[arg(long)]
    pub task: Option<TaskArg>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health.
    #[arg(long, env = "GLLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests that may wait per model before new ones get 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub body_limit: usize,
    /// Longest a request may take, in seconds.
    #[arg(long, default_value_t = 300)]
    pub request_timeout: u64,
    /// Padded token budget of one embedding/rerank batch (longest × count).
    #[arg(long, default_value_t = 16384)]
    pub max_batch_tokens: usize,
    /// Generations that run at once per model.
    #[arg(long, default_value_t = 8)]
    pub max_concurrent_generations: usize,
    /// Most answers one chat or completion request may ask for (`n`).
    #[arg(long, default_value_t = 8)]
    pub max_choices: usize,
    /// MiB of KV cache each generation model keeps from finished requests, reused by
    /// prompts that begin the same way (a chat's next turn); 0 turns it off.
    #[arg(long, default_value_t = 512)]
    pub prompt_cache_mib: usize,
    /// Connections served at once (more wait in the listen backlog).
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client may take to send a request's headers (also how long a kept-alive
    /// connection may sit idle) before it is closed.
    #[arg(long, default_value_t = 30)]
    pub header_timeout: u64,
    /// MiB of KV cache all running generations may hold together (each counted for its
    /// prompt plus max_tokens; 429 when full); 0 for no budget. Default: half of the
    /// memory available at startup.
    #[arg(long)]
    pub kv_budget_mib: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Embed a corpus (one sentence per line): sentences/s, tokens/s, query latency.
    Embed {
        /// Model id from the manifest, or a model directory, .gguf file or
        /// hf:org/name[:file].
        #[arg(long)]
        model: String,
        /// The corpus.
        #[arg(long, default_value = "../shared/bench/corpus.txt")]
        corpus: PathBuf,
        /// Timed passes over the corpus (the best is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Prefill and decode tokens/s.
    Generate {
        /// Model id from the manifest, or a model directory, .gguf file or
        /// hf:org/name[:file].
        #[arg(long)]
        model: String,
        /// Prompt length.
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Decode steps after the prompt.
        #[arg(long, default_value_t = 64)]
        decode_tokens: usize,
        /// Timed runs (the best is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Sequences decoding at once (as concurrent requests to a server); the
        /// figures are totals over all of them.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Print one JSON object ({"prefill_tokens_per_s", "decode_tokens_per_s", ...})
        /// instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Sampling flags; each one left out keeps the model's default (generation_config.json).
#[derive(Args, Debug, Clone, Default)]
pub struct SamplingArgs {
    /// Most new tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// 0 = greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep the K most likely tokens (0 = off).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens below MIN_P × the best one's probability.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// transformers-style repetition penalty (1 = off).
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop at this string (repeatable); it is not printed.
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// The model's defaults with these flags applied.
    pub fn apply(&self, p: SamplingParams) -> SamplingParams {
        SamplingOverrides {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop: (!self.stop.is_empty()).then(|| self.stop.clone()),
            ..SamplingOverrides::default()
        }
        .apply(p)
    }
}

//! Prometheus metrics, kept in memory and written in the text exposition format
//! (version 0.0.4) by `GET /metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gllm_up` | gauge | |
//! | `gllm_ready` | gauge (1 when every model is loaded) | |
//! | `gllm_requests_total` | counter | `endpoint`, `model`, `status` |
//! | `gllm_request_duration_seconds` | histogram (to the response head) | `endpoint`, `model` |
//! | `gllm_requests_in_flight` | gauge | |
//! | `gllm_queue_depth` / `gllm_queue_capacity` | gauge | `model` |
//! | `gllm_batch_requests` | histogram (requests sharing one batch) | `model` |
//! | `gllm_batch_inputs` | histogram (sequences in one batch) | `model` |
//! | `gllm_batch_padded_tokens` | histogram (longest × count) | `model` |
//! | `gllm_batch_requests_max` | gauge (the largest batch so far) | `model` |
//! | `gllm_generations_active` | gauge | `model` |
//! | `gllm_generations_total` | counter | `model`, `finish_reason` (`stop`, `length`, `cancelled`, `timeout`, `error`) |
//! | `gllm_prompt_tokens_total` / `gllm_generated_tokens_total` | counter | `model` |
//! | `gllm_embedded_inputs_total` / `gllm_reranked_documents_total` | counter | `model` |
//! | `gllm_model_info` | gauge (1) | `model`, `task`, `backend`, `device` |
//! | `gllm_model_fallbacks_total` | counter (device fallbacks since load) | `model` |
//! | `gllm_decode_batches_total` / `gllm_decode_batched_steps_total` | counter (batches of concurrent decode steps, and the steps in them; their ratio is the mean batch size) | `model` |

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The model a response concerns, set by handlers as a response extension so that
/// the metrics middleware can label it.
#[derive(Debug, Clone)]
pub struct ModelLabel(pub String);

const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const SIZE_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const TOKEN_BUCKETS: [f64; 10] = [
    16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Clone)]
struct BatchStats {
    requests: Histogram,
    inputs: Histogram,
    padded_tokens: Histogram,
    max_requests: u64,
}

impl Default for BatchStats {
    fn default() -> Self {
        Self {
            requests: Histogram::new(&SIZE_BUCKETS),
            inputs: Histogram::new(&SIZE_BUCKETS),
            padded_tokens: Histogram::new(&TOKEN_BUCKETS),
            max_requests: 0,
        }
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
    batches: BTreeMap<String, BatchStats>,
    generations: BTreeMap<(String, &'static str), u64>,
    prompt_tokens: BTreeMap<String, u64>,
    generated_tokens: BTreeMap<String, u64>,
    embedded_inputs: BTreeMap<String, u64>,
    reranked_documents: BTreeMap<String, u64>,
}

/// What one model reports at scrape time (queue depth, backend, device).
#[derive(Debug, Clone)]
pub(crate) struct ModelGauges {
    pub id: String,
    pub task: &'static str,
    pub backend: String,
    pub device: String,
    pub fallbacks: u64,
    /// Batches of concurrent decode steps, and the steps in them, since load.
    pub decode_batches: u64,
    pub decode_batched_steps: u64,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub active_generations: Option<usize>,
    /// The prompt cache's counters (generation models with one).
    pub prompt_cache: Option<gllm_runtime::PromptCacheStats>,
}

/// Every counter and histogram of the server.
#[derive(Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
    in_flight: AtomicI64,
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update; the numbers stay usable.
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self, endpoint: &str, model: &str, status: u16, elapsed: Duration) {
        self.with(|m| {
            *m.requests
                .entry((endpoint.to_string(), model.to_string(), status))
                .or_default() += 1;
            m.latency
                .entry((endpoint.to_string(), model.to_string()))
                .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
                .observe(elapsed.as_secs_f64());
        });
    }

    pub fn batch(&self, model: &str, requests: usize, inputs: usize, padded_tokens: usize) {
        self.with(|m| {
            let b = m.batches.entry(model.to_string()).or_default();
            b.requests.observe(requests as f64);
            b.inputs.observe(inputs as f64);
            b.padded_tokens.observe(padded_tokens as f64);
            b.max_requests = b.max_requests.max(requests as u64);
        });
    }

    pub fn embedded(&self, model: &str, inputs: usize) {
        self.with(|m| *m.embedded_inputs.entry(model.to_string()).or_default() += inputs as u64);
    }

    pub fn reranked(&self, model: &str, documents: usize) {
        self.with(|m| {
            *m.reranked_documents.entry(model.to_string()).or_default() += documents as u64
        });
    }

    /// A generation ended (`finish`: stop, length, cancelled or error).
    pub fn generation(
        &self,
        model: &str,
        finish: &'static str,
        prompt_tokens: usize,
        generated: usize,
    ) {
        self.with(|m| {
            *m.generations
                .entry((model.to_string(), finish))
                .or_default() += 1;
            *m.prompt_tokens.entry(model.to_string()).or_default() += prompt_tokens as u64;
            *m.generated_tokens.entry(model.to_string()).or_default() += generated as u64;
        });
    }

    /// The exposition text.
    pub fn render(&self, ready: bool, models: &[ModelGauges]) -> String {
        let mut out = String::new();
        let o = &mut out;
        let _ = writeln!(o, "# HELP gllm_up The server is running.");
        let _ = writeln!(o, "# TYPE gllm_up gauge\ngllm_up 1");
        let _ = writeln!(
            o,
            "# HELP gllm_ready 1 when every model of the manifest is loaded."
        );
        let _ = writeln!(o, "# TYPE gllm_ready gauge\ngllm_ready {}", u8::from(ready));
        let _ = writeln!(
            o,
            "# HELP gllm_requests_in_flight Requests being answered now."
        );
        let _ = writeln!(
            o,
            "# TYPE gllm_requests_in_flight gauge\ngllm_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed).max(0)
        );

        let _ = writeln!(
            o,
            "# HELP gllm_model_info The backend and device serving each model."
        );
        let _ = writeln!(o, "# TYPE gllm_model_info gauge");
        for g in models {
            let _ = writeln!(
                o,
                "gllm_model_info{{model=\"{}\",task=\"{}\",backend=\"{}\",device=\"{}\"}} 1",
                esc(&g.id),
                g.task,
                esc(&g.backend),
                esc(&g.device)
            );
        }
        let _ = writeln!(
            o,
            "# HELP gllm_model_fallbacks_total Device fallbacks since the model was loaded."
        );
        let _ = writeln!(o, "# TYPE gllm_model_fallbacks_total counter");
        for g in models {
            let _ = writeln!(
                o,
                "gllm_model_fallbacks_total{{model=\"{}\"}} {}",
                esc(&g.id),
                g.fallbacks
            );
        }
        for (name, help, value) in [
            (
                "gllm_decode_batches_total",
                "Batches of concurrent decode steps run since the model was loaded.",
                (|g: &ModelGauges| g.decode_batches) as fn(&ModelGauges) -> u64,
            ),
            (
                "gllm_decode_batched_steps_total",
                "Decode steps run in those batches (divided by the batches: the mean batch size).",
                |g: &ModelGauges| g.decode_batched_steps,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} counter");
            for g in models {
                let _ = writeln!(o, "{name}{{model=\"{}\"}} {}", esc(&g.id), value(g));
            }
        }
        let _ = writeln!(
            o,
            "# HELP gllm_queue_depth Requests waiting for the model (batch queue or generation slot)."
        );
        let _ = writeln!(o, "# TYPE gllm_queue_depth gauge");
        for g in models {
            let _ = writeln!(
                o,
                "gllm_queue_depth{{model=\"{}\"}} {}",
                esc(&g.id),
                g.queue_depth
            );
        }
        let _ = writeln!(
            o,
            "# HELP gllm_queue_capacity Most requests that may wait; more get 429."
        );
        let _ = writeln!(o, "# TYPE gllm_queue_capacity gauge");
        for g in models {
            let _ = writeln!(
                o,
                "gllm_queue_capacity{{model=\"{}\"}} {}",
                esc(&g.id),
                g.queue_capacity
            );
        }
        for (name, kind, help, value) in [
            (
                "gllm_prompt_cache_hits_total",
                "counter",
                "Prompts that reused a cached prefix.",
                (|c: &gllm_runtime::PromptCacheStats| c.hits as f64)
                    as fn(&gllm_runtime::PromptCacheStats) -> f64,
            ),
            (
                "gllm_prompt_cache_misses_total",
                "counter",
                "Prompts that found no cached prefix.",
                |c| c.misses as f64,
            ),
            (
                "gllm_prompt_cache_reused_tokens_total",
                "counter",
                "Prompt tokens reused from the cache instead of prefilled.",
                |c| c.reused_tokens as f64,
            ),
            (
                "gllm_prompt_cache_evictions_total",
                "counter",
                "Cached prefixes evicted to stay within the budget.",
                |c| c.evictions as f64,
            ),
            (
                "gllm_prompt_cache_bytes",
                "gauge",
                "Bytes of KV cache the prompt cache holds.",
                |c| c.bytes as f64,
            ),
            (
                "gllm_prompt_cache_entries",
                "gauge",
                "Cached prefixes held.",
                |c| c.entries as f64,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
            for g in models {
                if let Some(c) = &g.prompt_cache {
                    let _ = writeln!(o, "{name}{{model=\"{}\"}} {}", esc(&g.id), value(c));
                }
            }
        }
        let _ = writeln!(o, "# HELP gllm_generations_active Generations running now.");
        let _ = writeln!(o, "# TYPE gllm_generations_active gauge");
        for g in models {
            if let Some(n) = g.active_generations {
                let _ = writeln!(o, "gllm_generations_active{{model=\"{}\"}} {n}", esc(&g.id));
            }
        }

        self.with(|m| {
            let _ = writeln!(
                o,
                "# HELP gllm_requests_total HTTP requests by endpoint, model and status."
            );
            let _ = writeln!(o, "# TYPE gllm_requests_total counter");
            for ((endpoint, model, status), n) in &m.requests {
                let _ = writeln!(
                    o,
                    "gllm_requests_total{{endpoint=\"{}\",model=\"{}\",status=\"{status}\"}} {n}",
                    esc(endpoint),
                    esc(model)
                );
            }
            let _ = writeln!(
                o,
                "# HELP gllm_request_duration_seconds Time to the response head (streams: to the first byte)."
            );
            let _ = writeln!(o, "# TYPE gllm_request_duration_seconds histogram");
            for ((endpoint, model), h) in &m.latency {
                let labels = format!("endpoint=\"{}\",model=\"{}\"", esc(endpoint), esc(model));
                h.write(o, "gllm_request_duration_seconds", &labels);
            }

            let _ = writeln!(
                o,
                "# HELP gllm_batch_requests Requests that shared one batch (embed, rerank)."
            );
            let _ = writeln!(o, "# TYPE gllm_batch_requests histogram");
            for (model, b) in &m.batches {
                b.requests
                    .write(o, "gllm_batch_requests", &format!("model=\"{}\"", esc(model)));
            }
            let _ = writeln!(o, "# HELP gllm_batch_inputs Sequences in one batch.");
            let _ = writeln!(o, "# TYPE gllm_batch_inputs histogram");
            for (model, b) in &m.batches {
                b.inputs
                    .write(o, "gllm_batch_inputs", &format!("model=\"{}\"", esc(model)));
            }
            let _ = writeln!(
                o,
                "# HELP gllm_batch_padded_tokens Padded size of one batch: longest sequence x sequences."
            );
            let _ = writeln!(o, "# TYPE gllm_batch_padded_tokens histogram");
            for (model, b) in &m.batches {
                b.padded_tokens.write(
                    o,
                    "gllm_batch_padded_tokens",
                    &format!("model=\"{}\"", esc(model)),
                );
            }
            let _ = writeln!(
                o,
                "# HELP gllm_batch_requests_max The most requests one batch has held."
            );
            let _ = writeln!(o, "# TYPE gllm_batch_requests_max gauge");
            for (model, b) in &m.batches {
                let _ = writeln!(
                    o,
                    "gllm_batch_requests_max{{model=\"{}\"}} {}",
                    esc(model),
                    b.max_requests
                );
            }

            let _ = writeln!(
                o,
                "# HELP gllm_generations_total Generations by how they ended."
            );
            let _ = writeln!(o, "# TYPE gllm_generations_total counter");
            for ((model, finish), n) in &m.generations {
                let _ = writeln!(
                    o,
                    "gllm_generations_total{{model=\"{}\",finish_reason=\"{finish}\"}} {n}",
                    esc(model)
                );
            }
            let counters: [(&str, &str, &BTreeMap<String, u64>); 4] = [
                (
                    "gllm_prompt_tokens_total",
                    "Prompt tokens of generations.",
                    &m.prompt_tokens,
                ),
                (
                    "gllm_generated_tokens_total",
                    "Tokens generated.",
                    &m.generated_tokens,
                ),
                (
                    "gllm_embedded_inputs_total",
                    "Texts embedded.",
                    &m.embedded_inputs,
                ),
                (
                    "gllm_reranked_documents_total",
                    "Documents scored.",
                    &m.reranked_documents,
                ),
            ];
            for (name, help, map) in counters {
                let _ = writeln!(o, "# HELP {name} {help}");
                let _ = writeln!(o, "# TYPE {name} counter");
                for (model, n) in map {
                    let _ = writeln!(o, "{name}{{model=\"{}\"}} {n}", esc(model));
                }
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request_started();
        m.request_finished("/v1/embeddings", "tiny-bert", 200, Duration::from_millis(3));
        m.request_done();
        m.batch("tiny-bert", 3, 5, 60);
        m.generation("tiny-qwen2", "length", 11, 8);
        let text = m.render(
            true,
            &[ModelGauges {
                id: "tiny-bert".into(),
                task: "embed",
                backend: "burn-bert".into(),
                device: "cpu".into(),
                fallbacks: 0,
                decode_batches: 4,
                decode_batched_steps: 10,
                queue_depth: 2,
                queue_capacity: 64,
                active_generations: None,
                prompt_cache: None,
            }],
        );
        assert!(text.contains(
            "gllm_requests_total{endpoint=\"/v1/embeddings\",model=\"tiny-bert\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "gllm_request_duration_seconds_bucket{endpoint=\"/v1/embeddings\",model=\"tiny-bert\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "gllm_request_duration_seconds_bucket{endpoint=\"/v1/embeddings\",model=\"tiny-bert\",le=\"0.001\"} 0"
        ));
        assert!(text.contains("gllm_batch_requests_bucket{model=\"tiny-bert\",le=\"2\"} 0"));
        assert!(text.contains("gllm_decode_batches_total{model=\"tiny-bert\"} 4"));
        assert!(text.contains("gllm_decode_batched_steps_total{model=\"tiny-bert\"} 10"));
        assert!(text.contains("gllm_batch_requests_bucket{model=\"tiny-bert\",le=\"4\"} 1"));
        assert!(text.contains("gllm_batch_requests_max{model=\"tiny-bert\"} 3"));
        assert!(text.contains("gllm_queue_depth{model=\"tiny-bert\"} 2"));
        assert!(text.contains(
            "gllm_model_info{model=\"tiny-bert\",task=\"embed\",backend=\"burn-bert\",device=\"cpu\"} 1"
        ));
        assert!(text.contains("gllm_generated_tokens_total{model=\"tiny-qwen2\"} 8"));
        assert!(
            text.contains(
                "gllm_generations_total{model=\"tiny-qwen2\",finish_reason=\"length\"} 1"
            )
        );
        assert!(text.contains("gllm_requests_in_flight 0"));
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

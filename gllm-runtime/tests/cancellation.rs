//! Cancellation that stops the work: a generation whose stream is dropped during a
//! long prefill stops within a chunk (`PREFILL_CHUNK` tokens), and what the caller asked
//! to be held until then (a server's admission permit) is released only once it has.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gllm_runtime::{GenerateRequest, PREFILL_CHUNK, SamplingParams};
use support::{counters_of, fixture_path, runtime};

/// Sets its flag when dropped.
struct Guard(Arc<AtomicBool>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_during_prefill_stops_the_work_within_a_chunk() {
    let id = "slow-prefill";
    let rt = runtime(&format!(
        "[[models]]\nid = \"{id}\"\ntask = \"generate\"\npath = \"{}\"\nbackends = [\"fault-test\"]\ndevices = [\"cpu\"]\n[models.options]\nfeed_delay_ms = \"50\"\ncontext = \"32768\"\nscript = \"300,301\"\n",
        fixture_path("tiny-qwen2")
    ));
    let h = rt.generator_blocking(id).unwrap();
    // About ten chunks of prompt: half a second of prefill if nothing stops it.
    let prompt = "word ".repeat(10 * PREFILL_CHUNK);
    let prompt_tokens = h.encode_prompt(&prompt).unwrap().len();
    assert!(prompt_tokens >= 8 * PREFILL_CHUNK, "{prompt_tokens} tokens");
    let released = Arc::new(AtomicBool::new(false));
    let stream = h.generate_stream_holding(
        GenerateRequest {
            prompt,
            params: SamplingParams {
                max_tokens: 64,
                ..Default::default()
            },
        },
        Guard(released.clone()),
    );
    // Let the prefill start, then go away.
    tokio::time::sleep(Duration::from_millis(120)).await;
    drop(stream);
    let start = Instant::now();
    while !released.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the work never stopped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fed = counters_of(id).fed;
    assert!(
        fed < prompt_tokens && fed <= 5 * PREFILL_CHUNK,
        "fed {fed} of {prompt_tokens} prompt tokens after the stream was dropped"
    );
    // Released within about one chunk (50 ms) of the drop.
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "released {:?} after the drop",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_prompt_is_refused_or_cut_keeping_the_system_turn() {
    // tiny-qwen2's chat template on the fault-test backend, with a 64-token context.
    let manifest = |id: &str, truncate: &str| {
        format!(
            "[[models]]\nid = \"{id}\"\ntask = \"generate\"\npath = \"{}\"\nbackends = [\"fault-test\"]\ndevices = [\"cpu\"]\n[models.options]\ncontext = \"64\"\nscript = \"300,301\"\n{truncate}",
            fixture_path("tiny-qwen2")
        )
    };
    let messages = vec![
        gllm_runtime::ChatMessage::new("system", "Be brief."),
        gllm_runtime::ChatMessage::new("user", "word ".repeat(200)),
    ];
    let params = SamplingParams {
        max_tokens: 4,
        ..Default::default()
    };
    let rt = runtime(&manifest("long-refused", ""));
    let h = rt.generator_blocking("long-refused").unwrap();
    let n = h.encode_chat(&messages).unwrap().len();
    let e = h.chat(messages.clone(), params.clone()).await.unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "the prompt is {n} tokens and the model's context 64"
        )),
        "{e}"
    );
    // Asked for in the request: 60 tokens kept (room for 4 new), the system turn first.
    let cut = h
        .chat(
            messages.clone(),
            SamplingParams {
                truncate_prompt: true,
                ..params.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(cut.prompt_tokens, 60);
    // The system turn (`<|im_start|>system\nBe brief.<|im_end|>\n`, 8 tokens), then the
    // last 52 tokens of the conversation.
    let whole = h.encode_chat(&messages).unwrap();
    let fed = counters_of("long-refused").first_fed;
    assert_eq!(fed[..8], whole[..8]);
    assert_eq!(fed[8..], whole[whole.len() - 52..whole.len() - 44]);
    // As the manifest's default: the same.
    let rt = runtime(&manifest("long-cut", "truncate_prompt = \"true\"\n"));
    let h = rt.generator_blocking("long-cut").unwrap();
    let defaults = h.default_params();
    assert!(defaults.truncate_prompt);
    let g = h
        .chat(
            messages,
            SamplingParams {
                max_tokens: 4,
                ..defaults
            },
        )
        .await
        .unwrap();
    assert_eq!(g.prompt_tokens, 60);
}

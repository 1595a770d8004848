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

//! GPU → CPU fallback, at load and in the middle of requests, with the
//! fault-injecting `fault-test` backend (see support/mod.rs).

mod support;

use futures::StreamExt;
use gllm_api::{Device, ErrorKind};
use gllm_runtime::{GenerateRequest, RuntimeError, SamplingParams, StreamEvent};
use support::{counters_of, fake_embedding, fixture_path, runtime};

/// A one-model manifest on the fault-test backend, GPU first.
fn manifest(task: &str, fixture: &str, id: &str, options: &str) -> String {
    format!(
        r#"
[[models]]
id = "{id}"
task = "{task}"
path = "{}"
backends = ["fault-test"]
devices = ["gpu", "cpu"]
[models.options]
{options}
"#,
        fixture_path(fixture)
    )
}

fn embed_manifest(id: &str, options: &str) -> String {
    manifest("embed", "tiny-bert", id, options)
}

fn generate_manifest(id: &str, options: &str) -> String {
    manifest("generate", "tiny-qwen2", id, options)
}

fn texts() -> Vec<String> {
    vec![
        "a short one".into(),
        "a somewhat longer sentence with more words".into(),
    ]
}

async fn expected_embeddings(rt: &gllm_runtime::Runtime, id: &str) -> Vec<Vec<f32>> {
    let h = rt.embedder(id).await.unwrap();
    texts()
        .iter()
        .map(|t| fake_embedding(&h.tokenize(t).unwrap()))
        .collect()
}

#[tokio::test]
async fn gpu_unavailable_at_load_falls_back_to_cpu_and_says_so() {
    for (id, how) in [
        ("unavail", "unavailable"),
        ("panics", "panic"),
        ("oom-load", "oom"),
    ] {
        let rt = runtime(&embed_manifest(id, &format!("gpu_load = \"{how}\"")));
        let h = rt.embedder(id).await.unwrap();
        let active = h.active();
        assert_eq!(active.device, Device::CPU, "{how}");
        assert_eq!(active.backend, "fault-test");
        assert_eq!(counters_of(id).loads, vec!["gpu:0", "cpu"], "{how}");
        let rows = h.embed(texts()).await.unwrap();
        let want = expected_embeddings(&rt, id).await;
        assert_eq!(
            rows.iter().map(|r| r.embedding.clone()).collect::<Vec<_>>(),
            want
        );
    }
}

#[tokio::test]
async fn plan_reports_why_the_gpu_is_skipped() {
    let manifest = embed_manifest("plan", "").replace("fault-test", "fault-cpu-only");
    let rt = runtime(&manifest);
    let plan = rt.plan("plan").unwrap();
    let chosen = plan.chosen().unwrap();
    assert_eq!(
        (chosen.backend.as_str(), chosen.device),
        ("fault-cpu-only", Device::CPU)
    );
    let gpu = &plan.candidates[0];
    assert_eq!(gpu.device, Device::gpu(0));
    assert!(
        gpu.skipped
            .as_deref()
            .unwrap()
            .contains("no GPU adapter found"),
        "{:?}",
        gpu.skipped
    );
    // and a real load agrees with the plan
    assert_eq!(
        rt.embedder("plan").await.unwrap().active().device,
        Device::CPU
    );
}

#[tokio::test]
async fn oom_on_the_third_request_is_answered_from_cpu_and_cpu_keeps_serving() {
    let id = "oom3";
    let rt = runtime(&embed_manifest(id, "gpu_fail_call = \"3\""));
    let h = rt.embedder(id).await.unwrap();
    let want = expected_embeddings(&rt, id).await;
    for request in 1..=5 {
        let rows = h.embed(texts()).await.unwrap();
        let got: Vec<_> = rows.into_iter().map(|r| r.embedding).collect();
        assert_eq!(got, want, "request {request}");
        let active = h.active();
        let expect_device = if request < 3 {
            Device::gpu(0)
        } else {
            Device::CPU
        };
        assert_eq!(active.device, expect_device, "request {request}");
        assert_eq!(active.fallbacks, u64::from(request >= 3));
    }
    assert_eq!(counters_of(id).loads, vec!["gpu:0", "cpu"]);
}

async fn stream_text(
    h: &gllm_runtime::GeneratorHandle,
    prompt: &str,
    params: SamplingParams,
) -> (String, gllm_runtime::Generation) {
    let mut s = Box::pin(h.generate_stream(GenerateRequest {
        prompt: prompt.into(),
        params,
    }));
    let mut text = String::new();
    let mut done = None;
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            StreamEvent::Delta(d) => text.push_str(&d),
            StreamEvent::Done(g) => done = Some(g),
        }
    }
    (text, done.expect("stream ended without Done"))
}

#[tokio::test]
async fn oom_in_the_middle_of_a_stream_gives_the_uninterrupted_text() {
    let params = SamplingParams {
        seed: Some(11),
        temperature: 0.8,
        ..SamplingParams::greedy(40)
    };
    let clean = runtime(&generate_manifest("stream-clean", ""));
    let h = clean.generator("stream-clean").await.unwrap();
    let (want_text, want) = stream_text(&h, "Hello, my name is", params.clone()).await;
    assert_eq!(want.token_ids.len(), 40);
    assert_eq!(h.active().device, Device::gpu(0));

    // Decode steps either go straight to the backend or through the step batcher.
    for (kind, batches) in [
        ("oom", false),
        ("lost", false),
        ("oom", true),
        ("lost", true),
    ] {
        let id = format!("stream-{kind}-{batches}");
        // call 1 is the prefill; the 10th call is a decode step in mid-stream
        let rt = runtime(&generate_manifest(
            &id,
            &format!("gpu_fail_call = \"10\"\ngpu_fail_kind = \"{kind}\"\nbatches = \"{batches}\""),
        ));
        let h = rt.generator(&id).await.unwrap();
        let (text, got) = stream_text(&h, "Hello, my name is", params.clone()).await;
        assert_eq!(h.active().device, Device::CPU, "{kind}");
        assert_eq!(got.token_ids, want.token_ids, "{kind}");
        assert_eq!(text, want_text, "{kind}");
        assert_eq!(got.text, want.text, "{kind}");
        assert_eq!(counters_of(&id).loads, vec!["gpu:0", "cpu"]);
        assert_eq!(
            h.active().batched_steps > 0,
            batches,
            "{kind}: through the batcher"
        );
    }
}

#[tokio::test]
async fn invalid_model_is_not_masked_by_fallback() {
    let id = "invalid";
    let rt = runtime(&embed_manifest(id, "load = \"invalid\""));
    let err = match rt.embedder(id).await {
        Ok(_) => panic!("an invalid model must not load"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert_eq!(
        err.backend_error().map(|e| e.kind),
        Some(ErrorKind::InvalidModel),
        "{msg}"
    );
    assert!(msg.contains("embeddings.word_embeddings.weight"), "{msg}");
    assert!(msg.contains("invalid"), "{msg}");
    // it stopped at the GPU: the CPU was never tried
    assert_eq!(counters_of(id).loads, vec!["gpu:0"]);
}

#[tokio::test]
async fn request_errors_are_not_retried() {
    let id = "reqerr";
    let rt = runtime(&embed_manifest(id, "reject_len = \"3\""));
    let h = rt.embedder(id).await.unwrap();
    let before = counters_of(id).calls;
    // "x" is [CLS] x [SEP]: 3 tokens, rejected as invalid input
    let err = h.embed(vec!["x".into()]).await.unwrap_err();
    assert_eq!(
        err.backend_error().map(|e| e.kind),
        Some(ErrorKind::InvalidInput),
        "{err}"
    );
    assert_eq!(counters_of(id).calls, before + 1, "the request was retried");
    assert_eq!(h.active().device, Device::gpu(0));
    assert_eq!(h.active().fallbacks, 0);
    assert!(matches!(err, RuntimeError::Backend { .. }));
}

#[tokio::test]
async fn a_model_that_fell_back_returns_to_the_gpu_after_a_doubling_wait() {
    let id = "failback";
    let rt = runtime(&embed_manifest(
        id,
        "gpu_fail_call = \"2\"\nfailback_after = \"0.5\"",
    ));
    let h = rt.embedder(id).await.unwrap();
    let want = expected_embeddings(&rt, id).await;
    let embed = || async {
        let rows = h.embed(texts()).await.expect("answered");
        let got: Vec<_> = rows.into_iter().map(|r| r.embedding).collect();
        assert_eq!(got, want, "the same answer on every device");
        h.active()
    };
    // The GPU instance's second call runs out of memory: answered from the CPU.
    assert_eq!(embed().await.device, Device::gpu(0));
    let a = embed().await;
    assert_eq!((a.device, a.fallbacks, a.failbacks), (Device::CPU, 1, 0));
    // Before the wait has passed the model stays on the CPU.
    assert_eq!(embed().await.device, Device::CPU);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let a = embed().await;
    assert_eq!((a.device, a.fallbacks, a.failbacks), (Device::gpu(0), 1, 1));
    // It fails again: back to the CPU, and the next wait is twice as long (1 s).
    let a = embed().await;
    assert_eq!((a.device, a.fallbacks), (Device::CPU, 2));
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(embed().await.device, Device::CPU, "the wait doubled");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let a = embed().await;
    assert_eq!((a.device, a.failbacks), (Device::gpu(0), 2));
}

#[tokio::test]
async fn a_bad_failback_option_is_an_error_naming_it() {
    let rt = runtime(&embed_manifest("badfailback", "failback_after = \"soon\""));
    match rt.embedder("badfailback").await {
        Err(e) => assert!(e.to_string().contains("failback_after"), "{e}"),
        Ok(_) => panic!("a bad failback_after was accepted"),
    }
}

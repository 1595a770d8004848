//! Load progress: the built-in backends report the bytes of weights they read,
//! and the runtime passes them on with the model, backend and device, ending each
//! attempt with a `finished` event. One test, because the handler is process-wide.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gllm_runtime::load_progress::{LoadEvent, set_load_progress_handler};
use support::fixture_path;

/// (done, total, finished) reports per (model, backend).
type Seen = BTreeMap<(String, String), Vec<(u64, u64, bool)>>;

/// The bytes of the tensor data of a safetensors file: its length less the
/// 8-byte header length and the header.
fn safetensors_data_bytes(fixture: &str) -> u64 {
    let path = format!("{}/model.safetensors", fixture_path(fixture));
    let bytes = std::fs::read(&path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    bytes.len() as u64 - 8 - header
}

fn entry(id: &str, task: &str, path: &str, backend: &str) -> String {
    format!(
        "[[models]]\nid = \"{id}\"\ntask = \"{task}\"\npath = \"{path}\"\nbackends = [\"{backend}\"]\ndevices = [\"cpu\"]\n"
    )
}

#[test]
fn every_builtin_backend_reports_all_bytes_of_its_weights() {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    set_load_progress_handler(Some(Arc::new(move |e: &LoadEvent<'_>| {
        assert_eq!(e.device, gllm_api::Device::CPU);
        sink.lock()
            .unwrap()
            .entry((e.model.to_string(), e.backend.to_string()))
            .or_default()
            .push((e.done, e.total, e.finished));
    })));
    let gguf = format!("{}/tiny-qwen2-q8_0.gguf", fixture_path("gguf"));
    let manifest = [
        entry("bert", "embed", &fixture_path("tiny-bert"), "burn-bert"),
        entry(
            "candle",
            "generate",
            &fixture_path("tiny-qwen2"),
            "candle-qwen2",
        ),
        entry(
            "burn",
            "generate",
            &fixture_path("tiny-qwen2"),
            "burn-qwen2",
        ),
        entry("gguf", "generate", &gguf, "candle-qwen2"),
    ]
    .concat();
    let rt = support::runtime(&manifest);
    rt.embedder_blocking("bert").unwrap();
    for id in ["candle", "burn", "gguf"] {
        rt.generator_blocking(id).unwrap();
    }
    set_load_progress_handler(None);

    let seen = seen.lock().unwrap();
    let qwen_bytes = safetensors_data_bytes("tiny-qwen2");
    let gguf_len = std::fs::metadata(&gguf).unwrap().len();
    for (id, backend) in [
        ("bert", "burn-bert"),
        ("candle", "candle-qwen2"),
        ("burn", "burn-qwen2"),
        ("gguf", "candle-qwen2"),
    ] {
        let events = &seen[&(id.to_string(), backend.to_string())];
        let (last, progress) = events.split_last().unwrap();
        assert!(last.2, "{id}: the last event ends the attempt");
        let total = progress[0].1;
        match id {
            "bert" => assert_eq!(total, safetensors_data_bytes("tiny-bert")),
            "gguf" => assert!(
                total > qwen_bytes / 8 && total < gguf_len,
                "{id}: total {total} of a {gguf_len}-byte file"
            ),
            _ => assert_eq!(total, qwen_bytes, "{id}"),
        }
        assert!(
            progress.iter().all(|&(_, t, f)| t == total && !f),
            "{id}: {progress:?}"
        );
        assert!(
            progress.windows(2).all(|w| w[0].0 <= w[1].0),
            "{id}: done never goes back"
        );
        assert_eq!(
            progress.last().unwrap().0,
            total,
            "{id}: every byte is reported"
        );
        assert!(progress.len() > 10, "{id}: reported per tensor, not once");
    }
}

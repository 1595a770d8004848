//! Backend plugins loaded from shared libraries: the example plugin gives the
//! fixture's numbers through the runtime and the `gllm` binary; panics and load
//! errors are contained (the memory test is in plugin_memory.rs).

mod plugin_support;

use std::process::Command;

use gllm_testkit::process::{json_of, stdout_of};
use gllm_testkit::{assert_close, fixture, json_f32s, json_strings, json_u32s, read_json};
use plugin_support::{bert_manifest, faulty_manifest, lib};

#[tokio::test]
async fn example_plugin_matches_the_fixture_through_the_runtime() {
    let runtime = gllm::open_manifest(bert_manifest()).unwrap();
    let entry = runtime
        .registry()
        .get("plugin-bert")
        .expect("plugin backend registered");
    assert!(
        entry.origin.to_string().starts_with("plugin "),
        "{}",
        entry.origin
    );
    let reference = read_json(&fixture("tiny-bert").join("reference.json")).unwrap();
    let sentences = json_strings(&reference["sentences"]);
    let h = runtime.embedder("tiny-bert").await.unwrap();
    // the plugin runs on the CPU only: the GPU candidate failed over
    assert_eq!(h.active().device, gllm_api::Device::CPU);
    assert_eq!(h.active().backend, "plugin-bert");
    let rows = h.embed(sentences.clone()).await.unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_close(
            &format!("sentence {i}"),
            &row.embedding,
            &json_f32s(&reference["embeddings"][i]),
            1e-5,
        );
        assert_eq!(row.tokens, json_u32s(&reference["input_ids"][i]).len());
    }
    let ce = read_json(&fixture("tiny-cross-encoder").join("reference.json")).unwrap();
    let q = &ce["queries"][0];
    let docs = json_strings(&q["documents"]);
    let r = runtime.reranker("tiny-ce").await.unwrap();
    let results = r
        .rerank(q["query"].as_str().unwrap().into(), docs, None, false)
        .await
        .unwrap();
    let logits = json_f32s(&q["logits"]);
    for res in results {
        assert!(
            (res.logit - logits[res.index]).abs() <= 1e-5,
            "pair {}",
            res.index
        );
    }
}

#[test]
fn example_plugin_matches_the_fixture_through_the_binary() {
    let reference = read_json(&fixture("tiny-bert").join("reference.json")).unwrap();
    let sentences = json_strings(&reference["sentences"]);
    let out = Command::new(env!("CARGO_BIN_EXE_gllm"))
        .arg("--manifest")
        .arg(bert_manifest())
        .args(["embed", "--model", "tiny-bert", "--json"])
        .args(&sentences)
        .output()
        .unwrap();
    let v = json_of(&out);
    for (i, row) in v["data"].as_array().unwrap().iter().enumerate() {
        assert_close(
            &format!("sentence {i}"),
            &json_f32s(&row["embedding"]),
            &json_f32s(&reference["embeddings"][i]),
            1e-5,
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gllm"))
        .arg("--manifest")
        .arg(bert_manifest())
        .arg("models")
        .output()
        .unwrap();
    let text = stdout_of(&out);
    assert!(
        text.contains(&format!(
            "plugin-bert (plugin {})",
            lib("gllm_plugin_bert").display()
        )),
        "{text}"
    );
    assert!(text.contains("-> plugin-bert on cpu"), "{text}");
}

#[tokio::test]
async fn a_panicking_plugin_fails_the_request_not_the_process() {
    let runtime = gllm::open_manifest(faulty_manifest(
        "panic.toml",
        &lib("gllm_plugin_faulty"),
        "panic = \"embed\"",
    ))
    .unwrap();
    let h = runtime.embedder("faulty").await.unwrap();
    let err = h.embed(vec!["hello".into()]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("plugin panicked: faulty plugin: panic while embedding"),
        "{err}"
    );
    // the next request, to another model of the same plugin, works
    let other = runtime.embedder("other").await.unwrap();
    let rows = other.embed(vec!["hello".into()]).await.unwrap();
    assert_eq!(rows[0].embedding.len(), 4);
    // a panic while loading is an error too
    let runtime = gllm::open_manifest(faulty_manifest(
        "panic-load.toml",
        &lib("gllm_plugin_faulty"),
        "panic = \"load\"",
    ))
    .unwrap();
    let err = match runtime.embedder("faulty").await {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("plugin panicked: faulty plugin: panic while loading"),
        "{err}"
    );
}

#[tokio::test]
async fn a_load_error_falls_back_like_a_builtin() {
    let runtime = gllm::open_manifest(faulty_manifest(
        "gpu.toml",
        &lib("gllm_plugin_faulty"),
        "gpu = \"unavailable\"",
    ))
    .unwrap();
    let h = runtime.embedder("faulty").await.unwrap();
    assert_eq!(h.active().device, gllm_api::Device::CPU);
    let plan = runtime.plan("faulty").unwrap();
    assert_eq!(plan.candidates[0].device, gllm_api::Device::gpu(0));
}

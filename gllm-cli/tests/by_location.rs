//! Models named by where they are (`--model DIR|FILE.gguf|hf:org/name`), with no
//! manifest: the same numbers as the manifest route and the references, and clear
//! errors for locations gllm cannot open.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gllm_testkit::process::{assert_no_panic, failure, json_of, stdout_of};
use gllm_testkit::{
    assert_close, assert_ranked, fixture, fixtures_dir, json_f32s, json_strings, json_u32s,
    read_json, real_model,
};

/// An empty working directory (no ./models.toml) for this test binary.
fn bare_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gllm-cli-loc-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs gllm in `cwd` with no manifest in sight, or with `manifest`.
fn gllm_in(cwd: &Path, manifest: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gllm"));
    cmd.current_dir(cwd).env_remove("GLLM_MANIFEST");
    if let Some(m) = manifest {
        cmd.arg("--manifest").arg(m);
    }
    let out = cmd.args(args).output().expect("run gllm");
    assert_no_panic(&out);
    out
}

/// A manifest in `dir` with one entry, `id` for the model at `path`, and nothing
/// else: the built-in defaults, as a model named by location gets them.
fn one_model_manifest(dir: &Path, id: &str, task: &str, path: &Path) -> PathBuf {
    let manifest = dir.join("manifest.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[models]]\nid = \"{id}\"\ntask = \"{task}\"\npath = \"{}\"\n",
            path.display()
        ),
    )
    .unwrap();
    manifest
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_gguf_file_generates_like_its_manifest_entry() {
    let cwd = bare_dir("gen");
    let smol = real_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    // The manifest route with the same (built-in) defaults as a bare path gets.
    let manifest = one_model_manifest(&cwd, "smollm2", "generate", &smol);
    let generate = |model: &str, manifest: Option<&Path>| {
        let args = [
            "generate",
            "--model",
            model,
            "--temperature",
            "0",
            "--max-tokens",
            "12",
            "--json",
            "The capital of France is",
        ];
        json_of(&gllm_in(&cwd, manifest, &args))
    };
    let a = generate(&s(&smol), None);
    let b = generate("smollm2", Some(&manifest));
    let ids = json_u32s(&a["token_ids"]);
    assert_eq!(ids.len(), 12, "{a}");
    assert_eq!(ids, json_u32s(&b["token_ids"]));
    assert_eq!(a["text"], b["text"]);
}

#[test]
fn a_model_directory_embeds_and_reranks_like_the_references() {
    let cwd = bare_dir("enc");
    let minilm = real_model("all-MiniLM-L6-v2");
    let reference = read_json(&fixtures_dir().join("all-MiniLM-L6-v2.reference.json")).unwrap();
    let sentences = json_strings(&reference["sentences"]);
    let model = s(&minilm);
    let mut args = vec!["embed", "--model", &model, "--json"];
    args.extend(sentences.iter().map(String::as_str));
    let v = json_of(&gllm_in(&cwd, None, &args));
    assert_eq!(
        v["model"], "all-MiniLM-L6-v2",
        "the id is the directory's name"
    );
    // The built-in device order tries a GPU first (wgpu, Mesa's software Vulkan here):
    // 1e-4 covers it, as for every wgpu path.
    for (i, row) in v["data"].as_array().unwrap().iter().enumerate() {
        assert_close(
            &format!("sentence {i}"),
            &json_f32s(&row["embedding"]),
            &json_f32s(&reference["embeddings"][i]),
            1e-4,
        );
    }
    // And the manifest route with the same (built-in) defaults gives the same numbers.
    let manifest = one_model_manifest(&cwd, "minilm", "embed", &minilm);
    let mut args = vec!["embed", "--model", "minilm", "--json"];
    args.extend(sentences.iter().map(String::as_str));
    let by_id = json_of(&gllm_in(&cwd, Some(&manifest), &args));
    assert_eq!(by_id["data"], v["data"]);

    let ce = fixture("tiny-cross-encoder");
    let reference = read_json(&ce.join("reference.json")).unwrap();
    let q = &reference["queries"][0];
    let docs = json_strings(&q["documents"]);
    let model = s(&ce);
    let mut args = vec![
        "rerank",
        "--model",
        &model,
        "--json",
        "--query",
        q["query"].as_str().unwrap(),
    ];
    args.extend(docs.iter().map(String::as_str));
    let v = json_of(&gllm_in(&cwd, None, &args));
    assert_ranked(
        "by directory",
        &v["results"],
        "logit",
        &json_f32s(&q["logits"]),
        1e-5,
    );
}

#[test]
fn models_shows_what_a_location_loads_as() {
    let cwd = bare_dir("models");
    let ce = s(&fixture("tiny-cross-encoder"));
    let smol = s(&real_model("SmolLM2-135M-Instruct.Q4_1.gguf"));
    let out = gllm_in(&cwd, None, &["models", "--model", &ce, "--model", &smol]);
    let text = stdout_of(&out);
    assert!(text.contains("tiny-cross-encoder\trerank"), "{text}");
    assert!(
        text.contains("SmolLM2-135M-Instruct.Q4_1\tgenerate\tgguf"),
        "{text}"
    );
}

#[test]
fn locations_gllm_cannot_open_are_clear_errors() {
    let cwd = bare_dir("bad");
    // A directory that could serve two tasks, without --task.
    let both = cwd.join("decoder-with-st-files");
    std::fs::create_dir_all(&both).unwrap();
    std::fs::copy(
        fixture("tiny-qwen2").join("config.json"),
        both.join("config.json"),
    )
    .unwrap();
    std::fs::write(both.join("modules.json"), "[]").unwrap();
    let err = failure(&gllm_in(&cwd, None, &["models", "--model", &s(&both)]));
    assert!(
        err.contains("this model could serve generate or embed; say which (--task generate|embed)"),
        "{err}"
    );
    // ...and with it, the task is taken.
    let out = gllm_in(
        &cwd,
        None,
        &["models", "--model", &s(&both), "--task", "embed"],
    );
    assert!(stdout_of(&out).contains("decoder-with-st-files\tembed"));

    let err = failure(&gllm_in(
        &cwd,
        None,
        &["embed", "--model", "/no/such/model", "hi"],
    ));
    assert!(
        err.contains("/no/such/model: /no/such/model does not exist (expected a model directory, a .gguf file or hf:org/name)"),
        "{err}"
    );
    let not_a_model = fixture("tiny-qwen2").join("reference.json");
    let err = failure(&gllm_in(
        &cwd,
        None,
        &["generate", "--model", &s(&not_a_model), "hi"],
    ));
    assert!(
        err.contains("neither a .gguf file nor a model directory"),
        "{err}"
    );
    let err = failure(&gllm_in(&cwd, None, &["embed", "--model", &s(&cwd), "hi"]));
    assert!(
        err.contains("has no config.json, so it is not a model directory"),
        "{err}"
    );
    // The file says what it is for.
    let smol = s(&real_model("SmolLM2-135M-Instruct.Q4_1.gguf"));
    let err = failure(&gllm_in(&cwd, None, &["embed", "--model", &smol, "hi"]));
    assert!(
        err.contains("this model serves generate, not embed"),
        "{err}"
    );
    // An id with no manifest to look it up in.
    let err = failure(&gllm_in(&cwd, None, &["embed", "--model", "minilm", "hi"]));
    assert!(
        err.contains("no manifest (./models.toml does not exist) to look up `minilm` in"),
        "{err}"
    );
    // hf: without the download feature (and not in the cache).
    let out = Command::new(env!("CARGO_BIN_EXE_gllm"))
        .current_dir(&cwd)
        .env_remove("GLLM_MANIFEST")
        .env("HF_HOME", cwd.join("empty-hf-home"))
        .args(["generate", "--model", "hf:nobody/nothing:model.gguf", "hi"])
        .output()
        .unwrap();
    assert_no_panic(&out);
    let err = failure(&out);
    assert!(err.contains("nobody/nothing"), "{err}");
    #[cfg(not(feature = "download"))]
    assert!(err.contains("--features download"), "{err}");
    let err = failure(&gllm_in(
        &cwd,
        None,
        &["generate", "--model", "hf:just-a-name", "hi"],
    ));
    assert!(
        err.contains("expected hf:org/name or hf:org/name:file.gguf"),
        "{err}"
    );
}

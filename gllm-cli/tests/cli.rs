//! The `gllm` binary, as people and scripts use it: the numbers it prints match
//! the fixtures' references, and bad input gives a clear error, never a panic.

use std::path::PathBuf;
use std::process::{Command, Output};

use gllm_testkit::process::{assert_no_panic, failure, json_of, stdout_of};
use gllm_testkit::{
    assert_close, assert_ranked, fixture, fixtures_dir, json_f32s, json_strings, json_u32s,
    read_json, real_model,
};

/// The manifest, written once per test binary (tests run concurrently).
fn manifest() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(write_manifest).clone()
}

fn write_manifest() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gllm-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("models.toml");
    let text = format!(
        r#"
# Parity at 1e-5 is checked on the CPU; the wgpu path (1e-4) in the backends' own tests.
[defaults]
devices = ["cpu"]

[[models]]
id = "tiny-bert"
task = "embed"
path = "{bert}"
backends = ["burn-bert"]

[[models]]
id = "tiny-ce"
task = "rerank"
path = "{ce}"
backends = ["burn-bert"]

[[models]]
id = "tiny-roberta"
task = "embed"
path = "{roberta}"

[[models]]
id = "tiny-xlmr"
task = "rerank"
path = "{xlmr}"

[[models]]
id = "tiny-qwen2"
task = "generate"
path = "{qwen}"
backends = ["candle-qwen2"]
devices = ["gpu", "cpu"]

[[models]]
id = "tiny-qwen2-burn"
task = "generate"
path = "{qwen}"
backends = ["burn-qwen2"]

[[models]]
id = "tiny-qwen3"
task = "generate"
path = "{qwen3}"
backends = ["candle-qwen2"]

[[models]]
id = "tiny-qwen3-burn"
task = "generate"
path = "{qwen3}"
backends = ["burn-qwen2"]

[[models]]
id = "tiny-qwen3-gguf"
task = "generate"
path = "{qwen3_gguf}"

[[models]]
id = "qwen3-rerank"
task = "rerank"
path = "{qwen3_rerank}"

[[models]]
id = "qwen3-rerank-code"
task = "rerank"
path = "{qwen3_rerank}"
[models.options]
instruction = "Find code that answers the question"

[[models]]
id = "minilm"
task = "embed"
path = "{minilm}"

[[models]]
id = "smollm2"
task = "generate"
path = "{smol}"

[[models]]
id = "coder"
task = "generate"
path = "{coder}"
devices = ["cpu"]
"#,
        bert = fixture("tiny-bert").display(),
        ce = fixture("tiny-cross-encoder").display(),
        roberta = fixture("tiny-roberta").display(),
        xlmr = fixture("tiny-xlm-roberta-reranker").display(),
        qwen = fixture("tiny-qwen2").display(),
        qwen3 = fixture("tiny-qwen3").display(),
        qwen3_rerank = fixture("tiny-qwen3-reranker").display(),
        qwen3_gguf = fixture("gguf/tiny-qwen3-f16.gguf").display(),
        minilm = real_model("all-MiniLM-L6-v2").display(),
        smol = real_model("SmolLM2-135M-Instruct.Q4_1.gguf").display(),
        coder = gllm_testkit::coder::coder_gguf().display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn gllm(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_gllm"))
        .arg("--manifest")
        .arg(manifest())
        .args(args)
        .output()
        .expect("run gllm");
    assert_no_panic(&out);
    out
}

#[test]
fn embed_json_matches_sentence_transformers() {
    for (model, reference) in [
        ("tiny-bert", fixture("tiny-bert").join("reference.json")),
        (
            "tiny-roberta",
            fixture("tiny-roberta").join("reference.json"),
        ),
        (
            "minilm",
            fixtures_dir().join("all-MiniLM-L6-v2.reference.json"),
        ),
    ] {
        let reference = read_json(&reference).unwrap();
        let sentences = json_strings(&reference["sentences"]);
        let mut args = vec!["embed", "--model", model, "--json"];
        args.extend(sentences.iter().map(String::as_str));
        let v = json_of(&gllm(&args));
        assert_eq!(v["model"], model);
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), sentences.len());
        let mut tokens = 0;
        for (i, row) in data.iter().enumerate() {
            assert_eq!(row["index"], i);
            assert_close(
                &format!("{model} sentence {i}"),
                &json_f32s(&row["embedding"]),
                &json_f32s(&reference["embeddings"][i]),
                1e-5,
            );
            tokens += json_u32s(&reference["input_ids"][i]).len();
        }
        assert_eq!(v["usage"]["prompt_tokens"], tokens);
    }
}

#[test]
fn decoder_embeddings_with_and_without_a_prompt_name() {
    // A Qwen3-Embedding-layout directory, by location: `embed` gives the task.
    let dir = fixture("tiny-qwen3-embedding");
    let reference = read_json(&dir.join("reference.json")).unwrap();
    let dir = dir.display().to_string();
    for (texts, prompt, want, ids) in [
        (
            "documents",
            None,
            "document_embeddings",
            "document_input_ids",
        ),
        (
            "queries",
            Some("query"),
            "query_embeddings",
            "query_input_ids",
        ),
    ] {
        let texts = json_strings(&reference[texts]);
        let mut args = vec!["embed", "--model", dir.as_str(), "--json"];
        if let Some(p) = prompt {
            args.extend(["--prompt-name", p]);
        }
        args.extend(texts.iter().map(String::as_str));
        let v = json_of(&gllm(&args));
        let mut tokens = 0;
        for (i, row) in v["data"].as_array().unwrap().iter().enumerate() {
            assert_close(
                &format!("{want}[{i}]"),
                &json_f32s(&row["embedding"]),
                &json_f32s(&reference[want][i]),
                1e-5,
            );
            tokens += json_u32s(&reference[ids][i]).len();
        }
        assert_eq!(v["usage"]["prompt_tokens"], tokens);
    }
    let out = gllm(&[
        "embed",
        "--model",
        dir.as_str(),
        "--prompt-name",
        "passage",
        "x",
    ]);
    let err = failure(&out);
    assert!(
        err.contains("`passage`") && err.contains("document, query"),
        "{err}"
    );
}

#[test]
fn rerank_json_with_a_decoder_reranker_matches_transformers() {
    let reference = read_json(&fixture("tiny-qwen3-reranker").join("reference.json")).unwrap();
    for q in reference["queries"].as_array().unwrap() {
        let model = match q["instruction"].as_str() {
            None => "qwen3-rerank",
            Some("Find code that answers the question") => "qwen3-rerank-code",
            Some(other) => panic!("no manifest entry for the instruction {other:?}"),
        };
        let results = q["results"].as_array().unwrap();
        let docs: Vec<&str> = results
            .iter()
            .map(|r| r["document"].as_str().unwrap())
            .collect();
        let mut args = vec![
            "rerank",
            "--model",
            model,
            "--json",
            "--query",
            q["query"].as_str().unwrap(),
        ];
        args.extend(&docs);
        let v = json_of(&gllm(&args));
        let field = |k: &str| -> Vec<f32> {
            results
                .iter()
                .map(|r| r[k].as_f64().unwrap() as f32)
                .collect()
        };
        let what = format!("{model}: {}", q["query"]);
        assert_ranked(&what, &v["results"], "logit", &field("logit"), 1e-4);
        assert_ranked(&what, &v["results"], "score", &field("score"), 1e-5);
    }
}

#[test]
fn rerank_json_matches_the_cross_encoder() {
    for (model, fixture_name) in [
        ("tiny-ce", "tiny-cross-encoder"),
        ("tiny-xlmr", "tiny-xlm-roberta-reranker"),
    ] {
        rerank_json_cases(model, fixture_name);
    }
}

fn rerank_json_cases(model: &str, fixture_name: &str) {
    let reference = read_json(&fixture(fixture_name).join("reference.json")).unwrap();
    for q in reference["queries"].as_array().unwrap() {
        let docs = json_strings(&q["documents"]);
        let mut args = vec![
            "rerank",
            "--model",
            model,
            "--json",
            "--query",
            q["query"].as_str().unwrap(),
        ];
        args.extend(docs.iter().map(String::as_str));
        let v = json_of(&gllm(&args));
        let what = format!("{model} {}", q["query"]);
        assert_ranked(
            &what,
            &v["results"],
            "logit",
            &json_f32s(&q["logits"]),
            1e-5,
        );
        assert_ranked(
            &what,
            &v["results"],
            "score",
            &json_f32s(&q["scores_sigmoid"]),
            1e-6,
        );
        let results = v["results"].as_array().unwrap();
        let mut last = f64::INFINITY;
        for r in results {
            let score = r["score"].as_f64().unwrap();
            assert!(score <= last, "results are not sorted by score");
            last = score;
        }
        // top_n keeps the best ones
        let mut args = vec![
            "rerank",
            "--model",
            model,
            "--json",
            "--top-n",
            "2",
            "--query",
            q["query"].as_str().unwrap(),
        ];
        args.extend(docs.iter().map(String::as_str));
        let top = json_of(&gllm(&args));
        assert_eq!(
            top["results"].as_array().unwrap().as_slice(),
            &results[..2.min(results.len())]
        );
    }
}

#[test]
fn generate_json_reproduces_the_greedy_reference() {
    let models = [
        ("tiny-qwen2", "tiny-qwen2"),
        ("tiny-qwen2", "tiny-qwen2-burn"),
        ("tiny-qwen3", "tiny-qwen3"),
        ("tiny-qwen3", "tiny-qwen3-burn"),
        ("tiny-qwen3", "tiny-qwen3-gguf"),
    ];
    for (fixture_name, model) in models {
        generate_json_cases(fixture_name, model);
    }
}

fn generate_json_cases(fixture_name: &str, model: &str) {
    let reference = read_json(&fixture(fixture_name).join("reference.json")).unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let v = json_of(&gllm(&[
            "generate",
            "--model",
            model,
            "--temperature",
            "0",
            "--repetition-penalty",
            "1",
            "--max-tokens",
            "24",
            "--json",
            case["prompt"].as_str().unwrap(),
        ]));
        assert_eq!(
            json_u32s(&v["token_ids"]),
            json_u32s(&case["greedy_new_ids"]),
            "{model}: {}",
            case["prompt"]
        );
        assert_eq!(v["finish_reason"], "length");
        assert_eq!(v["text"], case["greedy_text"]);
    }
}

#[test]
fn chat_with_smollm2_names_fruits() {
    // A smoke test of the chat path on a real model. The greedy answer of a 135M Q4_1
    // model to "Name three fruits." flips between near-tied tokens when the f32
    // summation order of attention changes ("grapes, oranges, orbs"); this question is
    // answered "apples, oranges, and bananas" well clear of such ties.
    let out = gllm(&[
        "chat",
        "--model",
        "smollm2",
        "--temperature",
        "0",
        "--max-tokens",
        "48",
        "What are three common fruits?",
    ]);
    let text = stdout_of(&out).to_lowercase();
    let fruits = [
        "apple",
        "banana",
        "orange",
        "grape",
        "strawberr",
        "mango",
        "pear",
        "cherr",
        "lemon",
        "kiwi",
        "pineapple",
        "peach",
        "blueberr",
    ];
    let named = fruits.iter().filter(|f| text.contains(*f)).count();
    assert!(named >= 3, "expected three fruit names in {text:?}");
}

#[test]
fn qwen_coder_raw_prompts_continue_like_the_references() {
    // Qwen's own Q4_K_M file: Q5_0, Q8_0, Q4_K and Q6_K tensors.
    let eos = gllm_testkit::coder::coder_eos().unwrap();
    for case in gllm_testkit::coder::coder_cases("prompts").unwrap() {
        let max = case.max_tokens().to_string();
        let prompt = case.json["prompt"].as_str().unwrap();
        let out = json_of(&gllm(&[
            "generate",
            "--model",
            "coder",
            "--temperature",
            "0",
            "--repetition-penalty",
            "1",
            "--max-tokens",
            &max,
            "--json",
            prompt,
        ]));
        let ids = gllm_testkit::json_u32s(&out["token_ids"]);
        case.check(&ids, &eos).unwrap();
    }
}

#[test]
fn models_lists_where_each_model_loads() {
    let out = gllm(&["models"]);
    let text = stdout_of(&out);
    assert!(text.contains("burn-bert (built-in)"), "{text}");
    assert!(text.contains("candle-qwen2 (built-in)"), "{text}");
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{id}\t")))
            .unwrap_or_else(|| panic!("{id} not listed: {text}"))
            .to_string()
    };
    assert!(
        line("tiny-qwen2").ends_with("-> candle-qwen2 on cpu"),
        "{text}"
    );
    assert!(line("smollm2").contains("gguf llama"), "{text}");
    // candle-qwen2 has no GPU in this build: the reason is given
    assert!(
        text.contains("skipped candle-qwen2 on gpu:0: was not built for device gpu:0"),
        "{text}"
    );
    assert!(line("minilm").ends_with("-> burn-bert on cpu"), "{text}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let err = failure(&gllm(&["embed", "--model", "nope", "hello"]));
    assert!(err.contains("unknown model `nope`"), "{err}");
    let err = failure(&gllm(&["generate", "--model", "tiny-bert", "hello"]));
    assert!(
        err.contains("model `tiny-bert` is a `embed` model; it cannot generate text"),
        "{err}"
    );
    let err = failure(&gllm(&[
        "generate",
        "--model",
        "tiny-qwen2",
        "--max-tokens",
        "4",
        "",
    ]));
    assert!(err.contains("the prompt is empty"), "{err}");
    let err = failure(&gllm(&[
        "generate",
        "--model",
        "tiny-qwen2",
        "--top-p",
        "0",
        "hi",
    ]));
    assert!(err.contains("top_p"), "{err}");
    let missing = Command::new(env!("CARGO_BIN_EXE_gllm"))
        .args(["--manifest", "/no/such/models.toml", "models"])
        .output()
        .unwrap();
    assert!(failure(&missing).contains("cannot read manifest /no/such/models.toml"));
    // invalid UTF-8 in an argument
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let out = Command::new(env!("CARGO_BIN_EXE_gllm"))
            .arg("--manifest")
            .arg(manifest())
            .args(["embed", "--model", "tiny-bert"])
            .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
            .output()
            .unwrap();
        let err = failure(&out);
        assert!(err.contains("invalid UTF-8"), "{err}");
    }
    // an empty document list gives no results; an empty string embeds like sentence-transformers (fixture)
    let v = json_of(&gllm(&[
        "rerank", "--model", "tiny-ce", "--json", "--query", "q",
    ]));
    assert_eq!(v["results"].as_array().unwrap().len(), 0);
}

/// Whether this machine may have a hardware GPU: a DRM render node or an NVIDIA device.
fn hardware_gpu_node() -> bool {
    let named = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    };
    named("/dev/dri", "renderD") || named("/dev", "nvidia")
}

#[test]
fn gpu_means_a_hardware_adapter_unless_software_is_asked_for() {
    // The default device order (gpu, then cpu) on tiny-bert, as `gllm models` plans it.
    let dir = std::env::temp_dir().join(format!("gllm-cli-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("models.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[models]]\nid = \"tiny-bert\"\ntask = \"embed\"\npath = \"{}\"\nbackends = [\"burn-bert\"]\ndevices = [\"gpu\", \"cpu\"]\n",
            fixture("tiny-bert").display()
        ),
    )
    .unwrap();
    let models = |software: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gllm"));
        cmd.arg("--manifest").arg(&manifest).arg("models");
        if software {
            cmd.env("GLLM_SOFTWARE_GPU", "1");
        } else {
            cmd.env_remove("GLLM_SOFTWARE_GPU");
        }
        let out = cmd.output().expect("run gllm");
        assert_no_panic(&out);
        stdout_of(&out)
    };
    // scripts/test.sh installs llvmpipe: asked for, it is gpu:0.
    let with = models(true);
    assert!(with.contains("-> burn-bert on gpu:0"), "{with}");
    if !hardware_gpu_node() {
        // Not asked for, the software rasterizer is no GPU: the CPU is chosen, and why is said.
        let without = models(false);
        assert!(without.contains("-> burn-bert on cpu"), "{without}");
        assert!(
            without
                .contains("software rasterizers are not GPUs unless GLLM_SOFTWARE_GPU=1: llvmpipe"),
            "{without}"
        );
    }
}

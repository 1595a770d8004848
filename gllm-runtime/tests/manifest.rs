//! The manifest: a valid one parses with defaults applied; each malformed one
//! fails with a message naming the file, line, model id and key.

use std::path::Path;

use gllm_api::{DType, Device, Task};
use gllm_runtime::manifest::{Manifest, ModelSource};

fn known() -> Vec<String> {
    vec!["burn-bert".into(), "candle-qwen2".into()]
}

fn fixtures() -> String {
    gllm_testkit::fixtures_dir().display().to_string()
}

fn parse(text: &str) -> Result<Manifest, String> {
    Manifest::parse(text, "models.toml", Path::new("/"), &known()).map_err(|e| e.to_string())
}

#[test]
fn a_valid_manifest_applies_defaults_and_resolves_paths() {
    let text = format!(
        r#"
[defaults]
devices = ["cpu"]
dtype = "f32"

[[models]]
id = "tiny"
task = "embed"
path = "{f}/tiny-bert"

[[models]]
id = "qwen"
task = "generate"
path = "tiny-qwen2"
backends = ["candle-qwen2"]
devices = ["gpu:1", "gpu", "cpu"]
dtype = "bf16"
[models.options]
threads = 2

[[models]]
id = "hub"
task = "rerank"
hf = "cross-encoder/ms-marco-MiniLM-L6-v2"
"#,
        f = fixtures()
    );
    let m = Manifest::parse(&text, "models.toml", Path::new(&fixtures()), &known()).unwrap();
    assert_eq!(m.models.len(), 3);
    let tiny = m.model("tiny").unwrap();
    assert_eq!(tiny.task, Task::Embed);
    assert_eq!(tiny.devices, vec![Device::CPU]);
    assert_eq!(tiny.dtype, Some(DType::F32));
    assert!(tiny.backends.is_empty());
    assert_eq!(tiny.line, 6);
    let qwen = m.model("qwen").unwrap();
    assert_eq!(
        qwen.source,
        ModelSource::Path(Path::new(&fixtures()).join("tiny-qwen2"))
    );
    assert_eq!(
        qwen.devices,
        vec![Device::gpu(1), Device::gpu(0), Device::CPU]
    );
    assert_eq!(qwen.dtype, Some(DType::Bf16));
    assert_eq!(qwen.options.get("threads").map(String::as_str), Some("2"));
    let hub = m.model("hub").unwrap();
    assert_eq!(
        hub.source,
        ModelSource::Hf {
            repo: "cross-encoder/ms-marco-MiniLM-L6-v2".into(),
            revision: "main".into(),
            file: None,
        }
    );
    assert_eq!(
        m.model("nope").unwrap_err().to_string(),
        "unknown model `nope` (the manifest has: tiny, qwen, hub)"
    );
}

#[test]
fn environment_variables_and_home_expand_in_paths() {
    // SAFETY: this test binary reads GLLM_FIXTURES_TEST_DIR nowhere else.
    unsafe { std::env::set_var("GLLM_FIXTURES_TEST_DIR", fixtures()) };
    let m = parse("[[models]]\nid = \"a\"\ntask = \"embed\"\npath = \"${GLLM_FIXTURES_TEST_DIR}/tiny-bert\"\n").unwrap();
    assert_eq!(
        m.models[0].source,
        ModelSource::Path(Path::new(&fixtures()).join("tiny-bert"))
    );
    // ${VAR:-default} falls back to the default when VAR is unset
    let text = format!(
        "[[models]]\nid = \"a\"\ntask = \"embed\"\npath = \"${{GLLM_UNSET_TEST_VAR:-{}}}/tiny-bert\"\n",
        fixtures()
    );
    let m = parse(&text).unwrap();
    assert_eq!(
        m.models[0].source,
        ModelSource::Path(Path::new(&fixtures()).join("tiny-bert"))
    );
}

#[test]
fn hf_models_name_a_revision_and_a_gguf_file() {
    let m = parse(
        "[[models]]\nid = \"q\"\ntask = \"generate\"\nhf = \"org/name-GGUF\"\nrevision = \"v1.0\"\nfile = \"sub/model-q4_0.gguf\"\n",
    )
    .unwrap();
    assert_eq!(
        m.models[0].source,
        ModelSource::Hf {
            repo: "org/name-GGUF".into(),
            revision: "v1.0".into(),
            file: Some("sub/model-q4_0.gguf".into()),
        }
    );
}

/// (manifest, expected fragments of the message)
fn malformed() -> Vec<(String, Vec<&'static str>)> {
    let f = fixtures();
    let ok = |extra: &str| {
        format!("[[models]]\nid = \"m1\"\ntask = \"embed\"\npath = \"{f}/tiny-bert\"\n{extra}")
    };
    let hub = |extra: &str| {
        format!("[[models]]\nid = \"m1\"\ntask = \"generate\"\nhf = \"org/name-GGUF\"\n{extra}")
    };
    vec![
        // 1. TOML syntax error: line given
        (
            "[[models]]\nid = \"m1\"\ntask = embed\n".to_string(),
            vec!["models.toml:3:", "string values must be quoted"],
        ),
        // 2. unknown key in a model
        (
            ok("devics = [\"cpu\"]"),
            vec!["models.toml:1:", "model `m1`", "unknown field `devics`"],
        ),
        // 3. wrong type
        (
            ok("backends = \"burn-bert\""),
            vec!["model `m1`", "invalid type", "sequence"],
        ),
        // 4. duplicate id
        (
            format!("{}\n{}", ok(""), ok("")),
            vec!["models.toml:6:", "model `m1`", "duplicate id `m1`"],
        ),
        // 5. unknown task
        (
            format!("[[models]]\nid = \"m1\"\ntask = \"embedd\"\npath = \"{f}/tiny-bert\"\n"),
            vec![
                "model `m1`",
                "`task`",
                "unknown task `embedd`",
                "embed, rerank or generate",
            ],
        ),
        // 6. unknown backend
        (
            ok("backends = [\"burn-bret\"]"),
            vec![
                "model `m1`",
                "`backends`",
                "unknown backend `burn-bret`",
                "burn-bert, candle-qwen2",
            ],
        ),
        // 7. unknown device
        (
            ok("devices = [\"tpu\"]"),
            vec!["model `m1`", "`devices`", "unknown device `tpu`"],
        ),
        // 8. missing path
        (
            format!("[[models]]\nid = \"m1\"\ntask = \"embed\"\npath = \"{f}/no-such-model\"\n"),
            vec!["model `m1`", "`path`", "no-such-model does not exist"],
        ),
        // 9. neither path nor hf
        (
            "[[models]]\nid = \"m1\"\ntask = \"embed\"\n".to_string(),
            vec!["model `m1`", "missing `path`", "`hf`"],
        ),
        // 10. both path and hf
        (
            ok("hf = \"org/name\""),
            vec!["model `m1`", "either `path` or `hf`"],
        ),
        // 11. missing id
        (
            format!("[[models]]\ntask = \"embed\"\npath = \"{f}/tiny-bert\"\n"),
            vec!["models[0]", "missing field `id`"],
        ),
        // 12. unknown dtype
        (
            ok("dtype = \"f64\""),
            vec!["model `m1`", "`dtype`", "unknown dtype `f64`"],
        ),
        // 13. unknown top-level table
        (
            "[model]\nid = \"x\"\n".to_string(),
            vec!["models.toml:1:", "unknown field `model`"],
        ),
        // 14. bad hf repo id
        (
            "[[models]]\nid = \"m1\"\ntask = \"embed\"\nhf = \"just-a-name\"\n".to_string(),
            vec!["model `m1`", "`hf`", "org/name"],
        ),
        // 15. empty backends list
        (
            ok("backends = []"),
            vec!["model `m1`", "`backends` is empty"],
        ),
        // 16. device listed twice
        (
            ok("devices = [\"cpu\", \"cpu\"]"),
            vec!["model `m1`", "listed twice"],
        ),
        // 17. unknown key in [defaults]
        (
            "[defaults]\ndevice = [\"cpu\"]\n".to_string(),
            vec!["[defaults]", "unknown field `device`"],
        ),
        // 18. empty id
        (
            format!("[[models]]\nid = \" \"\ntask = \"embed\"\npath = \"{f}/tiny-bert\"\n"),
            vec!["`id` must not be empty"],
        ),
        // 19. `file` without `hf`
        (
            ok("file = \"model-q4_0.gguf\""),
            vec!["models.toml:1:", "model `m1`", "`file` only goes with `hf`"],
        ),
        // 20. `file` that is not a .gguf file
        (
            hub("file = \"model.safetensors\""),
            vec!["models.toml:1:", "model `m1`", "`file`", "not a .gguf file"],
        ),
        // 21. `file` leaving the repo
        (
            hub("file = \"../x.gguf\""),
            vec!["model `m1`", "`file`", "not a relative path"],
        ),
        // 22. `revision` that is not a ref
        (
            hub("revision = \"../main\""),
            vec!["model `m1`", "`revision`", "not a branch, tag or commit"],
        ),
    ]
}

#[test]
fn malformed_manifests_fail_with_precise_messages() {
    let cases = malformed();
    assert!(cases.len() >= 10);
    for (i, (text, fragments)) in cases.iter().enumerate() {
        let msg = match parse(text) {
            Ok(_) => panic!("case {}: accepted:\n{text}", i + 1),
            Err(m) => m,
        };
        for f in fragments {
            assert!(
                msg.contains(f),
                "case {}: message {msg:?} lacks {f:?}",
                i + 1
            );
        }
    }
}

#[test]
fn a_missing_manifest_file_is_named() {
    let err = Manifest::from_file(Path::new("/no/such/models.toml"), &known()).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read manifest /no/such/models.toml"),
        "{err}"
    );
}

#[test]
fn a_location_becomes_an_entry_with_the_defaults() {
    let bert = format!("{}/tiny-bert", fixtures());
    let mut m = parse(&format!(
        r#"
[defaults]
devices = ["cpu"]
backends = ["burn-bert"]
max_length = 64

[[models]]
id = "tiny-bert"
task = "rerank"
path = "{}/tiny-cross-encoder"
"#,
        fixtures()
    ))
    .unwrap();
    // An id of the manifest is itself.
    assert_eq!(m.add_location("tiny-bert", None).unwrap(), "tiny-bert");
    // A directory: the task from its files, the id from its name (taken, so -2), the
    // manifest's defaults.
    let id = m.add_location(&bert, None).unwrap();
    assert_eq!(id, "tiny-bert-2");
    let e = m.model(&id).unwrap();
    assert_eq!(e.task, Task::Embed);
    assert_eq!(e.source, ModelSource::Path(bert.clone().into()));
    assert_eq!(e.devices, [Device::CPU]);
    assert_eq!(e.backends, ["burn-bert"]);
    assert_eq!(e.max_length, Some(64));
    // The same location again is the same model.
    assert_eq!(m.add_location(&bert, Some(Task::Embed)).unwrap(), id);
    assert_eq!(m.models.len(), 2);
    // What its files say it cannot do is refused.
    let err = m.add_location(&bert, Some(Task::Generate)).unwrap_err();
    assert!(
        err.to_string()
            .contains("this model serves embed, not generate"),
        "{err}"
    );
    // hf: ids need their task (nothing to read before the download).
    let err = m.add_location("hf:org/name", None).unwrap_err().to_string();
    assert!(
        err.contains("give it (--task embed|rerank|generate)"),
        "{err}"
    );
    let id = m
        .add_location("hf:org/name:q4.gguf", Some(Task::Generate))
        .unwrap();
    assert_eq!(id, "q4");
    // Neither an id nor a location: the unknown-model error.
    let err = m.add_location("nope", None).unwrap_err().to_string();
    assert!(err.contains("unknown model `nope`"), "{err}");
    // Without a manifest: the built-in defaults.
    let mut empty = Manifest::empty();
    let id = empty.add_location(&bert, None).unwrap();
    assert_eq!(
        empty.model(&id).unwrap().devices.len(),
        2,
        "GPU first, then CPU"
    );
}

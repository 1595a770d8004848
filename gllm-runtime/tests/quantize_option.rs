//! `[models.options] quantize = "int8"` through the runtime: burn-bert runs it (an
//! approximation, compared by cosine), and the decoder backends, which offer no such
//! option, refuse to load rather than run in full precision.

mod support;

use gllm_testkit::{cosine, fixture, json_f32s, json_strings, read_json};
use support::fixture_path;

fn manifest(task: &str, fixture_name: &str, backend: &str) -> String {
    format!(
        "[[models]]\nid = \"m\"\ntask = \"{task}\"\npath = \"{}\"\nbackends = [\"{backend}\"]\ndevices = [\"cpu\"]\n[models.options]\nquantize = \"int8\"\n",
        fixture_path(fixture_name)
    )
}

#[test]
fn int8_embeddings_from_text_keep_their_direction() {
    let r = read_json(&fixture("tiny-bert").join("reference.json")).unwrap();
    let h = support::runtime(&manifest("embed", "tiny-bert", "burn-bert"))
        .embedder_blocking("m")
        .unwrap();
    let got = h.embed_blocking(&json_strings(&r["sentences"])).unwrap();
    for (i, (g, want)) in got
        .iter()
        .zip(r["embeddings"].as_array().unwrap())
        .enumerate()
    {
        let c = cosine(&g.embedding, &json_f32s(want));
        assert!(c >= 0.999, "sentence {i}: cosine {c}");
    }
}

#[test]
fn decoder_backends_refuse_the_option() {
    for backend in ["candle-qwen2", "burn-qwen2"] {
        let rt = support::runtime(&manifest("generate", "tiny-qwen2", backend));
        let e = rt.generator_blocking("m").err().expect("loading must fail");
        let text = e.to_string();
        assert!(
            text.contains(&format!("{backend} has no option `quantize`")),
            "{backend}: {text}"
        );
    }
}

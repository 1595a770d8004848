//! The strict-loading suite of the decoders, driven by the tensor schema of
//! [`gllm_arch`]: every backend that loads a decoder fixture runs it, so each
//! kind of tensor the schema names is checked missing, mis-shaped and unexpected
//! in every backend, for every architecture.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use gllm_api::BackendError;
use gllm_arch::schema::{HfNaming, expected, hf_name};
use gllm_arch::{DecoderConfig, Part};

use crate::generate::DecoderFixture;
use crate::strict::{
    StoredTensor, assert_invalid_model, read_tensors, scratch_copy, write_tensors,
};

/// Loads a model directory with the backend under test (its value is dropped).
pub type Load<'a> = &'a dyn Fn(&Path) -> Result<(), BackendError>;

/// Halves the first dimension of `t`, keeping the leading bytes.
fn shrunk(t: &StoredTensor) -> Result<StoredTensor> {
    let mut shape = t.shape.clone();
    let first = shape.first_mut().context("a scalar tensor")?;
    *first /= 2;
    let bytes = shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
    Ok(StoredTensor {
        shape,
        data: t
            .data
            .get(..bytes)
            .context("shrinking past the data")?
            .to_vec(),
        ..t.clone()
    })
}

/// Writes `tensors` with `fx`'s config into a fresh directory and loads it.
fn load_copy(
    fx: DecoderFixture,
    tag: &str,
    tensors: &[StoredTensor],
    load: Load,
) -> Result<Result<(), BackendError>> {
    let dir = scratch_copy(tag, &fx.dir(), &["config.json"])?;
    write_tensors(&dir.join("model.safetensors"), tensors)?;
    let result = load(&dir);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(result)
}

/// The suite on fixture `fx` with `load` (`tag` names the backend, for scratch
/// directories):
/// - for every kind of tensor in the schema (the embedding, the final norm, each
///   tensor of a layer), a copy with it removed (from the first layer) and, for
///   matrices and layer tensors, a copy with it mis-shaped (in the last layer) are
///   refused as invalid models naming the tensor, its shape and the one expected;
/// - a tensor of a layer past the last is named unexpected;
/// - a tied model accepts a stored copy of its head, and names a mis-shaped one.
pub fn check_decoder_schema(fx: DecoderFixture, tag: &str, load: Load) -> Result<()> {
    let cfg = DecoderConfig::from_hf_file(&fx.dir().join("config.json"))?;
    let tensors = read_tensors(&fx.dir().join("model.safetensors"))?;
    let shapes = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let naming = HfNaming::detect(&shapes);
    let name = |p: Part| hf_name(p, naming);
    let last = cfg.num_hidden_layers - 1;
    let kinds: Vec<(Part, Vec<usize>)> = expected(&cfg)
        .filter(|(p, _)| !matches!(p, Part::Layer(l, _) if *l != 0))
        .collect();
    ensure!(
        kinds.len() > 8,
        "{}: only {} kinds of tensor",
        fx.name,
        kinds.len()
    );
    for (k, (part, shape)) in kinds.iter().enumerate() {
        let gone = name(*part);
        let without: Vec<StoredTensor> =
            tensors.iter().filter(|t| t.name != gone).cloned().collect();
        ensure!(
            without.len() + 1 == tensors.len(),
            "{}: no tensor `{gone}`",
            fx.name
        );
        let e = load_copy(
            fx,
            &format!("{tag}-{}-missing-{k}", fx.name),
            &without,
            load,
        )?
        .err()
        .with_context(|| format!("{}: loaded without `{gone}`", fx.name))?;
        assert_invalid_model(&e, &[&format!("missing tensor `{gone}` (shape {shape:?})")]);

        let bent = match part {
            Part::Layer(_, lp) => name(Part::Layer(last, *lp)),
            _ => gone.clone(),
        };
        let mut half = Vec::new();
        let edited: Vec<StoredTensor> = tensors
            .iter()
            .map(|t| {
                if t.name == bent {
                    let s = shrunk(t)?;
                    half = s.shape.clone();
                    Ok(s)
                } else {
                    Ok(t.clone())
                }
            })
            .collect::<Result<_>>()?;
        let e = load_copy(fx, &format!("{tag}-{}-shape-{k}", fx.name), &edited, load)?
            .err()
            .with_context(|| format!("{}: loaded with `{bent}` of shape {half:?}", fx.name))?;
        assert_invalid_model(
            &e,
            &[&format!(
                "tensor `{bent}` has shape {half:?}, expected {shape:?}"
            )],
        );
    }

    let extra = name(Part::Layer(last + 1, gllm_arch::LayerPart::InputNorm));
    let mut more = tensors.clone();
    let norm = tensors
        .iter()
        .find(|t| t.name == name(Part::Layer(0, gllm_arch::LayerPart::InputNorm)))
        .context("no input norm")?;
    more.push(StoredTensor {
        name: extra.clone(),
        ..norm.clone()
    });
    let e = load_copy(fx, &format!("{tag}-{}-extra", fx.name), &more, load)?
        .err()
        .with_context(|| format!("{}: loaded with `{extra}`", fx.name))?;
    assert_invalid_model(&e, &[&format!("unexpected tensor `{extra}`")]);

    if cfg.tie_word_embeddings {
        let embed = tensors
            .iter()
            .find(|t| t.name == name(Part::Embed))
            .context("no embedding")?;
        let head = StoredTensor {
            name: hf_name(Part::LmHead, naming),
            ..embed.clone()
        };
        let mut with_head = tensors.clone();
        with_head.push(head.clone());
        load_copy(fx, &format!("{tag}-{}-head", fx.name), &with_head, load)?
            .with_context(|| format!("{}: a stored copy of the tied head", fx.name))?;
        *with_head.last_mut().context("head")? = shrunk(&head)?;
        let e = load_copy(fx, &format!("{tag}-{}-bad-head", fx.name), &with_head, load)?
            .err()
            .context("loaded with a mis-shaped tied head")?;
        assert_invalid_model(&e, &[&format!("tensor `{}` has shape", head.name)]);
    }
    Ok(())
}

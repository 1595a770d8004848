//! The generation loop: prompt ids in, text deltas out, with sampling, EOS and
//! stop strings, context limits, prefix reuse of a sequence's KV cache, and
//! device fallback underneath (see [`ServedModel::feed`]).

use crate::error::{Result, RuntimeError};
use crate::grammar::Constraint;
use crate::sampling::{Sampler, SamplingParams, TokenLogprob, token_logprob};
use crate::served::{Sequence, ServedModel};
use crate::stream::{IncrementalDecoder, StopMatcher};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An EOS token or a stop string.
    Stop,
    /// `max_tokens` reached, or the model's context is full.
    Length,
    /// The consumer went away (stream dropped).
    Cancelled,
}

impl FinishReason {
    /// `stop`, `length` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generation {
    /// The generated text (the concatenation of every streamed delta).
    pub text: String,
    /// The generated token ids (an EOS token that ended generation is not included).
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV cache was already there (not prefilled again).
    pub cached_tokens: usize,
    /// Per generated token, when [`SamplingParams::logprobs`] asks for them.
    pub logprobs: Vec<TokenLogprob>,
}

/// Prompts are fed in chunks of this many tokens: between chunks the generation can be
/// cancelled, and a backend never sees more than this many new positions at once
/// (which bounds its attention buffers to [chunk × context]).
pub const PREFILL_CHUNK: usize = 512;

/// Runs one generation on `seq`. `on_delta` receives each piece of text, and `""`
/// between prefill chunks and before each decode step (a poll that emits nothing);
/// when it returns `false` the generation is cancelled.
/// A prompt that leaves no room in the context is refused, or with
/// [`SamplingParams::truncate_prompt`] cut in the middle, keeping up to `keep` leading
/// tokens (a chat's system turn) and the end.
pub(crate) fn run(
    model: &ServedModel,
    seq: &mut Sequence,
    prompt: &[u32],
    keep: usize,
    params: &SamplingParams,
    on_delta: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let mut gens = run_choices(model, seq, prompt, keep, params, 1, &mut |_, d| on_delta(d))?;
    gens.pop()
        .ok_or_else(|| RuntimeError::Internal("a generation gave no result".into()))
}

/// [`run`] for `n` answers to one prompt: the prompt is prefilled once, and each
/// answer starts from the same cache and the same first logits; answer `i` samples
/// with seed `seed + i` (so it equals a single request with that seed).
/// `on_delta` gets the answer's index with each piece.
pub(crate) fn run_choices(
    model: &ServedModel,
    seq: &mut Sequence,
    prompt: &[u32],
    keep: usize,
    params: &SamplingParams,
    n: usize,
    on_delta: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Vec<Generation>> {
    let result = choices(model, seq, prompt, keep, params, n.max(1), on_delta);
    seq.end_generation();
    result
}

/// Passes a piece of text on (nothing for an empty one); `false` when cancelled.
fn emit(on_delta: &mut dyn FnMut(&str) -> bool, piece: &str, text: &mut String) -> bool {
    if piece.is_empty() {
        return true;
    }
    text.push_str(piece);
    on_delta(piece)
}

/// `prompt` fitted to a context of `context` positions (see [`run`]).
fn fit(prompt: &[u32], keep: usize, context: usize, params: &SamplingParams) -> Result<Vec<u32>> {
    if prompt.len() < context {
        return Ok(prompt.to_vec());
    }
    if !params.truncate_prompt {
        return Err(RuntimeError::InvalidRequest(format!(
            "the prompt is {} tokens and the model's context {context}: no room for a new token \
             (shorten the prompt, or ask for `truncate_prompt` to cut its middle)",
            prompt.len()
        )));
    }
    // Room for the new tokens asked for (up to a quarter of the context, at least one).
    let room = context - params.max_tokens.clamp(1, (context / 4).max(1));
    let head = keep.min(room / 2);
    let mut fitted = prompt[..head].to_vec();
    fitted.extend_from_slice(&prompt[prompt.len() - (room - head)..]);
    Ok(fitted)
}

fn choices(
    model: &ServedModel,
    seq: &mut Sequence,
    prompt: &[u32],
    keep: usize,
    params: &SamplingParams,
    n: usize,
    on_delta: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Vec<Generation>> {
    params.validate().map_err(RuntimeError::InvalidRequest)?;
    if prompt.is_empty() {
        return Err(RuntimeError::InvalidRequest(
            "the prompt is empty: give at least one token of text".into(),
        ));
    }
    let info = model.active().info;
    let context = info.max_positions.max(2);
    let fitted = fit(prompt, keep, context, params)?;
    let prompt = fitted.as_slice();
    if let Some(bad) = prompt.iter().find(|t| **t as usize >= info.vocab_size) {
        return Err(RuntimeError::InvalidRequest(format!(
            "token id {bad} is outside the model's vocabulary ({})",
            info.vocab_size
        )));
    }
    // A grammar is compiled before any work: one llguidance refuses is a bad request.
    let grammar_env = match &params.grammar {
        Some(_) => Some(model.grammar()?),
        None => None,
    };
    let constraint = |i: usize| -> Result<Option<Constraint>> {
        match (&params.grammar, &grammar_env) {
            (Some(g), Some(env)) => env.constraint(g).map(Some).map_err(|e| {
                RuntimeError::InvalidRequest(if i == 0 {
                    format!("the grammar or schema cannot be used: {e}")
                } else {
                    e
                })
            }),
            _ => Ok(None),
        }
    };
    let mut first_constraint = constraint(0)?;

    // Reuse the longest shared prefix of what the cache holds; feed at least one token.
    let common = seq
        .tokens()
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt.len() - 1);
    seq.truncate(common);
    let mut logits = Vec::new();
    for chunk in prompt[common..].chunks(PREFILL_CHUNK) {
        if !on_delta(0, "") {
            return Ok(vec![Generation {
                text: String::new(),
                token_ids: Vec::new(),
                finish_reason: FinishReason::Cancelled,
                prompt_tokens: prompt.len(),
                cached_tokens: common,
                logprobs: Vec::new(),
            }]);
        }
        logits = model.feed(seq, chunk)?;
    }
    let mut gens = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            // Back to the prompt alone: the next answer starts where this one did.
            seq.truncate(prompt.len());
        }
        let mut p = params.clone();
        p.seed = params.seed.map(|s| s.wrapping_add(i as u64));
        let c = match first_constraint.take() {
            Some(c) => Some(c),
            None => constraint(i)?,
        };
        let mut g = decode(model, seq, prompt, logits.clone(), &p, c, &mut |d| {
            on_delta(i, d)
        })?;
        g.cached_tokens = common;
        let cancelled = g.finish_reason == FinishReason::Cancelled;
        gens.push(g);
        if cancelled {
            break;
        }
    }
    Ok(gens)
}

/// Samples an answer from the prompt's last `logits` on, feeding each token.
fn decode(
    model: &ServedModel,
    seq: &mut Sequence,
    prompt: &[u32],
    mut logits: Vec<f32>,
    params: &SamplingParams,
    mut constraint: Option<Constraint>,
    on_delta: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let context = model.active().info.max_positions.max(2);
    let tok = &model.text.tokenizer;
    let mut sampler = Sampler::new(params.clone());
    let mut decoder = IncrementalDecoder::new(true);
    let mut stops = StopMatcher::new(params.stop.clone());
    let mut text = String::new();
    let mut output: Vec<u32> = Vec::new();
    let mut logprobs = Vec::new();
    let mut stop_string_hit = false;
    let finish = loop {
        if let Some(c) = constraint.as_mut() {
            c.mask(&mut logits).map_err(RuntimeError::Internal)?;
        }
        sampler.penalize(&mut logits, prompt, &output);
        let next = sampler.pick(&logits);
        if model.text.eos_ids.contains(&next) {
            break FinishReason::Stop;
        }
        if let Some(k) = params.logprobs {
            logprobs.push(token_logprob(&logits, next, k));
        }
        output.push(next);
        let complete = match constraint.as_mut() {
            Some(c) => c.consume(next).map_err(RuntimeError::Internal)?,
            None => false,
        };
        let delta = decoder
            .push(tok, next)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
        let (piece, stopped) = stops.push(&delta);
        if !emit(on_delta, &piece, &mut text) {
            break FinishReason::Cancelled;
        }
        if stopped {
            stop_string_hit = true;
            break FinishReason::Stop;
        }
        if complete {
            break FinishReason::Stop;
        }
        if output.len() >= params.max_tokens || prompt.len() + output.len() >= context {
            break FinishReason::Length;
        }
        if piece.is_empty() && !on_delta("") {
            break FinishReason::Cancelled;
        }
        logits = model.feed(seq, &[next])?;
    };

    if finish != FinishReason::Cancelled && !stop_string_hit {
        let rest = decoder
            .flush(tok)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
        let (piece, stopped) = stops.push(&rest);
        emit(on_delta, &piece, &mut text);
        if !stopped {
            let tail = stops.finish();
            emit(on_delta, &tail, &mut text);
        }
    }
    Ok(Generation {
        text,
        token_ids: output,
        finish_reason: finish,
        prompt_tokens: prompt.len(),
        cached_tokens: 0,
        logprobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_over_long_prompt_is_refused_unless_truncation_is_asked_for() {
        let prompt: Vec<u32> = (0..100).collect();
        let mut p = SamplingParams::greedy(10);
        assert_eq!(fit(&prompt, 5, 101, &p).expect("fits"), prompt);
        let e = fit(&prompt, 5, 100, &p).expect_err("no room");
        assert!(
            e.to_string()
                .contains("the prompt is 100 tokens and the model's context 100"),
            "{e}"
        );
        p.truncate_prompt = true;
        // Room for 10 new tokens: 90 kept, the 5 system tokens first, then the last 85.
        let got = fit(&prompt, 5, 100, &p).expect("cut");
        assert_eq!(got.len(), 90);
        assert_eq!(&got[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(&got[5..], &prompt[15..]);
        // Asking for more new tokens than a quarter of the context leaves three quarters.
        p.max_tokens = 1000;
        assert_eq!(
            fit(&prompt, 0, 100, &p).expect("cut"),
            prompt[25..].to_vec()
        );
    }
}

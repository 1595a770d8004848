//! Property tests (proptest) of what every generated token passes through: the
//! sampler (it only ever picks a token its parameters allow, greedy is the argmax, a
//! seed fixes the draw, log-probabilities are a distribution), stop strings (however
//! the text is split into deltas, what is emitted is the text cut before the first
//! stop string) and UTF-8-safe streaming (token by token, the deltas concatenate to
//! the decode of the whole, also when characters are split across byte tokens).

use std::sync::OnceLock;

use gllm_runtime::sampling::{MIN_TEMPERATURE, Sampler, SamplingParams, argmax, token_logprob};
use gllm_runtime::stream::{IncrementalDecoder, StopMatcher};
use gllm_runtime::tokenizer::TextTokenizer;
use proptest::prelude::*;

/// Logits with some tokens masked out (-inf, as a grammar masks them) and, rarely, NaN.
fn logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            8 => -30.0f32..30.0,
            1 => Just(f32::NEG_INFINITY),
        ],
        1..64,
    )
}

fn params() -> impl Strategy<Value = SamplingParams> {
    (
        prop_oneof![Just(0.0f32), 1e-9f32..1e-3, 0.05f32..3.0],
        prop_oneof![Just(0usize), 1usize..10],
        prop_oneof![Just(1.0f32), 0.01f32..1.0],
        prop_oneof![Just(0.0f32), 0.0f32..1.0],
        any::<u64>(),
    )
        .prop_map(|(temperature, top_k, top_p, min_p, seed)| SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            seed: Some(seed),
            ..SamplingParams::default()
        })
}

proptest! {
    #[test]
    fn the_sampler_picks_only_tokens_its_parameters_allow(l in logits(), p in params()) {
        let mut sampler = Sampler::new(p.clone());
        let id = sampler.pick(&l) as usize;
        prop_assert!(id < l.len());
        let finite: Vec<f32> = l.iter().copied().filter(|x| x.is_finite()).collect();
        if finite.is_empty() {
            return Ok(());
        }
        // A masked token is never picked while another is allowed.
        prop_assert!(l[id].is_finite(), "picked masked token {id} of {l:?}");
        if p.temperature < MIN_TEMPERATURE || p.top_k == 1 {
            prop_assert_eq!(id as u32, argmax(&l));
            return Ok(());
        }
        // Within the top k (ties at the k-th logit included).
        if p.top_k > 0 {
            let mut sorted = finite.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[(p.top_k - 1).min(sorted.len() - 1)];
            prop_assert!(l[id] >= kth, "{} below the {}-th logit {kth}", l[id], p.top_k);
        }
        // At least min_p times as likely as the most likely token (after temperature).
        if p.min_p > 0.0 {
            let max = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let ratio = (((l[id] - max) / p.temperature) as f64).exp();
            prop_assert!(ratio >= p.min_p as f64 * (1.0 - 1e-4), "ratio {ratio} < min_p {}", p.min_p);
        }
    }

    #[test]
    fn one_seed_gives_one_sequence_of_draws(l in logits(), p in params()) {
        let (mut a, mut b) = (Sampler::new(p.clone()), Sampler::new(p));
        let draws_a: Vec<u32> = (0..8).map(|_| a.pick(&l)).collect();
        let draws_b: Vec<u32> = (0..8).map(|_| b.pick(&l)).collect();
        prop_assert_eq!(draws_a, draws_b);
    }

    #[test]
    fn a_positive_infinite_logit_is_certain(mut l in logits(), p in params(), at in any::<prop::sample::Index>()) {
        let i = at.index(l.len());
        l[i] = f32::INFINITY;
        let first = l.iter().position(|x| *x == f32::INFINITY).unwrap_or(i);
        prop_assert_eq!(Sampler::new(p).pick(&l) as usize, first);
    }

    #[test]
    fn log_probabilities_form_a_distribution(l in logits(), top in 0usize..25) {
        let id = argmax(&l);
        let lp = token_logprob(&l, id, top);
        let all = token_logprob(&l, id, l.len());
        let finite = l.iter().filter(|x| x.is_finite()).count();
        prop_assert_eq!(all.top.len(), finite);
        prop_assert_eq!(lp.top.len(), top.min(finite));
        if finite == 0 {
            return Ok(());
        }
        let mass: f64 = all.top.iter().map(|(_, v)| (*v as f64).exp()).sum();
        prop_assert!((mass - 1.0).abs() < 1e-4, "mass {mass}");
        prop_assert!(all.top.iter().all(|(_, v)| *v <= 1e-6));
        prop_assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1), "{:?}", lp.top);
        // The argmax is the most likely token, and its log-probability is reported alike.
        prop_assert_eq!(lp.top.first().map(|t| t.1), (top > 0).then_some(lp.logprob));
    }
}

/// Text over a small alphabet (so that stop strings occur), with multi-byte characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!['a', 'b', 'c', ' ', 'é', '€', '😀']),
        0..max,
    )
    .prop_map(|v| v.into_iter().collect())
}

/// Cuts `s` into deltas at the given character positions.
fn split(s: &str, cuts: &[prop::sample::Index]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(chars.len() + 1)).collect();
    at.sort_unstable();
    at.push(chars.len());
    let mut out = Vec::new();
    let mut from = 0;
    for to in at {
        out.push(chars[from..to].iter().collect());
        from = to;
    }
    out
}

proptest! {
    #[test]
    fn streamed_stop_strings_cut_exactly_where_the_whole_text_is_cut(
        s in text(60),
        stops in prop::collection::vec(text(4).prop_filter("non-empty", |t| !t.is_empty()), 1..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        // The whole text is cut before the stop string that completes first (of those
        // completing together, the one starting first), as a character-by-character
        // generation would meet it.
        let first = stops
            .iter()
            .filter_map(|t| s.find(t.as_str()).map(|at| (at + t.len(), at)))
            .min()
            .map(|(_, at)| at);
        let want = &s[..first.unwrap_or(s.len())];
        let mut m = StopMatcher::new(stops.clone());
        let mut got = String::new();
        let mut hit = false;
        for delta in split(&s, &cuts) {
            let (out, stop) = m.push(&delta);
            got.push_str(&out);
            if stop {
                hit = true;
                break;
            }
        }
        if !hit {
            got.push_str(&m.finish());
        }
        prop_assert_eq!(hit, first.is_some());
        prop_assert_eq!(got.as_str(), want);
    }
}

fn tokenizer() -> &'static TextTokenizer {
    static TOK: OnceLock<TextTokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = gllm_testkit::fixture("tiny-qwen2").join("tokenizer.json");
        TextTokenizer::from_file(&path).expect("tiny-qwen2's tokenizer")
    })
}

/// Any text, weighted towards what splits into byte tokens (rare CJK, emoji, symbols).
fn unicode_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range(' ', '~'),
            2 => prop::char::range('\u{4e00}', '\u{9fff}'),
            2 => prop::char::range('\u{1f300}', '\u{1faff}'),
            1 => prop::char::range('\u{13000}', '\u{1342f}'),
            1 => any::<char>(),
        ],
        0..40,
    )
    .prop_map(|v| v.into_iter().collect())
}

/// Every delta of `ids` pushed one by one, then the flush.
fn stream(ids: &[u32], skip_special: bool) -> Vec<String> {
    let tok = tokenizer();
    let mut d = IncrementalDecoder::new(skip_special);
    let mut out: Vec<String> = ids
        .iter()
        .map(|&id| d.push(tok, id).expect("push"))
        .collect();
    out.push(d.flush(tok).expect("flush"));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn streamed_text_concatenates_to_the_decode_of_the_whole(s in unicode_text()) {
        let tok = tokenizer();
        let ids = tok.encode(&s, false).expect("encode").ids;
        let whole = tok.decode(&ids, false).expect("decode");
        let deltas = stream(&ids, false);
        prop_assert_eq!(deltas.concat(), whole.clone());
        // No delta shows a replacement character the whole text does not have.
        if !whole.contains('\u{FFFD}') {
            prop_assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
        }
    }

    #[test]
    fn any_token_ids_stream_without_error_in_bounded_steps(
        ids in prop::collection::vec(0u32..151_000, 0..48),
    ) {
        // Stray continuation bytes never complete a character: they are released
        // lossily, at most MAX_HELD_TOKENS held at a time, never lost entirely.
        let tok = tokenizer();
        let deltas = stream(&ids, true);
        let mut held = 0;
        for d in &deltas[..ids.len()] {
            held = if d.is_empty() { held + 1 } else { 0 };
            prop_assert!(held <= gllm_runtime::stream::MAX_HELD_TOKENS + 1);
        }
        let whole = tok.decode(&ids, true).expect("decode");
        let visible = |t: &str| t.chars().filter(|c| *c != '\u{FFFD}').collect::<String>();
        prop_assert_eq!(visible(&deltas.concat()), visible(&whole));
    }
}

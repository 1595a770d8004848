//! Choosing the next token from logits: repetition/presence/frequency penalties,
//! temperature, top-k, top-p, min-p, and a seeded random generator so that the
//! same seed gives the same tokens. Temperature 0 is greedy (argmax).

use std::collections::HashMap;

/// How to pick tokens and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0 = off).
    pub min_p: f32,
    /// transformers' repetition penalty over prompt and output (1 = off).
    pub repetition_penalty: f32,
    /// OpenAI presence penalty over the output (0 = off).
    pub presence_penalty: f32,
    /// OpenAI frequency penalty over the output (0 = off).
    pub frequency_penalty: f32,
    /// Seed for reproducible sampling; `None` draws one.
    pub seed: Option<u64>,
    /// Most new tokens to generate.
    pub max_tokens: usize,
    /// Strings that end generation; they are not part of the output.
    pub stop: Vec<String>,
    /// A prompt that leaves no room in the context is cut instead of refused: its
    /// start (a chat's system turn) and its end are kept, the middle dropped.
    /// Off by default: such a prompt is an invalid request naming both lengths.
    pub truncate_prompt: bool,
    /// Report the log-probability of each generated token and of this many most
    /// likely alternatives (at most [`MAX_TOP_LOGPROBS`]); `None` reports none.
    pub logprobs: Option<usize>,
    /// Constrain the output to a grammar (JSON Schema, any JSON object, Lark).
    pub grammar: Option<crate::grammar::Grammar>,
}

/// Most alternatives [`SamplingParams::logprobs`] may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            max_tokens: 256,
            stop: Vec::new(),
            truncate_prompt: false,
            logprobs: None,
            grammar: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_tokens,
            ..Self::default()
        }
    }

    /// Checks the ranges; the message names the parameter.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return Err(format!(
                "presence_penalty must be in [-2, 2], got {}",
                self.presence_penalty
            ));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return Err(format!(
                "frequency_penalty must be in [-2, 2], got {}",
                self.frequency_penalty
            ));
        }
        if self.max_tokens == 0 {
            return Err("max_tokens must be at least 1".into());
        }
        if self.stop.iter().any(String::is_empty) {
            return Err("stop strings must not be empty".into());
        }
        if let Some(k) = self.logprobs.filter(|k| *k > MAX_TOP_LOGPROBS) {
            return Err(format!(
                "top_logprobs may be at most {MAX_TOP_LOGPROBS}, not {k}"
            ));
        }
        if let Some(long) = self.stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
            return Err(format!(
                "a stop string may be at most {MAX_STOP_BYTES} bytes, not {}",
                long.len()
            ));
        }
        Ok(())
    }

    /// True when this picks the argmax: `top_k` 1, or a temperature below
    /// [`MIN_TEMPERATURE`] (where dividing by it would overflow the logits and
    /// sampling would amount to the argmax anyway, as vLLM treats them).
    pub fn is_greedy(&self) -> bool {
        self.temperature < MIN_TEMPERATURE || self.top_k == 1
    }
}

/// A request's changes to a model's default [`SamplingParams`] (from
/// `generation_config.json`): each field that is `Some` replaces the default. The CLI's
/// flags and the server's request fields both arrive as this.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingOverrides {
    /// Most new tokens.
    pub max_tokens: Option<usize>,
    /// 0 = greedy.
    pub temperature: Option<f32>,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: Option<usize>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Relative probability floor.
    pub min_p: Option<f32>,
    /// transformers' repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Stop strings (replace the defaults, which are none).
    pub stop: Option<Vec<String>>,
    /// Cut an over-long prompt instead of refusing it.
    pub truncate_prompt: Option<bool>,
}

impl SamplingOverrides {
    /// `defaults` with these overrides applied (not yet validated: see
    /// [`SamplingParams::validate`]).
    pub fn apply(&self, defaults: SamplingParams) -> SamplingParams {
        let d = defaults;
        SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            seed: self.seed.or(d.seed),
            max_tokens: self.max_tokens.unwrap_or(d.max_tokens),
            stop: self.stop.clone().unwrap_or(d.stop),
            truncate_prompt: self.truncate_prompt.unwrap_or(d.truncate_prompt),
            logprobs: d.logprobs,
            grammar: d.grammar,
        }
    }
}

/// The longest stop string (its matcher holds back up to this much text).
pub const MAX_STOP_BYTES: usize = 1024;

/// Temperatures below this sample greedily.
pub const MIN_TEMPERATURE: f32 = 1e-5;

/// Picks tokens according to [`SamplingParams`], with its own random state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    /// A sampler seeded from `params.seed` (or from the clock and process when none).
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(entropy_seed);
        Self {
            params,
            rng: Rng::new(seed),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `prompt` and `output` are the ids so far (for penalties).
    /// `logits` is modified in place.
    pub fn sample(&mut self, logits: &mut [f32], prompt: &[u32], output: &[u32]) -> u32 {
        self.penalize(logits, prompt, output);
        self.pick(logits)
    }

    /// Applies the repetition, presence and frequency penalties to `logits`.
    pub fn penalize(&self, logits: &mut [f32], prompt: &[u32], output: &[u32]) {
        apply_penalties(logits, &self.params, prompt, output);
    }

    /// Picks a token from logits that are already penalized.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        // A +inf logit is certain (its softmax would take all the mass): the first one wins.
        if logits.contains(&f32::INFINITY) {
            return argmax(logits);
        }
        let t = self.params.temperature;
        // Candidates (id, logit), most likely first, cut by top-k.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| (i as u32, *l / t))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        let k = if self.params.top_k == 0 {
            cand.len()
        } else {
            self.params.top_k.min(cand.len())
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            cand.truncate(k);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|(_, l)| ((l - max) as f64).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        // top-p: the smallest prefix whose mass reaches top_p (at least one token).
        let mut keep = probs.len();
        if self.params.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= self.params.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        // min-p: relative to the most likely token.
        if self.params.min_p > 0.0 {
            let floor = probs[0] * self.params.min_p as f64;
            keep = keep.min(probs.iter().take_while(|p| **p >= floor).count().max(1));
        }
        probs.truncate(keep);
        let mass: f64 = probs.iter().sum();
        let mut r = self.rng.next_f64() * mass;
        for (i, p) in probs.iter().enumerate() {
            if r < *p {
                return cand[i].0;
            }
            r -= p;
        }
        cand[keep - 1].0
    }
}

/// The log-probability of a generated token, with the most likely alternatives at
/// that step (from the log-softmax of the logits the sampler saw: after penalties
/// and any grammar mask, before temperature).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenLogprob {
    /// The token picked.
    pub id: u32,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// [`TokenLogprob`] of token `id` under `logits`, with `top` alternatives.
pub fn token_logprob(logits: &[f32], id: u32, top: usize) -> TokenLogprob {
    let max = logits
        .iter()
        .copied()
        .filter(|l| !l.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    let lse_shift: f64 = if max.is_finite() {
        logits
            .iter()
            .filter(|l| l.is_finite())
            .map(|l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln()
    } else {
        0.0
    };
    let log_prob = |l: f32| -> f32 {
        if max == f32::INFINITY {
            // +inf logits share all the mass.
            let n = logits.iter().filter(|l| **l == f32::INFINITY).count() as f32;
            return if l == f32::INFINITY {
                -n.ln()
            } else {
                f32::NEG_INFINITY
            };
        }
        if !l.is_finite() {
            return f32::NEG_INFINITY;
        }
        (l - max) - lse_shift as f32
    };
    let mut best: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_nan() && **l > f32::NEG_INFINITY)
        .map(|(i, l)| (i as u32, *l))
        .collect();
    let k = top.min(best.len());
    if k > 0 && k < best.len() {
        best.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    best.truncate(k);
    best.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    TokenLogprob {
        id,
        logprob: logits
            .get(id as usize)
            .map_or(f32::NEG_INFINITY, |l| log_prob(*l)),
        top: best.into_iter().map(|(i, l)| (i, log_prob(l))).collect(),
    }
}

/// Index of the largest logit (the first one on ties), as `torch.argmax`.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

fn apply_penalties(logits: &mut [f32], p: &SamplingParams, prompt: &[u32], output: &[u32]) {
    if p.repetition_penalty != 1.0 {
        let mut seen = std::collections::HashSet::new();
        for &id in prompt.iter().chain(output) {
            if seen.insert(id)
                && let Some(l) = logits.get_mut(id as usize)
            {
                *l = if *l < 0.0 {
                    *l * p.repetition_penalty
                } else {
                    *l / p.repetition_penalty
                };
            }
        }
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &id in output {
            *counts.entry(id).or_default() += 1;
        }
        for (id, n) in counts {
            if let Some(l) = logits.get_mut(id as usize) {
                *l -= p.presence_penalty + p.frequency_penalty * n as f32;
            }
        }
    }
}

fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}

/// xoshiro256** seeded through splitmix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(SamplingParams { seed: Some(7), ..p })
    }

    /// Draws many tokens and returns the set of distinct ids seen.
    fn support(p: SamplingParams, logits: &[f32]) -> Vec<u32> {
        let mut s = sampler(p);
        let mut seen: Vec<u32> = (0..2000)
            .map(|_| s.sample(&mut logits.to_vec(), &[], &[]))
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }

    #[test]
    fn stop_strings_are_bounded() {
        let mut p = SamplingParams::greedy(4);
        p.stop = vec!["x".repeat(MAX_STOP_BYTES)];
        assert!(p.validate().is_ok());
        p.stop = vec!["x".repeat(MAX_STOP_BYTES + 1)];
        let e = p.validate().expect_err("too long");
        assert!(e.contains("at most 1024 bytes, not 1025"), "{e}");
    }

    #[test]
    fn tiny_temperatures_are_greedy_and_infinite_logits_win() {
        let mut logits = vec![0.5f32, 3.0, -1.0, 2.9];
        for t in [1e-38f32, 1e-7, 0.0] {
            let mut s = Sampler::new(SamplingParams {
                temperature: t,
                seed: Some(7),
                ..Default::default()
            });
            assert!(s.params().is_greedy(), "temperature {t}");
            for _ in 0..20 {
                assert_eq!(
                    s.sample(&mut logits.clone(), &[], &[]),
                    1,
                    "temperature {t}"
                );
            }
        }
        logits[2] = f32::INFINITY;
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            seed: Some(7),
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut logits.clone(), &[], &[]), 2);
        }
        // -inf and NaN logits are never picked.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            seed: Some(3),
            ..Default::default()
        });
        for _ in 0..50 {
            let pick = s.sample(&mut [f32::NEG_INFINITY, 0.0, f32::NAN, 0.1], &[], &[]);
            assert!(pick == 1 || pick == 3, "{pick}");
        }
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let defaults = SamplingParams {
            temperature: 0.7,
            top_k: 20,
            repetition_penalty: 1.05,
            stop: vec!["END".into()],
            ..SamplingParams::default()
        };
        assert_eq!(
            SamplingOverrides::default().apply(defaults.clone()),
            defaults
        );
        let o = SamplingOverrides {
            temperature: Some(0.0),
            max_tokens: Some(24),
            seed: Some(3),
            stop: Some(vec![]),
            ..SamplingOverrides::default()
        };
        let p = o.apply(defaults.clone());
        assert_eq!(
            p,
            SamplingParams {
                temperature: 0.0,
                max_tokens: 24,
                seed: Some(3),
                stop: vec![],
                ..defaults
            }
        );
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = sampler(SamplingParams::greedy(1));
        assert_eq!(s.sample(&mut [0.1, 2.5, -1.0, 2.4], &[], &[]), 1);
        // ties go to the first index, as torch.argmax
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn top_k_keeps_only_the_k_best() {
        let logits = [1.0, 4.0, 3.0, 2.0, 0.0];
        let p = SamplingParams {
            top_k: 2,
            ..Default::default()
        };
        assert_eq!(support(p, &logits), vec![1, 2]);
        let p = SamplingParams {
            top_k: 1,
            temperature: 5.0,
            ..Default::default()
        };
        assert_eq!(support(p, &logits), vec![1]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities 0.5, 0.3, 0.15, 0.05
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let p = SamplingParams {
            top_p: 0.75,
            ..Default::default()
        };
        assert_eq!(support(p, &logits), vec![0, 1]);
        let p = SamplingParams {
            top_p: 0.5,
            ..Default::default()
        };
        assert_eq!(support(p, &logits), vec![0]);
        let p = SamplingParams {
            top_p: 0.9,
            ..Default::default()
        };
        assert_eq!(support(p, &logits), vec![0, 1, 2]);
    }

    #[test]
    fn min_p_drops_tokens_below_the_relative_floor() {
        // relative to 0.5: floor 0.25 keeps 0.5 and 0.3 only
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let p = SamplingParams {
            min_p: 0.5,
            ..Default::default()
        };
        assert_eq!(support(p, &logits), vec![0, 1]);
    }

    #[test]
    fn sampling_frequencies_follow_the_distribution() {
        let logits: Vec<f32> = [0.7f32, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let mut s = sampler(SamplingParams::default());
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[s.sample(&mut logits.clone(), &[], &[]) as usize] += 1;
        }
        let freq: Vec<f64> = counts.iter().map(|c| *c as f64 / 20_000.0).collect();
        assert!((freq[0] - 0.7).abs() < 0.02, "{freq:?}");
        assert!((freq[1] - 0.2).abs() < 0.02, "{freq:?}");
        assert!((freq[2] - 0.1).abs() < 0.02, "{freq:?}");
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut logits = [2.0, -2.0, 1.0];
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy(1)
        };
        apply_penalties(&mut logits, &p, &[0, 1], &[1]);
        assert_eq!(logits, [1.0, -4.0, 1.0]);
        // penalising token 0 (2.0 -> 1.0) moves the argmax to token 2 (1.5)
        let mut s = Sampler::new(p);
        assert_eq!(s.sample(&mut [2.0, -2.0, 1.5], &[0], &[]), 2);
    }

    #[test]
    fn presence_and_frequency_penalties_follow_openai() {
        let mut logits = [3.0, 3.0, 3.0];
        let p = SamplingParams {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplingParams::greedy(1)
        };
        apply_penalties(&mut logits, &p, &[2], &[0, 0, 1]);
        assert_eq!(logits, [3.0 - 0.5 - 0.5, 3.0 - 0.5 - 0.25, 3.0]);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..Default::default()
            });
            (0..64)
                .map(|_| s.sample(&mut logits.clone(), &[], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn validate_names_the_parameter() {
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("top_p"));
        let bad = SamplingParams {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("temperature"));
        let bad = SamplingParams {
            max_tokens: 0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_tokens"));
    }
}

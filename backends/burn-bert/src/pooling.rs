//! Sentence-transformers pooling over the hidden states of one input.

/// Which poolings are on; the output concatenates them in sentence-transformers' order:
/// cls, max, mean, mean_sqrt_len, weightedmean, lasttoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pooling {
    /// The first token (`[CLS]`).
    pub cls: bool,
    /// Element-wise maximum over the tokens.
    pub max: bool,
    /// Mean over the tokens.
    pub mean: bool,
    /// Sum over the tokens divided by the square root of their number.
    pub mean_sqrt_len: bool,
    /// Mean weighted by position (1, 2, …).
    pub weighted_mean: bool,
    /// The last token.
    pub last_token: bool,
}

impl Pooling {
    /// Mean pooling alone: sentence-transformers' default.
    pub const MEAN: Pooling = Pooling {
        cls: false,
        max: false,
        mean: true,
        mean_sqrt_len: false,
        weighted_mean: false,
        last_token: false,
    };

    /// How many poolings are on (the output is that many times the hidden size).
    pub fn count(&self) -> usize {
        [
            self.cls,
            self.max,
            self.mean,
            self.mean_sqrt_len,
            self.weighted_mean,
            self.last_token,
        ]
        .iter()
        .filter(|on| **on)
        .count()
    }

    /// Pools `tokens` (row-major `[n, hidden]`, only the real tokens of one input) into one row.
    pub fn pool(&self, tokens: &[f32], hidden: usize) -> Vec<f32> {
        let n = tokens.len() / hidden.max(1);
        let rows = || tokens.chunks_exact(hidden);
        let mut out = Vec::with_capacity(self.count() * hidden);
        if self.cls {
            out.extend_from_slice(&tokens[..hidden.min(tokens.len())]);
        }
        if self.max {
            let mut m = vec![f32::NEG_INFINITY; hidden];
            for row in rows() {
                for (m, x) in m.iter_mut().zip(row) {
                    *m = m.max(*x);
                }
            }
            if n == 0 {
                m.iter_mut().for_each(|v| *v = -1e9);
            }
            out.extend(m);
        }
        if self.mean || self.mean_sqrt_len {
            let mut sum = vec![0.0f32; hidden];
            for row in rows() {
                for (s, x) in sum.iter_mut().zip(row) {
                    *s += *x;
                }
            }
            // sentence-transformers clamps the token count at 1e-9.
            let count = (n as f32).max(1e-9);
            if self.mean {
                out.extend(sum.iter().map(|s| s / count));
            }
            if self.mean_sqrt_len {
                let root = count.sqrt();
                out.extend(sum.iter().map(|s| s / root));
            }
        }
        if self.weighted_mean {
            let mut sum = vec![0.0f32; hidden];
            let mut weights = 0.0f32;
            for (i, row) in rows().enumerate() {
                let w = (i + 1) as f32;
                weights += w;
                for (s, x) in sum.iter_mut().zip(row) {
                    *s += *x * w;
                }
            }
            let weights = weights.max(1e-9);
            out.extend(sum.iter().map(|s| s / weights));
        }
        if self.last_token {
            match n {
                0 => out.extend(std::iter::repeat_n(0.0, hidden)),
                _ => out.extend_from_slice(&tokens[(n - 1) * hidden..n * hidden]),
            }
        }
        out
    }
}

/// Divides `v` by its L2 norm (at least 1e-12), as `torch.nn.functional.normalize`.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenates_in_sentence_transformers_order() {
        let tokens = [1.0, -2.0, 3.0, 4.0]; // two tokens, hidden 2
        let p = Pooling {
            cls: true,
            max: true,
            mean: true,
            mean_sqrt_len: true,
            weighted_mean: true,
            last_token: true,
        };
        let out = p.pool(&tokens, 2);
        let s2 = 2f32.sqrt();
        let want = [
            1.0,
            -2.0, // cls
            3.0,
            4.0, // max
            2.0,
            1.0, // mean
            4.0 / s2,
            2.0 / s2, // mean_sqrt_len
            (1.0 + 6.0) / 3.0,
            (-2.0 + 8.0) / 3.0, // weighted mean
            3.0,
            4.0, // last token
        ];
        assert_eq!(out.len(), want.len());
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut v = [3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
    }
}

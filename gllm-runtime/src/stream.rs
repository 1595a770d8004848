//! Streaming text: turning generated token ids into UTF-8 text deltas, and
//! holding back text that may be the start of a stop string.

use crate::tokenizer::{TextTokenizer, TokenizerError};

/// The most tokens [`IncrementalDecoder`] holds back waiting for a character to
/// complete (a character is at most 4 bytes; byte-level tokens carry at least one).
pub const MAX_HELD_TOKENS: usize = 8;

/// Decodes a growing list of token ids into text deltas that are always valid
/// UTF-8 and concatenate to the decode of the whole list, also when a character's
/// bytes are split across tokens (byte-level BPE).
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special: bool,
}

impl IncrementalDecoder {
    /// A decoder; `skip_special` drops special tokens from the text.
    pub fn new(skip_special: bool) -> Self {
        Self {
            skip_special,
            ..Self::default()
        }
    }

    /// Adds one token and returns the text it completes (possibly empty, when it
    /// ends in the middle of a character).
    /// Tokens that never complete a character (a model emitting stray UTF-8
    /// continuation bytes) are held back at most [`MAX_HELD_TOKENS`] at a time, then
    /// released lossily, so each step decodes a bounded window.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let prefix = tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let text = tok.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        let complete =
            text.len() > prefix.len() && !text.ends_with('\u{FFFD}') && text.starts_with(&prefix);
        let held = self.ids.len() - self.read_offset;
        if complete || held > MAX_HELD_TOKENS {
            let delta = text.get(prefix.len()..).unwrap_or("").to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Text not yet returned (an incomplete character at the end, decoded lossily).
    pub fn flush(&mut self, tok: &TextTokenizer) -> Result<String, TokenizerError> {
        let prefix = tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let text = tok.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(text.get(prefix.len()..).unwrap_or("").to_string())
    }
}

/// Finds stop strings in streamed text. Text that could still become a stop
/// string is held back; the stop string itself is never emitted.
///
/// The stop string that completes first ends the text, as it would end a
/// generation read character by character: of stops `["a", "caé"]` in "caé…",
/// "a" (complete at "ca") wins over "caé", which starts earlier but completes
/// later. Of stops completing at the same character, the longer (earlier-starting)
/// one is cut. So the result does not depend on how the text arrives in pieces.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// A matcher for these stop strings (none: everything passes through).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
        }
    }

    /// Adds text; returns what may be emitted now, and whether a stop string was hit
    /// (then nothing after it is ever emitted).
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (delta.to_string(), false);
        }
        self.pending.push_str(delta);
        // (end, start) of each stop's first occurrence; the first to complete wins.
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at + s.len(), at)))
            .min();
        if let Some((_, pos)) = hit {
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Emit up to the first position from which the rest may begin a stop string.
        let cut = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// The text held back, at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_that_never_complete_a_character_are_released_in_bounded_steps() {
        let path = gllm_testkit::fixture("tiny-qwen2").join("tokenizer.json");
        let tok = TextTokenizer::from_file(&path).expect("tiny-qwen2's tokenizer");
        // A rare 4-byte character is split into byte tokens; its first one is an
        // incomplete character on its own.
        let (text, ids) = ["𓀀", "𒀀", "\u{E0001}", "\u{10FFFD}"]
            .iter()
            .map(|c| (*c, tok.encode(c, false).expect("encodes").ids))
            .find(|(_, ids)| ids.len() > 1)
            .expect("a character the vocabulary splits into byte tokens");
        let partial = ids[0];
        let mut d = IncrementalDecoder::new(true);
        let mut out = String::new();
        let mut released_early = false;
        for i in 0..200 {
            let delta = d.push(&tok, partial).expect("decodes");
            released_early |= !delta.is_empty() && i < 199;
            out.push_str(&delta);
        }
        out.push_str(&d.flush(&tok).expect("flushes"));
        assert!(released_early, "everything was held back until the end");
        assert!(
            !out.is_empty() && out.chars().all(|c| c == '\u{FFFD}'),
            "{out:?}"
        );
        // A character completed within the window is still whole.
        let mut d = IncrementalDecoder::new(true);
        let decoded: String = ids
            .iter()
            .map(|&id| d.push(&tok, id).expect("decodes"))
            .collect();
        assert_eq!(decoded, text);
    }

    #[test]
    fn stop_string_split_across_deltas_is_not_emitted() {
        let mut m = StopMatcher::new(vec!["</end>".into()]);
        let mut out = String::new();
        let mut stopped = false;
        for d in ["Hello <", "/e", "nd> world"] {
            let (o, s) = m.push(d);
            out.push_str(&o);
            if s {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert_eq!(out, "Hello ");
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_match() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("abc ST"), ("abc ".to_string(), false));
        assert_eq!(m.push("ay"), ("STay".to_string(), false));
        assert_eq!(m.push("S"), (String::new(), false));
        assert_eq!(m.finish(), "S");
    }

    #[test]
    fn the_stop_string_completed_first_wins_however_the_text_arrives() {
        // "caé" starts first but "a" completes first (proptest's counterexample).
        for pieces in [&["caéaaaaaaa"][..], &["ca", "éaaaaaaa"], &["c", "a", "é"]] {
            let mut m = StopMatcher::new(vec!["a".into(), "caé".into()]);
            let mut out = String::new();
            for p in pieces {
                let (o, stop) = m.push(p);
                out.push_str(&o);
                if stop {
                    break;
                }
            }
            assert_eq!(out, "c", "{pieces:?}");
        }
        // Completing together, the longer stop is cut whole.
        let mut m = StopMatcher::new(vec!["b".into(), "ab".into()]);
        assert_eq!(m.push("xab"), ("x".to_string(), true));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let mut m = StopMatcher::new(vec!["世界!".into()]);
        assert_eq!(m.push("你好世"), ("你好".to_string(), false));
        assert_eq!(m.push("界!再见"), (String::new(), true));
    }
}

//! A model-wide store of KV caches keyed by the tokens they hold, so that a request
//! whose prompt begins as an earlier one did (a chat's next turn) prefills only what
//! is new. Lookup takes the entry sharing the longest prefix with the prompt and
//! copies it ([`KvCache::try_clone`]); a finished generation leaves its cache in the
//! store. Entries are evicted least recently used first to stay within the byte
//! budget. A backend whose caches cannot be copied gets no prompt cache.
//!
//! It never changes an output: a reused prefix holds the keys and values that
//! prefilling the same tokens computes.

use std::sync::Mutex;

use gllm_api::KvCache;

/// Prefixes shorter than this are not worth a copy.
const MIN_REUSE: usize = 16;

/// Counters of a prompt cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptCacheStats {
    /// Lookups that reused a prefix.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Prompt tokens reused instead of prefilled, over all hits.
    pub reused_tokens: u64,
    /// Bytes the entries hold now.
    pub bytes: usize,
    /// Entries held now.
    pub entries: usize,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
}

struct Entry {
    /// The backend instance (fail-over epoch) that made the cache.
    epoch: u64,
    tokens: Vec<u32>,
    cache: Box<dyn KvCache>,
    bytes: usize,
    last_used: u64,
}

struct Inner {
    entries: Vec<Entry>,
    clock: u64,
    stats: PromptCacheStats,
}

/// See the module docs.
pub(crate) struct PromptCache {
    budget: usize,
    inner: Mutex<Inner>,
}

impl PromptCache {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                clock: 0,
                stats: PromptCacheStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> PromptCacheStats {
        let g = self.lock();
        PromptCacheStats {
            bytes: g.entries.iter().map(|e| e.bytes).sum(),
            entries: g.entries.len(),
            ..g.stats
        }
    }

    /// A copy of the cache sharing the longest prefix with `prompt` (at most
    /// `prompt.len() - 1` tokens: the last one is always fed), truncated to that
    /// prefix, with the tokens it holds.
    pub fn lookup(&self, epoch: u64, prompt: &[u32]) -> Option<(Box<dyn KvCache>, Vec<u32>)> {
        let limit = prompt.len().saturating_sub(1);
        let mut g = self.lock();
        g.entries.retain(|e| e.epoch == epoch);
        let best = g
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let common = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, common.min(limit))
            })
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n >= MIN_REUSE);
        let Some((i, n)) = best else {
            g.stats.misses += 1;
            return None;
        };
        g.clock += 1;
        let now = g.clock;
        let e = &mut g.entries[i];
        e.last_used = now;
        let mut copy = e.cache.try_clone().ok()?;
        if copy.truncate(n).is_err() {
            return None;
        }
        g.stats.hits += 1;
        g.stats.reused_tokens += n as u64;
        Some((copy, prompt[..n].to_vec()))
    }

    /// Keeps a finished sequence's cache (`tokens` are the positions it holds). An
    /// entry whose tokens begin this one's is replaced; a cache that cannot be copied
    /// later, or larger than the whole budget, is dropped.
    pub fn store(&self, epoch: u64, tokens: Vec<u32>, cache: Box<dyn KvCache>) {
        let bytes = cache.bytes();
        if tokens.len() < MIN_REUSE || bytes > self.budget || cache.len() != tokens.len() {
            return;
        }
        let mut g = self.lock();
        g.entries
            .retain(|e| !(e.epoch == epoch && tokens.starts_with(&e.tokens)));
        if g.entries
            .iter()
            .any(|e| e.epoch == epoch && e.tokens.starts_with(&tokens))
        {
            // A longer entry already covers every prefix this one would.
            return;
        }
        g.clock += 1;
        let now = g.clock;
        g.entries.push(Entry {
            epoch,
            tokens,
            cache,
            bytes,
            last_used: now,
        });
        loop {
            let total: usize = g.entries.iter().map(|e| e.bytes).sum();
            if total <= self.budget {
                break;
            }
            let Some(oldest) = g
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            g.entries.swap_remove(oldest);
            g.stats.evictions += 1;
        }
    }
}

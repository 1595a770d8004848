//! Rerank work is bounded by what the model reads: the query is tokenized once per
//! request, and texts are cut before tokenizing to what truncation would keep, so a
//! 4 MiB query against hundreds of documents costs about as much as a long one.

mod support;

use std::time::Instant;

use gllm_runtime::tokenizer::BYTES_PER_TOKEN_CAP;
use support::fixture_path;

#[test]
fn a_huge_query_is_cut_before_tokenizing_and_scores_as_its_kept_part() {
    let rt = support::runtime(&format!(
        "[[models]]\nid = \"ce\"\ntask = \"rerank\"\npath = \"{}\"\nbackends = [\"burn-bert\"]\ndevices = [\"cpu\"]\n",
        fixture_path("tiny-cross-encoder")
    ));
    let h = rt.reranker_blocking("ce").unwrap();
    let huge = "word ".repeat(4 << 20 >> 2); // 5 MiB
    let docs: Vec<String> = (0..256).map(|i| format!("document {i}")).collect();
    let start = Instant::now();
    let pairs = h.encode_pairs(&huge, &docs).unwrap();
    let took = start.elapsed();
    // Longest-first truncation to the model's 512 positions, each pair ending in [SEP].
    assert!(
        pairs
            .iter()
            .all(|p| p.ids.len() == 512 && p.ids.last() == Some(&102))
    );
    // The same pairs as for the part of the query that can matter (512 × 256 bytes).
    let kept = &huge[..512 * BYTES_PER_TOKEN_CAP];
    assert_eq!(pairs, h.encode_pairs(kept, &docs).unwrap());
    let got = h.rerank_blocking(&huge, &docs, None, false).unwrap();
    let want = h.rerank_blocking(kept, &docs, None, false).unwrap();
    assert_eq!(got, want);
    // Tokenizing 256 × 5 MiB, as a per-document pair encoding of the whole text would, takes
    // minutes on this machine; the cut texts take well under that.
    assert!(took.as_secs() < 60, "encoding took {took:?}");
}

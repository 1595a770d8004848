//! What the commands print, for people and (`--json`) for programs.

use std::io::Write;

use anyhow::Result;
use gllm_runtime::{Embedding, Generation, RerankResult, Runtime};
use serde_json::json;

fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// `gllm models`.
pub fn print_models(runtime: &Runtime) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "backends: {}", describe_backends(runtime))?;
    for entry in &runtime.manifest().models {
        match runtime.plan(&entry.id) {
            Ok(plan) => {
                let chosen = plan
                    .chosen()
                    .map(|c| format!("{} on {}", c.backend, c.device))
                    .unwrap_or_else(|| "nowhere (no usable candidate)".into());
                writeln!(
                    out,
                    "{}\t{}\t{} {}\t{}\t-> {chosen}",
                    plan.id,
                    plan.task,
                    plan.format.as_str(),
                    plan.architecture,
                    plan.path
                )?;
                for c in &plan.candidates {
                    if let Some(why) = &c.skipped {
                        writeln!(out, "    skipped {} on {}: {why}", c.backend, c.device)?;
                    }
                    if plan.chosen() == Some(c) {
                        break;
                    }
                }
            }
            Err(e) => writeln!(out, "{}\t{}\terror: {e}", entry.id, entry.task)?,
        }
    }
    Ok(())
}

fn describe_backends(runtime: &Runtime) -> String {
    let list: Vec<String> = runtime
        .registry()
        .entries()
        .iter()
        .map(|e| format!("{} ({})", e.name(), e.origin))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// `gllm embed`.
pub fn print_embeddings(model: &str, rows: &[Embedding], json: bool) -> Result<()> {
    if json {
        let data: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"index": i, "embedding": r.embedding}))
            .collect();
        let tokens: usize = rows.iter().map(|r| r.tokens).sum();
        return print_json(&json!({
            "model": model,
            "data": data,
            "usage": {"prompt_tokens": tokens},
        }));
    }
    let mut out = std::io::stdout().lock();
    for r in rows {
        serde_json::to_writer(&mut out, &r.embedding)?;
        writeln!(out)?;
    }
    Ok(())
}

/// `gllm rerank`.
pub fn print_rerank(model: &str, results: &[RerankResult], json: bool) -> Result<()> {
    if json {
        return print_json(&json!({"model": model, "results": results}));
    }
    let mut out = std::io::stdout().lock();
    for r in results {
        write!(out, "{}\t{:.6}\t{:.6}", r.index, r.score, r.logit)?;
        if let Some(d) = &r.document {
            write!(out, "\t{d}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// `--json` result of generate/chat.
pub fn print_generation(g: &Generation) -> Result<()> {
    print_json(&json!({
        "text": g.text,
        "token_ids": g.token_ids,
        "finish_reason": g.finish_reason.as_str(),
        "prompt_tokens": g.prompt_tokens,
    }))
}

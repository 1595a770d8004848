//! `gllm`: embeddings, reranking and text generation from the command line.

mod bench;
mod chat;
mod cli;
mod output;
mod progress;

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use std::path::Path;

use gllm_runtime::api::Task;
use gllm_runtime::{GenerateRequest, Runtime, StreamEvent, model_location};

use cli::{BenchCommand, Cli, Command};

fn main() {
    gllm::link_builtin_backends();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    #[cfg(feature = "download")]
    progress::show_downloads();
    let manifest = cli.manifest.clone();
    // The runtime and the id of the one model a command names (for `task`).
    let open_one = |model: &str, task: Task| -> Result<(Runtime, String)> {
        let (runtime, mut ids) = open(manifest.as_deref(), &[(model, Some(task))])?;
        Ok((runtime, ids.pop().unwrap_or_default()))
    };
    match cli.command {
        Command::Models { model, task } => {
            let models: Vec<(&str, Option<Task>)> = model
                .iter()
                .map(|m| (m.as_str(), task.map(Task::from)))
                .collect();
            output::print_models(&open(manifest.as_deref(), &models)?.0)
        }
        Command::Embed {
            model,
            json,
            prompt_name,
            texts,
        } => {
            if texts.is_empty() {
                bail!("give at least one TEXT to embed");
            }
            let (runtime, model) = open_one(&model, Task::Embed)?;
            let handle = progress::loading(&model, runtime.embedder(&model)).await?;
            let rows = handle.embed_with_prompt(texts, prompt_name).await?;
            output::print_embeddings(&model, &rows, json)
        }
        Command::Rerank {
            model,
            query,
            top_n,
            return_documents,
            json,
            documents,
        } => {
            let (runtime, model) = open_one(&model, Task::Rerank)?;
            let handle = progress::loading(&model, runtime.reranker(&model)).await?;
            let results = handle
                .rerank(query, documents, top_n, return_documents)
                .await?;
            output::print_rerank(&model, &results, json)
        }
        Command::Generate {
            model,
            sampling,
            json,
            prompt,
        } => {
            let (runtime, model) = open_one(&model, Task::Generate)?;
            let handle = progress::loading(&model, runtime.generator(&model)).await?;
            let params = sampling.apply(handle.default_params());
            let mut stream = Box::pin(handle.generate_stream(GenerateRequest { prompt, params }));
            let mut stdout = std::io::stdout();
            while let Some(event) = stream.next().await {
                match event? {
                    StreamEvent::Delta(d) => {
                        if !json {
                            stdout.write_all(d.as_bytes())?;
                            stdout.flush()?;
                        }
                    }
                    StreamEvent::Done(g) => {
                        if json {
                            output::print_generation(&g)?;
                        } else {
                            writeln!(stdout)?;
                        }
                    }
                }
            }
            Ok(())
        }
        Command::Chat {
            model,
            sampling,
            system,
            json,
            message,
        } => {
            let (runtime, model) = open_one(&model, Task::Generate)?;
            let handle = progress::loading(&model, runtime.generator(&model)).await?;
            let params = sampling.apply(handle.default_params());
            let session = handle.chat_session(system);
            tokio::task::spawn_blocking(move || chat::run(session, params, message, json))
                .await
                .context("chat worker failed")?
        }
        #[cfg(feature = "serve")]
        Command::Serve(args) => {
            let options = gllm_server::ServeOptions {
                addr: std::net::SocketAddr::new(args.host, args.port),
                api_key: args.api_key,
                max_queue: args.max_queue,
                body_limit: args.body_limit,
                request_timeout: std::time::Duration::from_secs(args.request_timeout),
                max_batch_tokens: args.max_batch_tokens,
                max_concurrent_generations: args.max_concurrent_generations,
                max_choices: args.max_choices,
                prompt_cache_bytes: args.prompt_cache_mib.saturating_mul(1024 * 1024),
                max_connections: args.max_connections,
                header_timeout: std::time::Duration::from_secs(args.header_timeout),
                kv_budget_bytes: args
                    .kv_budget_mib
                    .map_or_else(gllm_server::default_kv_budget, |m| {
                        m.saturating_mul(1024 * 1024)
                    }),
            };
            let models: Vec<(&str, Option<Task>)> = args
                .model
                .iter()
                .map(|m| (m.as_str(), args.task.map(Task::from)))
                .collect();
            let (runtime, ids) = open(manifest.as_deref(), &models)?;
            for (spec, id) in args.model.iter().zip(&ids) {
                if spec != id {
                    eprintln!("serving {spec} as `{id}`");
                }
            }
            gllm_server::serve(runtime, options, gllm_server::shutdown_signal()).await?;
            Ok(())
        }
        #[cfg(feature = "synth")]
        Command::Synth {
            config,
            out,
            formats,
            tokenizer,
        } => synth(&config, &out, &formats, tokenizer.as_deref()),
        Command::Bench(bench) => {
            let (model, task) = match &bench {
                BenchCommand::Embed { model, .. } => (model.clone(), Task::Embed),
                BenchCommand::Generate { model, .. } => (model.clone(), Task::Generate),
            };
            let (runtime, model) = open_one(&model, task)?;
            tokio::task::spawn_blocking(move || match bench {
                BenchCommand::Embed { corpus, repeat, .. } => {
                    bench::embed(&runtime, &model, &corpus, repeat)
                }
                BenchCommand::Generate {
                    prompt_tokens,
                    decode_tokens,
                    repeat,
                    streams,
                    json,
                    ..
                } => bench::generate(
                    &runtime,
                    &model,
                    bench::GenerateShape {
                        prompt_tokens,
                        decode_tokens,
                        streams,
                    },
                    repeat,
                    json,
                ),
            })
            .await
            .context("benchmark worker failed")?
        }
    }
}

/// The runtime a command works with: the manifest (`--manifest`, `GLLM_MANIFEST`, else
/// `./models.toml` when it exists), with `models` added by location where they are not
/// its ids; and each of `models`' ids.
fn open(
    manifest: Option<&Path>,
    models: &[(&str, Option<Task>)],
) -> Result<(Runtime, Vec<String>)> {
    let default = Path::new("models.toml");
    let path = manifest.or(default.exists().then_some(default));
    if path.is_none()
        && let Some((id, _)) = models.iter().find(|(m, _)| !model_location::is_location(m))
    {
        bail!(
            "no manifest (./models.toml does not exist) to look up `{id}` in: give --manifest FILE, \
             or name the model by its location (--model DIR, FILE.gguf or hf:org/name)"
        );
    }
    Ok(Runtime::open(path, models)?)
}

#[cfg(feature = "synth")]
fn synth(
    config: &std::path::Path,
    out: &std::path::Path,
    formats: &[String],
    tokenizer: Option<&std::path::Path>,
) -> Result<()> {
    use candle_qwen2::synth::{SynthFormat, synthesize};
    let formats = formats
        .iter()
        .map(|f| {
            SynthFormat::parse(f).with_context(|| {
                let known: Vec<&str> = SynthFormat::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown format `{f}` (expected one of {})",
                    known.join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The tokenizer first: GGUF files carry its vocabulary (llama.cpp needs one).
    if let Some(t) = tokenizer {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        std::fs::copy(t, out.join("tokenizer.json"))
            .with_context(|| format!("copying {}", t.display()))?;
    }
    let written = synthesize(config, out, &formats)?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

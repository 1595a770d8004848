//! `gllm chat`: one message, or an interactive conversation that keeps its KV cache.

use std::io::{BufRead, Write};

use anyhow::Result;
use gllm_runtime::{ChatSession, SamplingParams};

use crate::output::print_generation;

/// Answers `message`, or every line read from standard input when there is none.
pub fn run(
    mut session: ChatSession,
    params: SamplingParams,
    message: Option<String>,
    json: bool,
) -> Result<()> {
    if let Some(m) = message {
        return turn(&mut session, &params, &m, json);
    }
    let stdin = std::io::stdin();
    let interactive = std::io::IsTerminal::is_terminal(&stdin);
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/exit" || line == "/quit" {
            break;
        }
        turn(&mut session, &params, line, json)?;
    }
    Ok(())
}

fn turn(
    session: &mut ChatSession,
    params: &SamplingParams,
    message: &str,
    json: bool,
) -> Result<()> {
    let mut stdout = std::io::stdout();
    let mut on_delta = |d: &str| {
        // `""` is the generation's poll between steps: nothing to print.
        if json || d.is_empty() {
            return true;
        }
        stdout.write_all(d.as_bytes()).is_ok() && stdout.flush().is_ok()
    };
    let g = session.send_blocking(message, params, &mut on_delta)?;
    if json {
        print_generation(&g)?;
    } else {
        println!();
    }
    Ok(())
}

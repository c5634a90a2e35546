//! `gatt generate`: one reply from the chat model (the first smoke test to run).

use super::backend::{BackendArgs, SamplingArgs};
use crate::out::outln;
use gatt::backend::Request;
use gatt::{Error, Message, Result};

/// Print the chat model's reply to one prompt.
///
/// Example: gatt generate --prompt "What is the capital of France?" --temperature 0
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The user message.
    #[arg(long)]
    pub prompt: String,
    /// An optional system message.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: Args) -> Result<()> {
    let backend = args.backend.load()?;
    let mut messages: Vec<Message> = args.system.iter().map(Message::system).collect();
    messages.push(Message::user(&args.prompt));
    let start = std::time::Instant::now();
    let out = backend.generate(
        &[Request::new(messages, args.seed)],
        &args
            .sampling
            .params(1, gatt::backend::SamplingParams::DEFAULT_MAX_NEW_TOKENS),
    )?;
    let reply = out
        .first()
        .and_then(|candidates| candidates.first())
        .ok_or_else(|| Error::runtime(format!("{}: returned no reply", backend.describe())))?;
    outln!("{}", reply.text)?;
    eprintln!(
        "gatt generate: {} prompt + {} reply tokens in {:.2}s{}",
        reply.prompt_tokens,
        reply.completion_tokens,
        start.elapsed().as_secs_f64(),
        if reply.finished {
            ""
        } else {
            " (cut at --max-tokens)"
        }
    );
    Ok(())
}

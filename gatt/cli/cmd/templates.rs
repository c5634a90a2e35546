//! `gatt templates`: the built-in chat templates.

use crate::out::{out, outln};
use gatt::model::load_template;
use gatt::template::builtins;
use gatt::{Message, Result};

/// List the built-in chat templates, or show one rendered on a sample conversation.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Render this template on a two-turn example: a built-in name, a .jinja file, a
    /// tokenizer_config.json, or a .gguf (its own template). A .jinja file brings no BOS
    /// or EOS, so `bos_token` and `eos_token` print empty here; `gatt mask --model M`
    /// takes the model's own.
    pub name: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    match args.name {
        None => {
            for b in builtins() {
                outln!("{:<10} {}", b.name, b.description)?;
            }
        }
        Some(name) => {
            // A GGUF's own template (`tokenizer.chat_template`), with its BOS and EOS.
            let t = if name.to_ascii_lowercase().ends_with(".gguf") {
                gatt::model::ChatFormat::from_gguf(std::path::Path::new(&name))?.template
            } else {
                load_template(&name)?
            };
            let msgs = [
                Message::system("You are helpful."),
                Message::user("Hi!"),
                Message::assistant("Hello."),
                Message::user("How are you?"),
            ];
            out!("{}", t.render(&msgs, true)?)?;
        }
    }
    Ok(())
}

//! `gatt model`: fetch the default model, describe a model.

use crate::out::outln;
use gatt::model::{read_gguf, ModelSource, DEFAULT_MODEL};
use gatt::Result;

/// Fetch the default model or show what a model file holds.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ModelCommand {
    /// Download and verify the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) into
    /// $GATT_HOME (default ~/.cache/gatt); does nothing when it is already there.
    Fetch,
    /// Architecture, parameters, context length, chat template and stop tokens.
    Info {
        /// `default`, a .gguf file or a Hugging Face model folder.
        #[arg(default_value = DEFAULT_MODEL)]
        model: String,
    },
    /// Write a model as a Hugging Face folder (dequantized to f32): the base that
    /// Python's peft loads a `gatt train` adapter onto, or a start for other tools.
    Export {
        #[arg(default_value = DEFAULT_MODEL)]
        model: String,
        /// The folder to write: new or empty, unless --overwrite is given.
        #[arg(long, short)]
        out: std::path::PathBuf,
        /// Write into a folder that holds files: the files gatt writes are replaced,
        /// any others are kept.
        #[arg(long)]
        overwrite: bool,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        ModelCommand::Fetch => {
            let p = gatt::model::ensure_default_model()?;
            outln!("{}", p.display())?;
        }
        ModelCommand::Export {
            model,
            out,
            overwrite,
        } => {
            gatt::dataset::check_user_dir(&out, overwrite).map_err(|e| e.context("--out"))?;
            let source = ModelSource::resolve(&model)?;
            let format = source.chat_format()?;
            let mut m = gatt_runtime::load_model(&source, &gatt_runtime::device("cpu")?)?;
            gatt_runtime::export::write(&mut m, &source, &format, &out, overwrite)?;
            outln!("{}", out.display())?;
        }
        ModelCommand::Info { model } => {
            let source = ModelSource::resolve(&model)?;
            if let ModelSource::HfDir(d) = &source {
                // Checked as loading checks it, before anything is printed.
                let path = d.join("config.json");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| gatt::Error::io(&path, "read", e))?;
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    gatt::Error::input(format!("{}: invalid JSON: {e}", path.display()))
                })?;
                gatt_runtime::llama::hf::config_from_json(&v).map_err(|e| {
                    gatt::Error::input(format!("{}: cannot load the model: {e}", d.display()))
                })?;
            }
            let checked = match &source {
                ModelSource::Gguf(p) => Some(read_gguf(p)?),
                _ => None,
            };
            let f = source.chat_format()?;
            if let (Some(c), ModelSource::Gguf(p)) = (&checked, &source) {
                // Checked as loading checks it: what is printed is what would load.
                let cfg = gatt_runtime::llama::Config::from_gguf(c).map_err(|e| {
                    gatt::Error::input(format!("{}: cannot load the model: {e}", p.display()))
                })?;
                // Every layer the metadata counts has its tensors, and no more layers do.
                let has = |name: String| c.tensor_infos.contains_key(&name);
                let last = cfg.n_layer - 1;
                if !has(format!("blk.{last}.attn_q.weight"))
                    || has(format!("blk.{}.attn_q.weight", last + 1))
                {
                    return Err(gatt::Error::input(format!(
                        "{}: cannot load the model: `{}.block_count` is {}, but the file's \
                         tensors are for another number of layers",
                        p.display(),
                        cfg.arch,
                        cfg.n_layer
                    )));
                }
                outln!("path:          {}", source.path().display())?;
                let arch = c
                    .metadata
                    .get("general.architecture")
                    .and_then(|v| v.to_string().ok().cloned())
                    .unwrap_or_else(|| "?".into());
                let get = |k: &str| {
                    c.metadata
                        .get(&format!("{arch}.{k}"))
                        .and_then(|v| v.to_u32().ok())
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "?".into())
                };
                // Each tensor lies inside the file (checked by read_gguf): no overflow.
                let params: u64 = c
                    .tensor_infos
                    .values()
                    .map(|t| t.shape.elem_count() as u64)
                    .sum();
                outln!("architecture:  {arch}")?;
                outln!("parameters:    {:.1}M", params as f64 / 1e6)?;
                outln!("context:       {}", get("context_length"))?;
                outln!("layers:        {}", get("block_count"))?;
                outln!("hidden:        {}", get("embedding_length"))?;
                outln!(
                    "heads:         {} ({} kv)",
                    get("attention.head_count"),
                    get("attention.head_count_kv")
                )?;
            }
            if checked.is_none() {
                outln!("path:          {}", source.path().display())?;
            }
            let stops: Vec<String> = f
                .stop_ids
                .iter()
                .map(|id| {
                    format!(
                        "{} ({id})",
                        f.tokenizer.id_to_token(*id).unwrap_or_default()
                    )
                })
                .collect();
            outln!("vocabulary:    {}", f.tokenizer.get_vocab_size(true))?;
            outln!("stop tokens:   {}", stops.join(", "))?;
            outln!("chat template:\n{}", f.template.source)?;
        }
    }
    Ok(())
}

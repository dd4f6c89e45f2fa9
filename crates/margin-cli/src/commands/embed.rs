//! `margin embed PATH... --out FILE`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use margin_core::Config;
use margin_encoder::{PassageText, VectorsFile};

/// Arguments of `margin embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Files or folders to read.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Where to write the vectors (safetensors; see docs/formats.md).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Encode only the first N passages.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Runs `margin embed`; like `margin ingest`, fails at the end if any file failed.
pub fn run(config: &Config, args: EmbedArgs) -> anyhow::Result<()> {
    let (mut passages, failed) = crate::wiring::passages(config, &args.paths, false)?;
    if let Some(limit) = args.limit {
        passages.truncate(limit);
    }
    anyhow::ensure!(!passages.is_empty(), "no passages to encode");

    let encoder = crate::wiring::encoder(config)?;
    let bar = crate::wiring::progress(passages.len() as u64, "passages");
    let mut data = Vec::with_capacity(passages.len() * encoder.dim());
    // Chunks several batches long keep the bar moving without losing length sorting.
    for chunk in passages.chunks(config.encoder.batch_size * 8) {
        let inputs: Vec<PassageText> = chunk
            .iter()
            .map(|p| PassageText {
                title: &p.title,
                text: &p.text,
            })
            .collect();
        for vector in encoder.encode_passages(&inputs)? {
            data.extend(vector);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    let file = VectorsFile {
        model: encoder.name().to_string(),
        dim: encoder.dim(),
        ids: passages.iter().map(|p| p.id.clone()).collect(),
        data,
    };
    file.write(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{} vectors of dimension {} written to {}",
        file.ids.len(),
        file.dim,
        args.out.display()
    );
    if failed > 0 {
        anyhow::bail!("{failed} file(s) could not be read (see above); the others were encoded");
    }
    Ok(())
}

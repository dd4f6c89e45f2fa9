//! `margin models list | pull | verify`.

use clap::Subcommand;
use margin_core::config::EncoderBackend;
use margin_core::Config;
use margin_models::{ModelStatus, ModelStore, PullOutcome};
use serde::Serialize;

/// What to do with models.
#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// List the catalogue and what is in the cache.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch models into the cache (default: the configured encoder, with ONNX
    /// Runtime for the onnx backend, and generator).
    Pull {
        /// Catalogue names.
        names: Vec<String>,
        /// Every model in the catalogue.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Fetch again even if present.
        #[arg(long)]
        force: bool,
    },
    /// Recompute every cached file's SHA-256 and compare (default: all cached models).
    Verify {
        /// Catalogue names.
        names: Vec<String>,
    },
}

#[derive(Serialize)]
struct ListRow<'a> {
    name: &'a str,
    architecture: &'a str,
    roles: String,
    sources: Vec<String>,
    status: ModelStatus,
    description: &'a str,
}

/// Runs `margin models`.
pub fn run(config: &Config, action: ModelsAction) -> anyhow::Result<()> {
    let store = ModelStore::from_config(config)?;
    match action {
        ModelsAction::List { json } => {
            let rows = store
                .catalogue()
                .models
                .iter()
                .map(|m| {
                    Ok(ListRow {
                        name: &m.name,
                        architecture: &m.architecture,
                        roles: m
                            .roles
                            .iter()
                            .map(|r| {
                                serde_json::to_value(r)
                                    .map(|v| v.as_str().unwrap_or_default().to_string())
                            })
                            .collect::<Result<Vec<_>, _>>()?
                            .join(","),
                        sources: m.sources.iter().map(|s| s.describe()).collect(),
                        status: store.status(&m.name),
                        description: &m.description,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<26} {:<8} {:<34} {:<10} sources",
                    "name", "arch", "roles", "cached"
                );
                for row in rows {
                    let cached = match row.status {
                        ModelStatus::Present { .. } => "yes",
                        ModelStatus::Missing => "no",
                        ModelStatus::Damaged { .. } => "DAMAGED",
                    };
                    println!(
                        "{:<26} {:<8} {:<34} {:<10} {}",
                        row.name,
                        row.architecture,
                        row.roles,
                        cached,
                        row.sources.join("; ")
                    );
                }
            }
        }
        ModelsAction::Pull { names, all, force } => {
            let names = if all {
                store
                    .catalogue()
                    .models
                    .iter()
                    .map(|m| m.name.clone())
                    .collect()
            } else if names.is_empty() {
                let onnx = match config.encoder.backend {
                    EncoderBackend::Candle => None,
                    _ => crate::wiring::onnx_model_name(config, &store)?,
                };
                let mut names = match onnx {
                    Some(model) if margin_encoder_onnx::dylib_from_env().is_some() => vec![model],
                    Some(model) => vec![model, crate::wiring::ONNX_RUNTIME.to_string()],
                    None => vec![config.models.encoder.clone()],
                };
                names.push(config.models.generator.clone());
                names
            } else {
                names
            };
            let mut failed = Vec::new();
            for name in &names {
                let spinner = crate::wiring::spinner(format!("pulling {name}"));
                let result = store.pull(name, force);
                spinner.finish_and_clear();
                match result {
                    Ok(PullOutcome::AlreadyPresent { dir }) => {
                        println!("{name}: already in the cache ({})", dir.display())
                    }
                    Ok(PullOutcome::Fetched {
                        dir,
                        source,
                        pinned_now,
                    }) => {
                        println!(
                            "{name}: fetched from {source}, verified ({})",
                            dir.display()
                        );
                        for file in pinned_now {
                            println!("  warning: {file} has no hash in the catalogue; pinned the downloaded one");
                        }
                    }
                    Err(e) => {
                        eprintln!("{name}: {e}");
                        failed.push(name.clone());
                    }
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("could not pull: {}", failed.join(", "));
            }
        }
        ModelsAction::Verify { names } => {
            let names: Vec<String> = if names.is_empty() {
                store
                    .catalogue()
                    .models
                    .iter()
                    // A damaged manifest is an error, so it is verified (and fails) too.
                    .filter(|m| store.status(&m.name) != ModelStatus::Missing)
                    .map(|m| m.name.clone())
                    .collect()
            } else {
                names
            };
            if names.is_empty() {
                println!("no models in the cache ({})", config.models_dir().display());
            }
            let mut failed = Vec::new();
            for name in &names {
                match store.verify(name) {
                    Ok(files) => println!("{name}: ok ({} files)", files.len()),
                    Err(e) => {
                        eprintln!("{name}: {e}");
                        failed.push(name.clone());
                    }
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("verification failed: {}", failed.join(", "));
            }
        }
    }
    Ok(())
}

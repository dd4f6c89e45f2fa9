//! `margin serve`: the REST API and web UI on the embedded (or configured)
//! store, after indexing any paths given.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use margin_answer::Answerer;
use margin_core::Config;
use margin_server::auth::Keys;
use margin_server::AppState;
use rand::Rng;

use crate::commands::index::{index_passages, Progress};

/// Arguments of `margin serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: server.bind; port 0 picks a free one).
    #[arg(long, env = "MARGIN_BIND")]
    pub bind: Option<String>,
    /// Files or folders to index before serving (unchanged ones are skipped). Repeatable.
    #[arg(long = "index", value_name = "PATH")]
    pub index: Vec<PathBuf>,
    /// Generator: catalogue name or folder (default: models.generator).
    #[arg(long)]
    pub model: Option<String>,
}

/// Runs `margin serve` until interrupted (Ctrl-C or SIGTERM).
pub fn run(config: &Config, args: ServeArgs) -> anyhow::Result<()> {
    let mut config = config.clone();
    if let Some(bind) = &args.bind {
        config.server.bind = bind.clone();
    }
    let server = &config.server;
    let mut write_keys: Vec<String> = server
        .write_keys
        .iter()
        .map(|k| k.expose().to_string())
        .collect();
    // Uploading always needs a write key; without one configured, this
    // session makes its own and shows it once, here, never in the logs.
    let session_key = write_keys.is_empty().then(|| {
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect::<String>()
    });
    write_keys.extend(session_key.clone());
    let keys = Keys::new(
        server.read_keys.iter().map(|k| k.expose()),
        write_keys.iter().map(String::as_str),
        server.open_reads,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.server.bind)
            .await
            .with_context(|| format!("listening on {} (server.bind)", config.server.bind))?;
        let address = listener.local_addr()?;
        println!("margin serving on http://{address}/");
        if let Some(key) = &session_key {
            println!(
                "write key for this session (set server.write_keys to choose your own): {key}"
            );
            println!("web UI with that key: http://{address}/#key={key}");
        }
        let state = AppState::new(config.clone(), keys);
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
        let loading = state.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = load(&loading, &args) {
                let _ = failed_tx.send(e);
            }
        });
        let shutdown = async {
            let terminate = async {
                #[cfg(unix)]
                if let Ok(mut s) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    s.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = terminate => {},
            }
            tracing::info!("shutting down: finishing requests in flight");
        };
        tokio::select! {
            served = margin_server::serve(listener, state, shutdown) => served.context("serving"),
            Ok(e) = failed_rx => Err(e.context("loading the index and models")),
        }
    })
}

/// Opens the index, indexes `args.index`, loads the generator, and makes the server ready.
fn load(state: &Arc<AppState>, args: &ServeArgs) -> anyhow::Result<()> {
    let config = &state.config;
    let index = crate::wiring::open_index(config)?;
    if !args.index.is_empty() {
        let (passages, failed) = crate::wiring::passages(config, &args.index, false)?;
        let summary = index_passages(&index, passages, Progress::Bar)?;
        tracing::info!(
            documents = summary.documents,
            added = summary.added,
            replaced = summary.replaced,
            unchanged = summary.unchanged,
            failed_files = failed,
            "indexed the paths given"
        );
    }
    let answerer = Answerer::new(
        crate::wiring::generator(config, args.model.as_deref())?,
        config.rag.clone(),
    );
    state.start(index, answerer);
    tracing::info!(model = %state.services().map(|s| s.model.as_str()).unwrap_or(""), "ready");
    println!("margin ready");
    Ok(())
}

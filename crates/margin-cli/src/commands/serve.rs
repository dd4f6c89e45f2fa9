//! `margin serve`: the REST API and web UI on the embedded (or configured)
//! store, after indexing any paths given.

use std::io::{IsTerminal, Write};
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
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.server.bind)
            .await
            .with_context(|| format!("listening on {} (server.bind)", config.server.bind))?;
        let address = listener.local_addr()?;
        println!("margin serving on http://{address}/");
        if let Some(key) = &session_key {
            show_session_key(&config, address, key)?;
        }
        let state = AppState::new(config.clone(), keys);
        let loading = state.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&loading, &args));
        let serving = margin_server::serve(listener, state, shutdown());
        tokio::pin!(serving);
        tokio::select! {
            served = &mut serving => return served.context("serving"),
            loaded = loaded => match loaded {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.context("loading the index and models")),
                Err(e) => anyhow::bail!("loading the index and models: {e}"),
            },
        }
        serving.await.context("serving")
    });
    // Work still running on the blocking pool (a model still loading when
    // Ctrl-C came) is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown() {
    let terminate = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
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
}

/// Tells the person who started the server this session's write key: on
/// their terminal, or (when stdout is captured, as logs often are) in a file
/// only they can read.
fn show_session_key(
    config: &Config,
    address: std::net::SocketAddr,
    key: &str,
) -> anyhow::Result<()> {
    if std::io::stdout().is_terminal() {
        println!("write key for this session (set server.write_keys to choose your own): {key}");
        println!("web UI with that key: http://{address}/#key={key}");
        return Ok(());
    }
    let path = config.data_dir.join("session-write-key");
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{key}").with_context(|| format!("writing {}", path.display()))?;
    println!(
        "write key for this session in {} (set server.write_keys to choose your own)",
        path.display()
    );
    Ok(())
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

//! `margin search "QUERY"`.

use clap::Args;
use margin_core::config::SearchMode;
use margin_core::Config;

/// Arguments of `margin search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// Number of passages (default: retrieval.k).
    #[arg(short, long)]
    pub k: Option<usize>,
    /// dense, bm25 or hybrid (default: retrieval.mode).
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<SearchMode>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses a search mode as the configuration spells it.
pub fn parse_mode(s: &str) -> Result<SearchMode, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("`{s}` is not a search mode; use dense, bm25 or hybrid"))
}

/// Runs `margin search`.
pub fn run(config: &Config, args: SearchArgs) -> anyhow::Result<()> {
    let index = crate::wiring::open_index(config)?;
    let k = args.k.unwrap_or(config.retrieval.k);
    let mode = args.mode.unwrap_or(config.retrieval.mode);
    let hits = index.search(&args.query, k, mode)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("no passages found (is anything indexed? see `margin docs`)");
    }
    for (rank, hit) in hits.iter().enumerate() {
        let p = &hit.passage;
        println!(
            "{:>3}. {:.4}  {}  [{}]  {}",
            rank + 1,
            hit.score,
            p.id,
            p.title,
            p.source
        );
        println!("     {}", snippet(&p.text, 200));
    }
    Ok(())
}

/// The first `chars` characters of `text`, cut at a character boundary.
fn snippet(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

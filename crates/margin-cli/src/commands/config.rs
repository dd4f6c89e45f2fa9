//! `margin config show`.

use clap::Subcommand;
use margin_core::Config;

/// What to do with the configuration.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration (secrets masked).
    Show {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `margin config`.
pub fn run(config: &Config, action: ConfigAction) -> anyhow::Result<()> {
    match action {
        ConfigAction::Show { json: true } => println!("{}", serde_json::to_string_pretty(config)?),
        ConfigAction::Show { json: false } => print!("{}", config.to_toml()),
    }
    Ok(())
}

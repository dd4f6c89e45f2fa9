//! One module per subcommand.

pub mod bench;
pub mod config;
pub mod embed;
pub mod ingest;
pub mod models;

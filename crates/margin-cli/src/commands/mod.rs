//! One module per subcommand.

pub mod ask;
pub mod bench;
pub mod bench_generate;
pub mod bench_search;
pub mod config;
pub mod embed;
pub mod eval;
pub mod generate;
pub mod index;
pub mod ingest;
pub mod models;
pub mod search;
pub mod serve;

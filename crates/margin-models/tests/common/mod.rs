//! Helpers shared by margin-models' integration tests.

use std::path::Path;

use margin_core::config::ConfigSources;
use margin_core::Config;
use margin_models::ModelStore;
use sha2::{Digest, Sha256};

/// SHA-256 of `bytes`, in hex.
pub fn sha256_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A store rooted at `data`, with `catalogue` (TOML text) as its catalogue and
/// `overrides` (`key`, `value`) applied over the defaults; the process
/// environment is ignored.
pub fn store_with(data: &Path, catalogue: &str, overrides: &[(&str, &str)]) -> ModelStore {
    std::fs::create_dir_all(data).unwrap();
    let path = data.join("models.toml");
    std::fs::write(&path, catalogue).unwrap();
    let mut all = vec![
        ("data_dir".to_string(), data.display().to_string()),
        ("models.catalogue".to_string(), path.display().to_string()),
    ];
    all.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let config = Config::load(&ConfigSources {
        env: Some(Default::default()),
        overrides: all,
        ..Default::default()
    })
    .unwrap();
    ModelStore::from_config(&config).unwrap()
}

//! Turning per-token hidden states into one vector per input.

use std::path::Path;

use candle_core::{DType, Tensor, D};
use serde::Deserialize;

/// How token vectors are pooled into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's vector (DPR, plain BERT).
    Cls,
    /// The mean of the unmasked tokens' vectors (sentence-transformers).
    Mean,
    /// The element-wise maximum over unmasked tokens.
    Max,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

/// Pooling and normalisation a model folder declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingSpec {
    /// How token vectors become one.
    pub pooling: Pooling,
    /// Whether vectors are L2-normalised after pooling.
    pub normalize: bool,
}

impl PoolingSpec {
    /// Reads sentence-transformers' `modules.json` and pooling config when
    /// present; a folder without them is a plain (DPR-style) BERT: CLS, no norm.
    pub fn from_dir(dir: &Path) -> Result<PoolingSpec, String> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(PoolingSpec {
                pooling: Pooling::Cls,
                normalize: false,
            });
        }
        let modules: Vec<Module> = read_json(&modules_path)?;
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map(|m| dir.join(&m.path));
        let pooling = match pooling_dir {
            Some(pooling_dir) => {
                let config: PoolingConfig = read_json(&pooling_dir.join("config.json"))?;
                let enabled = [
                    config.pooling_mode_cls_token,
                    config.pooling_mode_mean_tokens,
                    config.pooling_mode_max_tokens,
                ];
                if enabled.iter().filter(|&&on| on).count() > 1 {
                    // sentence-transformers would concatenate them: a different vector size.
                    return Err(format!(
                        "{}: several pooling modes at once are not supported",
                        pooling_dir.join("config.json").display()
                    ));
                }
                if config.pooling_mode_mean_tokens {
                    Pooling::Mean
                } else if config.pooling_mode_cls_token {
                    Pooling::Cls
                } else if config.pooling_mode_max_tokens {
                    Pooling::Max
                } else {
                    return Err(format!(
                        "{}: no supported pooling mode (cls, mean, max) is enabled",
                        pooling_dir.join("config.json").display()
                    ));
                }
            }
            None => Pooling::Cls,
        };
        Ok(PoolingSpec { pooling, normalize })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Pools `hidden` ([batch, seq, dim]) under `mask` ([batch, seq], 1 for real tokens).
pub(crate) fn pool(
    hidden: &Tensor,
    mask: &Tensor,
    pooling: Pooling,
) -> candle_core::Result<Tensor> {
    match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Mean => {
            let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            summed.broadcast_div(&counts)
        }
        Pooling::Max => {
            // Padding must never win the maximum.
            let mask = mask
                .to_dtype(DType::U8)?
                .unsqueeze(D::Minus1)?
                .broadcast_as(hidden.shape())?;
            let floor = Tensor::full(f32::MIN, hidden.shape(), hidden.device())?
                .to_dtype(hidden.dtype())?;
            mask.where_cond(hidden, &floor)?.max(1)
        }
    }
}

/// Scales each row to unit L2 norm.
pub(crate) fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norms = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn hidden() -> (Tensor, Tensor) {
        // One row, three tokens (the last is padding), two dims.
        let h = Tensor::new(&[[[1f32, 2.], [3., 4.], [100., -100.]]], &Device::Cpu).unwrap();
        let m = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu).unwrap();
        (h, m)
    }

    #[test]
    fn mean_ignores_padding() {
        let (h, m) = hidden();
        let v = pool(&h, &m, Pooling::Mean)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(v, vec![vec![2., 3.]]);
    }

    #[test]
    fn max_ignores_padding_and_cls_takes_first() {
        let (h, m) = hidden();
        assert_eq!(
            pool(&h, &m, Pooling::Max)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            vec![vec![3., 4.]]
        );
        assert_eq!(
            pool(&h, &m, Pooling::Cls)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            vec![vec![1., 2.]]
        );
    }

    #[test]
    fn normalize_gives_unit_rows() {
        let x = Tensor::new(&[[3f32, 4.], [0., 2.]], &Device::Cpu).unwrap();
        assert_eq!(
            l2_normalize(&x).unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![0.6, 0.8], vec![0., 1.]]
        );
    }

    #[test]
    fn spec_from_sentence_transformers_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            r#"{"pooling_mode_mean_tokens": true}"#,
        )
        .unwrap();
        assert_eq!(
            PoolingSpec::from_dir(dir.path()).unwrap(),
            PoolingSpec {
                pooling: Pooling::Mean,
                normalize: true
            }
        );
        let plain = tempfile::tempdir().unwrap();
        assert_eq!(
            PoolingSpec::from_dir(plain.path()).unwrap(),
            PoolingSpec {
                pooling: Pooling::Cls,
                normalize: false
            }
        );
    }
}

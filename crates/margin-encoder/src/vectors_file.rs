//! The vectors file `margin embed` writes: a safetensors file holding one f32
//! tensor `vectors` of shape [count, dim], with the passage ids (a JSON list,
//! in row order) and the encoder's name in its metadata. Python reads it with
//! `safetensors.numpy.load_file` and `safe_open(...).metadata()`.

use std::collections::HashMap;
use std::path::Path;

use margin_core::{OperationError, OperationResult};
use safetensors::tensor::{Dtype, TensorView};

/// Name of the tensor inside the file.
pub const TENSOR: &str = "vectors";

/// Vectors with the ids of the passages they encode.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorsFile {
    /// Encoder model name.
    pub model: String,
    /// Vector length.
    pub dim: usize,
    /// Passage ids, one per row.
    pub ids: Vec<String>,
    /// Row-major vectors, `ids.len() * dim` values.
    pub data: Vec<f32>,
}

impl VectorsFile {
    /// Writes the file at `path`.
    pub fn write(&self, path: &Path) -> OperationResult<()> {
        let bytes: Vec<u8> = self.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![self.ids.len(), self.dim], &bytes)
            .map_err(|e| OperationError::bad_input(path.display().to_string(), e.to_string()))?;
        let metadata = HashMap::from([
            ("model".to_string(), self.model.clone()),
            (
                "ids".to_string(),
                serde_json::to_string(&self.ids).expect("ids serialize"),
            ),
        ]);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| OperationError::io(parent, e))?;
        }
        safetensors::serialize_to_file([(TENSOR, view)], Some(metadata), path)
            .map_err(|e| OperationError::bad_input(path.display().to_string(), e.to_string()))
    }

    /// Reads the file at `path`.
    pub fn read(path: &Path) -> OperationResult<VectorsFile> {
        let bad = |message: String| OperationError::bad_input(path.display().to_string(), message);
        let bytes = std::fs::read(path).map_err(|e| OperationError::io(path, e))?;
        let (_, metadata) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let info = metadata.metadata().clone().unwrap_or_default();
        let ids: Vec<String> = serde_json::from_str(
            info.get("ids")
                .ok_or_else(|| bad("no `ids` metadata".into()))?,
        )
        .map_err(|e| bad(format!("`ids` metadata: {e}")))?;
        let tensors =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let tensor = tensors.tensor(TENSOR).map_err(|e| bad(e.to_string()))?;
        let (rows, dim) = match tensor.shape() {
            [rows, dim] if tensor.dtype() == Dtype::F32 => (*rows, *dim),
            _ => return Err(bad("`vectors` must be a 2-d f32 tensor".into())),
        };
        if rows != ids.len() {
            return Err(bad(format!("{rows} vectors but {} ids", ids.len())));
        }
        let data = tensor
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(VectorsFile {
            model: info.get("model").cloned().unwrap_or_default(),
            dim,
            ids,
            data,
        })
    }

    /// The vector of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.safetensors");
        let file = VectorsFile {
            model: "m".into(),
            dim: 2,
            ids: vec!["a#0".into(), "b#1".into()],
            data: vec![1.0, 2.0, -3.5, 4.25],
        };
        file.write(&path).unwrap();
        let back = VectorsFile::read(&path).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.row(1), &[-3.5, 4.25]);
    }

    #[test]
    fn not_a_vectors_file_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.safetensors");
        std::fs::write(&path, b"not safetensors").unwrap();
        assert!(VectorsFile::read(&path)
            .unwrap_err()
            .to_string()
            .contains("junk.safetensors"));
    }
}

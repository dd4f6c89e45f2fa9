//! SHA-256 of files, computed while streaming them.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use margin_core::{OperationError, OperationResult};
use sha2::{Digest, Sha256};

const BUF: usize = 1 << 20;

/// SHA-256 of the file at `path`, in hex.
pub fn sha256_file(path: &Path) -> OperationResult<String> {
    let mut file = File::open(path).map_err(|e| OperationError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| OperationError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A file being written whose SHA-256 is computed on the way.
pub struct HashingFile {
    path: std::path::PathBuf,
    file: File,
    hasher: Sha256,
}

impl HashingFile {
    /// Creates `path` (and its parent folders).
    pub fn create(path: &Path) -> OperationResult<HashingFile> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| OperationError::io(parent, e))?;
        }
        let file = File::create(path).map_err(|e| OperationError::io(path, e))?;
        Ok(HashingFile {
            path: path.to_path_buf(),
            file,
            hasher: Sha256::new(),
        })
    }

    /// Appends everything `input` yields.
    pub fn append(&mut self, input: &mut impl Read) -> OperationResult<u64> {
        std::io::copy(input, self).map_err(|e| OperationError::io(&self.path, e))
    }

    /// Flushes the file to disk and returns its SHA-256 in hex.
    pub fn finish(self) -> OperationResult<String> {
        self.file
            .sync_all()
            .map_err(|e| OperationError::io(&self.path, e))?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Checks that `path` has the SHA-256 `expected`; an empty `expected` accepts any.
pub fn verify_file(path: &Path, expected: &str) -> OperationResult<String> {
    let actual = sha256_file(path)?;
    if !expected.is_empty() && !actual.eq_ignore_ascii_case(expected) {
        return Err(OperationError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn concat_hashes_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/out");
        let mut out = HashingFile::create(&dest).unwrap();
        out.append(&mut &b"a"[..]).unwrap();
        out.append(&mut &b"bc"[..]).unwrap();
        let hash = out.finish().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert_eq!(hash, sha256_file(&dest).unwrap());
    }

    #[test]
    fn mismatch_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.bin");
        std::fs::write(&path, b"tampered").unwrap();
        let err = verify_file(&path, &"0".repeat(64)).unwrap_err();
        assert!(matches!(err, OperationError::ChecksumMismatch { .. }));
        assert!(err.to_string().contains("weights.bin"));
    }
}

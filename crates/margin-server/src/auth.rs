//! API keys: read and write scopes, compared in constant time, never logged.

use axum::http::HeaderMap;
use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Search, ask, list.
    Read,
    /// Also upload and delete.
    Write,
}

/// The configured keys, held as SHA-256 digests so that comparing them takes
/// the same time whatever the key's length or content.
pub struct Keys {
    read: Vec<[u8; 32]>,
    write: Vec<[u8; 32]>,
    open_reads: bool,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Keys {
    /// Keys from the configuration's read and write lists.
    pub fn new<'a>(
        read: impl IntoIterator<Item = &'a str>,
        write: impl IntoIterator<Item = &'a str>,
        open_reads: bool,
    ) -> Keys {
        Keys {
            read: read.into_iter().map(digest).collect(),
            write: write.into_iter().map(digest).collect(),
            open_reads,
        }
    }

    /// Whether reading needs no key.
    pub fn open_reads(&self) -> bool {
        self.open_reads
    }

    /// Checks that the request's key (`Authorization: Bearer KEY` or
    /// `X-API-Key: KEY`) allows `scope`.
    pub fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        if scope == Scope::Read && self.open_reads {
            return Ok(());
        }
        let Some(given) = presented(headers) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                match scope {
                    Scope::Read => "an API key is needed: send `Authorization: Bearer KEY`",
                    Scope::Write => {
                        "uploading and deleting need an API key with write scope: send `Authorization: Bearer KEY`"
                    }
                },
            ));
        };
        let given = digest(given);
        let matches = |keys: &[[u8; 32]]| {
            // Every key is compared, so the time taken does not tell which matched.
            keys.iter()
                .fold(subtle::Choice::from(0), |any, k| any | k.ct_eq(&given))
                .into()
        };
        let write: bool = matches(&self.write);
        let read: bool = matches(&self.read);
        match (scope, write, read) {
            (_, true, _) | (Scope::Read, _, true) => Ok(()),
            (Scope::Write, false, true) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this API key may only read; uploading and deleting need write scope",
            )),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the API key is not valid",
            )),
        }
    }
}

/// The key a request presents, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim);
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    #[test]
    fn scopes_follow_the_key_presented() {
        let keys = Keys::new(["reader-key-0123456789"], ["writer-key-0123456789"], false);
        let read = headers("authorization", "Bearer reader-key-0123456789");
        let write = headers("x-api-key", "writer-key-0123456789");
        let wrong = headers("authorization", "Bearer writer-key-012345678");
        assert!(keys.check(&read, Scope::Read).is_ok());
        assert_eq!(
            keys.check(&read, Scope::Write).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(keys.check(&write, Scope::Write).is_ok());
        assert!(keys.check(&write, Scope::Read).is_ok());
        for scope in [Scope::Read, Scope::Write] {
            assert_eq!(
                keys.check(&wrong, scope).unwrap_err().status,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                keys.check(&HeaderMap::new(), scope).unwrap_err().status,
                StatusCode::UNAUTHORIZED
            );
        }
        let open = Keys::new([], ["writer-key-0123456789"], true);
        assert!(open.check(&HeaderMap::new(), Scope::Read).is_ok());
        assert!(open.check(&HeaderMap::new(), Scope::Write).is_err());
    }

    #[test]
    fn refusals_never_echo_the_key() {
        let keys = Keys::new([], ["writer-key-0123456789"], true);
        let err = keys
            .check(
                &headers("authorization", "Bearer not-the-key-secret"),
                Scope::Write,
            )
            .unwrap_err();
        assert!(
            !err.message.contains("not-the-key-secret"),
            "{}",
            err.message
        );
    }
}

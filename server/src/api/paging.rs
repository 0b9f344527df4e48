//! Page sizes and page tokens (AIP-158).
//!
//! Lists are ordered by id and paged by keyset: a token holds the last id shown, so rows added
//! or removed while someone pages neither shift a page nor repeat a row. The token also holds a
//! digest of the filter, so a token cannot silently be reused with another filter.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};

/// The report's page size.
pub const DEFAULT_PAGE_SIZE: u32 = 30;
/// The largest page a caller may ask for; larger requests are lowered to it.
pub const MAX_PAGE_SIZE: u32 = 500;

/// The page size for a request's `page_size`.
pub fn page_size(requested: i32) -> Result<u32> {
    match requested {
        ..0 => Err(Error::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(u32::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)),
    }
}

fn digest(context: &str) -> String {
    hex::encode(&Sha256::digest(context.as_bytes())[..8])
}

/// A token that continues after `last_id` for the query described by `context`.
pub fn encode(last_id: i64, context: &str) -> String {
    hex::encode(format!("{last_id}.{}", digest(context)))
}

/// The id to continue after: 0 for the first page.
pub fn decode(token: &str, context: &str) -> Result<i64> {
    if token.is_empty() {
        return Ok(0);
    }
    let invalid = || {
        Error::invalid(
            "page_token",
            "is not a token from this list; pass the next_page_token of the previous call \
             unchanged, with the same filter",
        )
    };
    let text = hex::decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(text).map_err(|_| invalid())?;
    let (id, sum) = text.split_once('.').ok_or_else(invalid)?;
    if sum != digest(context) {
        return Err(Error::invalid(
            "page_token",
            "was made for a different filter; start again without a page_token",
        ));
    }
    id.parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(invalid)
}

/// Splits a fetched batch of up to `size + 1` rows into the page and the next token.
pub fn finish<T>(
    mut rows: Vec<T>,
    size: u32,
    context: &str,
    id: impl Fn(&T) -> i64,
) -> (Vec<T>, String) {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rows.len() > size {
        rows.truncate(size);
        let token = rows
            .last()
            .map(|r| encode(id(r), context))
            .unwrap_or_default();
        (rows, token)
    } else {
        (rows, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(page_size(0).unwrap(), 30);
        assert_eq!(page_size(10_000).unwrap(), 500);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn tokens_round_trip_and_bind_the_filter() {
        let t = encode(42, "a");
        assert_eq!(decode(&t, "a").unwrap(), 42);
        assert!(
            decode(&t, "b")
                .unwrap_err()
                .to_string()
                .contains("different filter")
        );
        assert!(decode("zz", "a").is_err());
        assert_eq!(decode("", "a").unwrap(), 0);
    }

    #[test]
    fn finish_splits() {
        let (rows, token) = finish(vec![1, 2, 3], 2, "c", |r| *r);
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(decode(&token, "c").unwrap(), 2);
        let (rows, token) = finish(vec![1, 2], 2, "c", |r| *r);
        assert_eq!(rows.len(), 2);
        assert!(token.is_empty());
    }
}

//! Paging of list RPCs: a page size (0 for the default, capped) and an opaque token naming the
//! last row of the previous page; the next token is empty on the last page.

use crate::error::{Error, Result};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

/// What a list call asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page<K> {
    /// Rows on this page.
    pub limit: i64,
    /// The key of the last row of the previous page.
    pub after: Option<K>,
}

impl<K: std::str::FromStr> Page<K> {
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self> {
        let limit = match i64::from(page_size) {
            0 => DEFAULT_PAGE,
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            n => n.min(MAX_PAGE),
        };
        let after = match page_token.trim() {
            "" => None,
            token => Some(
                token
                    .parse()
                    .map_err(|_| Error::invalid("page_token", "is not a token from a previous page"))?,
            ),
        };
        Ok(Self { limit, after })
    }

    /// How many rows to read: one more than the page, to learn whether another follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The page of `rows` (read with [`Page::fetch`]) and the token of the next one.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        if rows.len() as i64 > self.limit {
            rows.truncate(self.limit as usize);
            let next = rows.last().map(key).unwrap_or_default();
            (rows, next)
        } else {
            (rows, String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded_and_chained() {
        let page = Page::<i64>::parse(0, "").unwrap();
        assert_eq!((page.limit, page.after), (50, None));
        assert_eq!(
            Page::<i64>::parse(10_000, "7").unwrap(),
            Page {
                limit: 200,
                after: Some(7)
            }
        );
        assert!(Page::<i64>::parse(-1, "").is_err());
        assert!(Page::<i64>::parse(5, "x").is_err());
        let page = Page::<i64>::parse(2, "").unwrap();
        assert_eq!(
            page.finish(vec![1, 2, 3], |n| n.to_string()),
            (vec![1, 2], "2".to_string())
        );
        assert_eq!(page.finish(vec![1, 2], |n| n.to_string()), (vec![1, 2], String::new()));
    }
}

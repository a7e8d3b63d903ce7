//! Ranges over the listing indexes ([`super::index`]) as every backend reads them: a [`Span`]
//! of one field's entries and [`next_prefix`]. The walks, counts, counters and facets of the
//! embedded records are in `sled/query.rs`, those of PostgreSQL in `postgres/index.rs`.

use super::index::Position;

/// A range of one field's entries: `from` inclusive, `to` exclusive (both after the field
/// prefix; `None` is open).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub from: Vec<u8>,
    pub to: Option<Vec<u8>>,
}

impl Span {
    /// Every entry whose suffix starts with `p`.
    pub fn prefixed(p: Vec<u8>) -> Span {
        let to = next_prefix(&p);
        Span { from: p, to }
    }

    /// This span narrowed to the positions strictly after (`reverse` false) or before `p`.
    pub fn past(&self, p: &Position, reverse: bool) -> Span {
        let key = p.suffix();
        let mut out = self.clone();
        if reverse {
            if out.to.as_ref().is_none_or(|t| key < *t) {
                out.to = Some(key);
            }
        } else {
            let mut after = key;
            after.push(0);
            if after > out.from {
                out.from = after;
            }
        }
        out
    }
}

/// The smallest key greater than every key starting with `p` (`None`: there is none).
pub fn next_prefix(p: &[u8]) -> Option<Vec<u8>> {
    let mut out = p.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

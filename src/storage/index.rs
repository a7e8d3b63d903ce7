//! Secondary indexes of image records, for listings (spec §4.4): one ordered entry per
//! (field, value) of every image, and counters per value of the fields that are faceted.
//!
//! Entry key: `org \0 flag tag value created hash`, where `flag` is `l` (live) or `d` (soft
//! deleted), `tag` names the field (one byte, or `u` + key + `\0` for user metadata), `value`
//! is an order-preserving encoding (none for `created`), `created` is the creation time in 10
//! order-preserving bytes and `hash` the image hash. Within a field the entries sort by value, then
//! creation time, then hash: a walk of one value in either direction is already in creation
//! order, and every position is exact (a cursor is the key itself).
//!
//! Counter key: `org \0 flag tag value` → u64, for format, mimetype and string user fields,
//! and `org \0 flag #` for the number of images.

use crate::model::image::ImageRecord;
use serde_json::Value;

/// A field with an index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexField {
    Created,
    Size,
    Name,
    Width,
    Height,
    Format,
    Mimetype,
    /// A user-metadata key as stored (`tag`, `int:n`, `array:labels`).
    User(String),
    /// When a soft-deleted image was deleted (unix seconds): the garbage collector's queue.
    DeletedAt,
    /// The SHA-1 of the bytes (`binaryHash`). Kept by the embedded records only
    /// ([`embedded_keys`]): PostgreSQL has a column index for it.
    BinaryHash,
}

/// One indexed value.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    Num(f64),
    Str(String),
}

const NUM: u8 = 0x01;
const STR: u8 = 0x02;
pub const CREATED_LEN: usize = 10;

impl IndexField {
    /// The bytes that name the field in an entry key, right after `org \0 flag`.
    pub fn tag(&self) -> Vec<u8> {
        match self {
            IndexField::Created => b"c".to_vec(),
            IndexField::Size => b"s".to_vec(),
            IndexField::Name => b"n".to_vec(),
            IndexField::Width => b"w".to_vec(),
            IndexField::Height => b"h".to_vec(),
            IndexField::Format => b"f".to_vec(),
            IndexField::Mimetype => b"m".to_vec(),
            IndexField::DeletedAt => b"x".to_vec(),
            IndexField::BinaryHash => b"b".to_vec(),
            IndexField::User(key) => {
                let mut t = Vec::with_capacity(key.len() + 2);
                t.push(b'u');
                t.extend_from_slice(key.as_bytes());
                t.push(0);
                t
            }
        }
    }

    /// Whether the field keeps counters per value (for facets and exact totals).
    pub fn counted(&self) -> bool {
        matches!(
            self,
            IndexField::Format | IndexField::Mimetype | IndexField::User(_)
        )
    }

    /// Whether the field may hold several values per image (and cannot be sorted by).
    pub fn multi_valued(&self) -> bool {
        matches!(self, IndexField::User(k) if k.starts_with("array:") || k.starts_with("array_text:"))
    }

    /// The image's values of this field (none when a user field is absent).
    pub fn values(&self, rec: &ImageRecord) -> Vec<IndexValue> {
        match self {
            IndexField::Created => vec![IndexValue::Num(rec.created_ns as f64)],
            IndexField::Size => vec![IndexValue::Num(rec.size as f64)],
            IndexField::Name => vec![IndexValue::Str(rec.name.clone())],
            IndexField::Width => vec![IndexValue::Num(f64::from(rec.width))],
            IndexField::Height => vec![IndexValue::Num(f64::from(rec.height))],
            IndexField::Format => vec![IndexValue::Str(rec.format.clone())],
            IndexField::Mimetype => vec![IndexValue::Str(rec.mimetype.clone())],
            IndexField::DeletedAt => match (rec.deleted, rec.deleted_at) {
                (true, Some(at)) => vec![IndexValue::Num(at as f64)],
                _ => Vec::new(),
            },
            IndexField::BinaryHash => vec![IndexValue::Str(rec.binary_hash.clone())],
            IndexField::User(key) => match rec.user_metadata.get(key) {
                Some(v) => json_values(v),
                None => Vec::new(),
            },
        }
    }
}

fn json_values(v: &Value) -> Vec<IndexValue> {
    match v {
        Value::Number(n) => n.as_f64().map(IndexValue::Num).into_iter().collect(),
        Value::String(s) => vec![IndexValue::Str(s.clone())],
        Value::Bool(b) => vec![IndexValue::Str(b.to_string())],
        Value::Array(items) => {
            let mut out: Vec<IndexValue> = Vec::new();
            for item in items.iter().flat_map(json_values) {
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Order-preserving bytes of a number: IEEE 754 with the sign bit flipped for positives and
/// every bit flipped for negatives, written as ten 7-bit digits. No byte is 0xff: sled 0.34's
/// reverse iteration can lose its way among keys with runs of 0xff bytes.
pub fn ordered_f64(f: f64) -> [u8; 10] {
    let bits = f.to_bits();
    let bits = if bits >> 63 == 0 {
        bits | (1 << 63)
    } else {
        !bits
    };
    digits7(bits)
}

/// A u64 as ten big-endian 7-bit digits (order-preserving, never 0xff).
fn digits7(v: u64) -> [u8; 10] {
    let mut out = [0u8; 10];
    for (i, b) in out.iter_mut().enumerate() {
        *b = ((v >> (7 * (9 - i))) & 0x7f) as u8;
    }
    out
}

/// Appends a string so that byte order is string order and the end is unambiguous: zero
/// bytes are escaped as `00 ff`, and the string ends with `00 01`.
fn push_str(out: &mut Vec<u8>, s: &str, terminate: bool) {
    for b in s.bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    if terminate {
        out.extend_from_slice(&[0, 1]);
    }
}

/// The encoded value, as it appears in entry and counter keys.
pub fn encode_value(v: &IndexValue) -> Vec<u8> {
    match v {
        IndexValue::Num(f) => {
            let mut out = vec![NUM];
            out.extend_from_slice(&ordered_f64(*f));
            out
        }
        IndexValue::Str(s) => {
            let mut out = vec![STR];
            push_str(&mut out, s, true);
            out
        }
    }
}

/// The start of every encoded string that begins with `p`.
pub fn string_prefix(p: &str) -> Vec<u8> {
    let mut out = vec![STR];
    push_str(&mut out, p, false);
    out
}

/// Decodes an encoded string value back (for facets).
pub fn decode_str(enc: &[u8]) -> Option<String> {
    let body = enc.strip_prefix(&[STR])?;
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = *body.get(i)?;
        if b == 0 {
            match body.get(i + 1)? {
                0xff => out.push(0),
                1 => return String::from_utf8(out).ok(),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    None
}

/// Length of the encoded value at the start of `bytes`.
fn value_len(bytes: &[u8]) -> Option<usize> {
    match *bytes.first()? {
        NUM => (bytes.len() >= 11).then_some(11),
        STR => {
            let mut i = 1;
            loop {
                match bytes.get(i)? {
                    0 => {
                        if *bytes.get(i + 1)? == 1 {
                            return Some(i + 2);
                        }
                        i += 2;
                    }
                    _ => i += 1,
                }
            }
        }
        _ => None,
    }
}

/// The creation time (nanoseconds since 1970, up to 2554) as bytes that sort like the time.
pub fn encode_created(ns: i128) -> [u8; CREATED_LEN] {
    digits7(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
}

/// `org \0 flag`: the start of every entry of one organization's live or deleted images.
pub fn org_prefix(org: &str, deleted: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(org.len() + 2);
    k.extend_from_slice(org.as_bytes());
    k.push(0);
    k.push(if deleted { b'd' } else { b'l' });
    k
}

/// The start of every entry of one field.
pub fn field_prefix(org: &str, deleted: bool, field: &IndexField) -> Vec<u8> {
    let mut k = org_prefix(org, deleted);
    k.extend_from_slice(&field.tag());
    k
}

/// Key of the image counter of an organization.
pub fn total_key(org: &str, deleted: bool) -> Vec<u8> {
    let mut k = org_prefix(org, deleted);
    k.extend_from_slice(TOTAL);
    k
}

/// A position within one field's entries: the encoded value (empty for `created`), the
/// creation time and the hash. Positions of one field sort like their keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub value: Vec<u8>,
    pub created: [u8; CREATED_LEN],
    pub hash: String,
}

impl Position {
    pub fn of(field: &IndexField, value: Option<&IndexValue>, rec: &ImageRecord) -> Position {
        Position {
            value: match (field, value) {
                (IndexField::Created, _) | (_, None) => Vec::new(),
                (_, Some(v)) => encode_value(v),
            },
            created: encode_created(rec.created_ns),
            hash: rec.hash.clone(),
        }
    }

    /// The part of the entry key after the field prefix.
    pub fn suffix(&self) -> Vec<u8> {
        let mut k = self.value.clone();
        k.extend_from_slice(&self.created);
        k.extend_from_slice(self.hash.as_bytes());
        k
    }

    /// Reads a position from the part of an entry key after the field prefix.
    pub fn parse(field: &IndexField, suffix: &[u8]) -> Option<Position> {
        let vlen = match field {
            IndexField::Created => 0,
            _ => value_len(suffix)?,
        };
        let value = suffix.get(..vlen)?.to_vec();
        let created: [u8; CREATED_LEN] = suffix.get(vlen..vlen + CREATED_LEN)?.try_into().ok()?;
        let hash = std::str::from_utf8(suffix.get(vlen + CREATED_LEN..)?)
            .ok()?
            .to_string();
        Some(Position {
            value,
            created,
            hash,
        })
    }
}

/// The counter key of the number of images, after `org \0 flag`.
pub const TOTAL: &[u8] = b"#";

/// Every index entry key of a record, and the counter keys it adds one to.
pub fn record_keys(rec: &ImageRecord) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let prefix = org_prefix(&rec.organization, rec.deleted);
    let (entries, counters) = record_entries(rec);
    let whole = |keys: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        keys.into_iter()
            .map(|k| {
                let mut full = prefix.clone();
                full.extend_from_slice(&k);
                full
            })
            .collect()
    };
    (whole(entries), whole(counters))
}

/// [`record_keys`] and the [`binary_entry`]: the keys of the embedded records, where the
/// binary-hash lookup is one more field of the listing index rather than a key of its own
/// (sled 0.34 keeps memory for every key after an open).
pub fn embedded_keys(rec: &ImageRecord) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut entries, counters) = record_keys(rec);
    entries.push(binary_entry(rec));
    (entries, counters)
}

/// The entry key of a record's [`IndexField::BinaryHash`].
pub fn binary_entry(rec: &ImageRecord) -> Vec<u8> {
    let field = IndexField::BinaryHash;
    let value = field.values(rec).pop();
    let mut k = field_prefix(&rec.organization, rec.deleted, &field);
    k.extend_from_slice(&Position::of(&field, value.as_ref(), rec).suffix());
    k
}

/// The entry and counter keys of a record without their `org \0 flag` start ([`org_prefix`]):
/// what a backend that keeps the organization and the flag in columns of their own stores.
pub fn record_entries(rec: &ImageRecord) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut entries = Vec::new();
    let mut counters = vec![TOTAL.to_vec()];
    let mut fields = vec![
        IndexField::Created,
        IndexField::Size,
        IndexField::Name,
        IndexField::Width,
        IndexField::Height,
        IndexField::Format,
        IndexField::Mimetype,
        IndexField::DeletedAt,
    ];
    fields.extend(
        rec.user_metadata
            .keys()
            .map(|k| IndexField::User(k.clone())),
    );
    for field in fields {
        let tag = field.tag();
        for v in field.values(rec) {
            let pos = Position::of(&field, Some(&v), rec);
            let mut k = tag.clone();
            k.extend_from_slice(&pos.suffix());
            entries.push(k);
            if field.counted() && matches!(v, IndexValue::Str(_)) {
                let mut c = tag.clone();
                c.extend_from_slice(&pos.value);
                counters.push(c);
            }
        }
    }
    (entries, counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_encode_in_order() {
        let nums = [-1e300, -5.5, -0.0, 0.0, 1.0, 2.5, 1e18, f64::INFINITY];
        for w in nums.windows(2) {
            assert!(ordered_f64(w[0]) <= ordered_f64(w[1]), "{w:?}");
        }
        let strs = ["", "\0", "\0a", "a", "a\0", "ab", "b"];
        for w in strs.windows(2) {
            let (a, b) = (
                encode_value(&IndexValue::Str(w[0].into())),
                encode_value(&IndexValue::Str(w[1].into())),
            );
            assert!(a < b, "{w:?}");
            assert_eq!(decode_str(&a).as_deref(), Some(w[0]));
            assert_eq!(value_len(&a), Some(a.len()));
        }
        assert!(encode_created(0) < encode_created(1));
        for v in [0u64, 1, 127, 128, u64::MAX / 3, u64::MAX - 1, u64::MAX] {
            let d = digits7(v);
            assert!(d.iter().all(|b| *b < 0x80));
            assert!(v == u64::MAX || d < digits7(v + 1));
        }
        assert!(
            encode_created(1_700_000_000_000_000_000) < encode_created(1_700_000_000_000_000_001)
        );
    }
}

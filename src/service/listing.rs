//! Listing and searching source images (spec §4.4): filters, sorting, offset and cursor paging.
//! An organization's records are read with one prefix scan and filtered and sorted in memory,
//! which stays fast for the tens of thousands of images a small team keeps.

use crate::error::{Error, Result};
use crate::model::image::ImageRecord;
use base64::Engine;
use serde_json::{json, Value};
use std::cmp::Ordering;

/// A value to sort or compare by.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SortVal {
    Num(f64),
    Str(String),
    Null(Option<()>),
}

impl SortVal {
    fn cmp(&self, other: &SortVal) -> Ordering {
        match (self, other) {
            (SortVal::Num(a), SortVal::Num(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (SortVal::Str(a), SortVal::Str(b)) => a.cmp(b),
            // Missing values sort after present ones.
            (SortVal::Null(_), SortVal::Null(_)) => Ordering::Equal,
            (SortVal::Null(_), _) => Ordering::Greater,
            (_, SortVal::Null(_)) => Ordering::Less,
            (SortVal::Num(_), SortVal::Str(_)) => Ordering::Less,
            (SortVal::Str(_), SortVal::Num(_)) => Ordering::Greater,
        }
    }
}

/// A field a list can be sorted or filtered by.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Hash,
    ShortHash,
    BinaryHash,
    Created,
    Size,
    Name,
    Width,
    Height,
    Format,
    Mimetype,
    /// A user-metadata key as stored (`foo`, `int:count`).
    User(String),
}

impl Field {
    fn parse(raw: &str) -> Option<Field> {
        Some(match raw {
            "hash" => Field::Hash,
            "short_hash" => Field::ShortHash,
            "binaryhash" | "binary_hash" | "binaryHash" => Field::BinaryHash,
            "created" => Field::Created,
            "size" => Field::Size,
            "name" => Field::Name,
            "width" => Field::Width,
            "height" => Field::Height,
            "format" => Field::Format,
            "mimetype" => Field::Mimetype,
            other => {
                let key = other.strip_prefix("user:")?;
                let key = crate::model::image::normalize_meta_key(key).ok()?;
                Field::User(key)
            }
        })
    }

    fn value(&self, rec: &ImageRecord) -> SortVal {
        match self {
            Field::Hash | Field::ShortHash => SortVal::Str(rec.hash.clone()),
            Field::BinaryHash => SortVal::Str(rec.binary_hash.clone()),
            Field::Created => SortVal::Num(rec.created_ns as f64),
            Field::Size => SortVal::Num(rec.size as f64),
            Field::Name => SortVal::Str(rec.name.clone()),
            Field::Width => SortVal::Num(f64::from(rec.width)),
            Field::Height => SortVal::Num(f64::from(rec.height)),
            Field::Format => SortVal::Str(rec.format.clone()),
            Field::Mimetype => SortVal::Str(rec.mimetype.clone()),
            Field::User(key) => match rec.user_metadata.get(key) {
                Some(Value::Number(n)) => n.as_f64().map_or(SortVal::Null(None), SortVal::Num),
                Some(Value::String(s)) => SortVal::Str(s.clone()),
                Some(Value::Bool(b)) => SortVal::Str(b.to_string()),
                Some(Value::Array(a)) => SortVal::Str(
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                _ => SortVal::Null(None),
            },
        }
    }
}

/// How one filter value matches.
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(String),
    Prefix(String),
    /// `[a,b]` inclusive, `{a,b}` exclusive, either end may be open.
    Range {
        low: Option<(String, bool)>,
        high: Option<(String, bool)>,
    },
}

impl Matcher {
    fn parse(raw: &str) -> Matcher {
        let bytes = raw.as_bytes();
        let opens = matches!(bytes.first(), Some(b'[' | b'{'));
        let closes = matches!(bytes.last(), Some(b']' | b'}'));
        if opens && closes && raw.len() >= 2 && raw.contains(',') {
            let low_incl = bytes.first() == Some(&b'[');
            let high_incl = bytes.last() == Some(&b']');
            let inner = raw.get(1..raw.len() - 1).unwrap_or("");
            let (a, b) = inner.split_once(',').unwrap_or((inner, ""));
            let clean = |s: &str| s.trim().trim_matches('\'').trim_matches('"').to_string();
            let low = (!a.trim().is_empty() && a.trim() != "*").then(|| (clean(a), low_incl));
            let high = (!b.trim().is_empty() && b.trim() != "*").then(|| (clean(b), high_incl));
            return Matcher::Range { low, high };
        }
        match raw.strip_suffix('*') {
            Some(p) => Matcher::Prefix(p.to_string()),
            None => Matcher::Exact(raw.to_string()),
        }
    }

    fn matches(&self, field: &Field, v: &SortVal, rec: &ImageRecord) -> bool {
        let as_num = |s: &str| -> Option<f64> {
            if *field == Field::Created {
                crate::model::time::parse_rfc3339(s).map(|t| t as f64 * 1e9)
            } else {
                s.parse::<f64>().ok()
            }
        };
        match (self, v) {
            (Matcher::Exact(want), SortVal::Str(s)) => {
                if let Field::User(key) = field {
                    if let Some(Value::Array(items)) = rec.user_metadata.get(key) {
                        return items.iter().any(|i| i.as_str() == Some(want.as_str()));
                    }
                }
                s == want || (*field == Field::ShortHash && s.starts_with(want.as_str()))
            }
            (Matcher::Exact(want), SortVal::Num(n)) => {
                if *field == Field::Created {
                    return rec.created == *want
                        || as_num(want).is_some_and(|w| (w - n).abs() < 1e9);
                }
                want.parse::<f64>().is_ok_and(|w| w == *n)
            }
            (Matcher::Prefix(p), SortVal::Str(s)) => s.starts_with(p.as_str()),
            (Matcher::Prefix(p), SortVal::Num(n)) => n.to_string().starts_with(p.as_str()),
            (Matcher::Range { low, high }, val) => {
                let check = |bound: &Option<(String, bool)>, upper: bool| -> bool {
                    let Some((b, inclusive)) = bound else {
                        return true;
                    };
                    let ord = match val {
                        SortVal::Num(n) => match as_num(b) {
                            Some(bn) => n.partial_cmp(&bn).unwrap_or(Ordering::Equal),
                            None => return false,
                        },
                        SortVal::Str(s) => s.as_str().cmp(b.as_str()),
                        SortVal::Null(_) => return false,
                    };
                    match (upper, inclusive) {
                        (false, true) => ord != Ordering::Less,
                        (false, false) => ord == Ordering::Greater,
                        (true, true) => ord != Ordering::Greater,
                        (true, false) => ord == Ordering::Less,
                    }
                };
                check(low, false) && check(high, true)
            }
            (_, SortVal::Null(_)) => false,
        }
    }
}

/// A parsed list query.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub limit: usize,
    offset: usize,
    cursor: Option<Vec<SortVal>>,
    sort: Vec<(Field, bool)>,
    filters: Vec<(Field, Matcher)>,
    any: bool,
    pub deleted: bool,
    /// The query pairs as given, for building `links`.
    raw: Vec<(String, String)>,
}

impl ListQuery {
    /// Parses query pairs; empty values count as absent (spec §11.9).
    pub fn parse(pairs: &[(String, String)]) -> Result<ListQuery> {
        let mut q = ListQuery {
            limit: 100,
            offset: 0,
            cursor: None,
            sort: vec![(Field::Created, false)],
            filters: Vec::new(),
            any: false,
            deleted: false,
            raw: pairs.to_vec(),
        };
        for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
            match k.as_str() {
                "limit" => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|l| *l <= 2000)
                        .ok_or_else(|| {
                            Error::Invalid("limit must be a number from 0 to 2000".into())
                        })?
                }
                "offset" => match v.parse::<usize>() {
                    Ok(n) => q.offset = n,
                    Err(_) => q.cursor = Some(decode_cursor(v)?),
                },
                "sort" => {
                    q.sort.clear();
                    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let (name, dir) = match part.rsplit_once(' ') {
                            Some((n, d)) if d == "asc" || d == "desc" => (n.trim(), d),
                            _ => (part, "asc"),
                        };
                        let field = Field::parse(name)
                            .ok_or_else(|| Error::Invalid(format!("cannot sort by '{name}'")))?;
                        q.sort.push((field, dir == "asc"));
                    }
                }
                "deleted" => q.deleted = v == "true",
                "operator" => q.any = v.eq_ignore_ascii_case("or"),
                "facets" | "binaryHash" => {}
                other => {
                    let field = Field::parse(other)
                        .ok_or_else(|| Error::Invalid(format!("cannot filter by '{other}'")))?;
                    q.filters.push((field, Matcher::parse(v)));
                }
            }
        }
        Ok(q)
    }

    fn key(&self, rec: &ImageRecord) -> Vec<SortVal> {
        let mut k: Vec<SortVal> = self.sort.iter().map(|(f, _)| f.value(rec)).collect();
        k.push(SortVal::Str(rec.hash.clone()));
        k
    }

    fn compare(&self, a: &[SortVal], b: &[SortVal]) -> Ordering {
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            let asc = self.sort.get(i).is_none_or(|(_, asc)| *asc);
            let ord = x.cmp(y);
            let ord = if asc { ord } else { ord.reverse() };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    fn accepts(&self, rec: &ImageRecord) -> bool {
        if rec.deleted != self.deleted {
            return false;
        }
        if self.filters.is_empty() {
            return true;
        }
        let mut results = self
            .filters
            .iter()
            .map(|(f, m)| m.matches(f, &f.value(rec), rec));
        if self.any {
            results.any(|x| x)
        } else {
            results.all(|x| x)
        }
    }

    /// Filters, sorts and pages `records`; `short` gives each item's short hash.
    pub fn run(
        &self,
        org: &str,
        records: Vec<ImageRecord>,
        short: impl Fn(&ImageRecord) -> Result<String>,
    ) -> Result<Value> {
        let mut keyed: Vec<(Vec<SortVal>, ImageRecord)> = records
            .into_iter()
            .filter(|r| self.accepts(r))
            .map(|r| (self.key(&r), r))
            .collect();
        keyed.sort_by(|a, b| self.compare(&a.0, &b.0));
        let total = keyed.len();
        let start = match &self.cursor {
            Some(c) => keyed
                .iter()
                .position(|(k, _)| self.compare(k, c) == Ordering::Greater)
                .unwrap_or(total),
            None => self.offset.min(total),
        };
        let end = (start + self.limit).min(total);
        let page = keyed.get(start..end).unwrap_or_default();
        self.answer(org, total, start, page, short)
    }

    /// The default listing (newest first, no filters, no cursor) of live images: what the
    /// creation-time index can answer without reading every record.
    pub fn plain_page(&self) -> Option<(usize, usize)> {
        let default_sort = self.sort == [(Field::Created, false)];
        (default_sort && self.filters.is_empty() && self.cursor.is_none() && !self.deleted)
            .then_some((self.offset, self.limit))
    }

    /// Builds the answer for one page of an already-ordered listing of `total` records that
    /// starts at `start`.
    pub fn page(
        &self,
        org: &str,
        total: usize,
        start: usize,
        records: Vec<ImageRecord>,
        short: impl Fn(&ImageRecord) -> Result<String>,
    ) -> Result<Value> {
        let keyed: Vec<(Vec<SortVal>, ImageRecord)> =
            records.into_iter().map(|r| (self.key(&r), r)).collect();
        self.answer(org, total, start, &keyed, short)
    }

    fn answer(
        &self,
        org: &str,
        total: usize,
        start: usize,
        page: &[(Vec<SortVal>, ImageRecord)],
        short: impl Fn(&ImageRecord) -> Result<String>,
    ) -> Result<Value> {
        let end = start + page.len();
        let items: Vec<Value> = page
            .iter()
            .map(|(_, r)| Ok(r.to_json(&short(r)?)))
            .collect::<Result<_>>()?;
        let mut links = serde_json::Map::new();
        let base: Vec<(String, String)> = self
            .raw
            .iter()
            .filter(|(k, _)| k != "offset" && k != "limit")
            .cloned()
            .collect();
        let link = |offset: &str| -> Value {
            let mut pairs = base.clone();
            pairs.push(("limit".into(), self.limit.to_string()));
            pairs.push(("offset".into(), offset.to_string()));
            let qs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
                .collect();
            json!({ "href": format!("/sourceimages/{org}?{}", qs.join("&")) })
        };
        if self.cursor.is_none() && start > 0 && self.limit > 0 {
            links.insert(
                "prev".into(),
                link(&start.saturating_sub(self.limit).to_string()),
            );
        }
        let cursor = page.last().map(|(k, _)| encode_cursor(k));
        if end < total && self.limit > 0 {
            let next = match (&self.cursor, &cursor) {
                (Some(_), Some(c)) => c.clone(),
                _ => end.to_string(),
            };
            links.insert("next".into(), link(&next));
        }
        let mut out = json!({ "total": total, "items": items, "links": links });
        if let (Some(c), Value::Object(m)) = (cursor, &mut out) {
            m.insert("cursor".into(), Value::String(c));
        }
        Ok(out)
    }
}

fn encode_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn encode_cursor(key: &[SortVal]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(key).unwrap_or_default())
}

fn decode_cursor(raw: &str) -> Result<Vec<SortVal>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            Error::Invalid("offset must be a number or a cursor from a previous answer".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(hash: &str, name: &str, size: u64, ns: i128) -> ImageRecord {
        ImageRecord {
            organization: "o".into(),
            hash: hash.into(),
            binary_hash: "b".repeat(40),
            blob: "x".into(),
            name: name.into(),
            format: name.rsplit('.').next().unwrap_or("").into(),
            mimetype: "image/jpeg".into(),
            size,
            width: 10,
            height: 10,
            created: String::new(),
            created_ns: ns,
            user_metadata: serde_json::from_value(json!({"int:n": size, "tag": name})).unwrap(),
            dynamic_metadata: Default::default(),
            static_metadata: Default::default(),
            deleted: false,
            deleted_at: None,
            protected: false,
            locked: false,
            opaque: true,
            animated: false,
        }
    }

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(v: &Value) -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn sample() -> Vec<ImageRecord> {
        vec![
            rec("aaa", "a.jpg", 30, 1),
            rec("bbb", "b.png", 10, 2),
            rec("ccc", "c.jpg", 20, 3),
        ]
    }

    #[test]
    fn the_default_order_is_newest_first() {
        let q = ListQuery::parse(&[]).unwrap();
        let v = q.run("o", sample(), |r| Ok(r.hash.clone())).unwrap();
        assert_eq!(names(&v), ["c.jpg", "b.png", "a.jpg"]);
        assert_eq!(v["total"], 3);
    }

    #[test]
    fn sorting_by_size_and_user_fields_works_both_ways() {
        let q = ListQuery::parse(&pairs(&[("sort", "size asc")])).unwrap();
        assert_eq!(
            names(&q.run("o", sample(), |r| Ok(r.hash.clone())).unwrap()),
            ["b.png", "c.jpg", "a.jpg"]
        );
        let q = ListQuery::parse(&pairs(&[("sort", "user:int:n desc")])).unwrap();
        assert_eq!(
            names(&q.run("o", sample(), |r| Ok(r.hash.clone())).unwrap()),
            ["a.jpg", "c.jpg", "b.png"]
        );
    }

    #[test]
    fn filters_match_exact_prefix_and_ranges() {
        let run = |q: &[(&str, &str)]| {
            names(
                &ListQuery::parse(&pairs(q))
                    .unwrap()
                    .run("o", sample(), |r| Ok(r.hash.clone()))
                    .unwrap(),
            )
        };
        assert_eq!(run(&[("name", "b.png")]), ["b.png"]);
        assert_eq!(run(&[("name", "a*"), ("sort", "name")]), ["a.jpg"]);
        assert_eq!(run(&[("size", "[15,30}"), ("sort", "size")]), ["c.jpg"]);
        assert_eq!(
            run(&[("user:int:n", "[20,}"), ("sort", "size")]),
            ["c.jpg", "a.jpg"]
        );
        assert_eq!(run(&[("user:tag", "a.jpg")]), ["a.jpg"]);
        assert_eq!(
            run(&[("format", "jpg"), ("sort", "name")]),
            ["a.jpg", "c.jpg"]
        );
    }

    #[test]
    fn cursor_paging_walks_every_item_once() {
        let mut seen = Vec::new();
        let mut offset = String::new();
        loop {
            let q = ListQuery::parse(&pairs(&[("limit", "2"), ("offset", &offset)])).unwrap();
            let v = q.run("o", sample(), |r| Ok(r.hash.clone())).unwrap();
            let page = names(&v);
            if page.is_empty() {
                break;
            }
            seen.extend(page);
            offset = v["cursor"].as_str().unwrap().to_string();
        }
        assert_eq!(seen, ["c.jpg", "b.png", "a.jpg"]);
    }

    #[test]
    fn offset_paging_gives_links() {
        let q = ListQuery::parse(&pairs(&[("limit", "1"), ("offset", "1")])).unwrap();
        let v = q.run("o", sample(), |r| Ok(r.hash.clone())).unwrap();
        assert_eq!(names(&v), ["b.png"]);
        assert!(v["links"]["prev"]["href"]
            .as_str()
            .unwrap()
            .contains("offset=0"));
        assert!(v["links"]["next"]["href"]
            .as_str()
            .unwrap()
            .contains("offset=2"));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(ListQuery::parse(&pairs(&[("limit", "5000")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("sort", "bogus desc")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("offset", "not-a-cursor!")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("limit", ""), ("offset", "")])).is_ok());
    }
}

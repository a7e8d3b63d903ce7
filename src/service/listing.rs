//! Listing and searching source images (spec §4.4): filters, sorting, offset and cursor paging,
//! facets — answered from the listing indexes ([`crate::storage::index`]), never by reading an
//! organization's every record.
//!
//! A query is planned, from cheapest to dearest:
//! 1. a filter that matches few images (at most 1,000) gives the candidates, which are
//!    read, checked against every filter and sorted in memory;
//! 2. otherwise an index already in the asked order is walked: the sort field's (narrowed by a
//!    filter on that field), or one value of an exact filter for the default order by creation;
//!    other filters are checked on each record walked;
//! 3. otherwise a filter matching at most 10,000 images gives the candidates as in 1.;
//! 4. otherwise the sort field's whole index is walked with every filter checked.
//!
//! Walks that check filters record by record stop after examining 20,000 entries: a page
//! that needs more answers 400, and `total` is then a lower bound (`total_relation: "gte"`).
//! Order is total: by the sort fields, then creation time and hash in the first field's
//! direction; images without a sorted user field come last. A cursor is the exact position of
//! the last item, so a cursor walk returns every image exactly once.

use crate::error::{Error, Result};
use crate::model::image::ImageRecord;
use crate::storage::index::{self, IndexField, IndexValue, Position};
use crate::storage::query::{next_prefix, Span};
use crate::storage::Records;
use base64::Engine;
use serde_json::{json, Value};
use std::cmp::Ordering;

/// How much one listing may read.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Candidates read and sorted in memory without a second thought.
    small: usize,
    /// At most this many candidates are read and sorted in memory.
    collect: usize,
    /// At most this many index entries are examined record by record for one answer.
    examine: usize,
    /// At most this many matches are counted for `total` beyond the page.
    count: usize,
    /// At most this many index positions of one filter are ordered by creation time.
    positions: usize,
    /// A walk of the sort field's index in search of the members of one filter's candidate
    /// set is tried only when it is expected to take at most half this many entries.
    member_walk: usize,
}

/// The documented bounds (README, "Listing large libraries").
const BOUNDS: Bounds = Bounds {
    small: 1_000,
    collect: 10_000,
    examine: 20_000,
    count: 10_000,
    positions: 20_000,
    member_walk: 50_000,
};

/// About how many index entries can be walked for the cost of reading one record: a walk
/// of the sort field's index is preferred to sorting a candidate set in memory only when
/// it is expected to cost less.
const ENTRIES_PER_RECORD: usize = 8;

/// A field a list can be sorted or filtered by.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Hash,
    ShortHash,
    BinaryHash,
    Indexed(IndexField),
}

impl Field {
    fn parse(raw: &str) -> Option<Field> {
        Some(match raw {
            "hash" => Field::Hash,
            "short_hash" => Field::ShortHash,
            "binaryhash" | "binary_hash" | "binaryHash" => Field::BinaryHash,
            "created" => Field::Indexed(IndexField::Created),
            "size" => Field::Indexed(IndexField::Size),
            "name" => Field::Indexed(IndexField::Name),
            "width" => Field::Indexed(IndexField::Width),
            "height" => Field::Indexed(IndexField::Height),
            "format" => Field::Indexed(IndexField::Format),
            "mimetype" => Field::Indexed(IndexField::Mimetype),
            other => {
                let key = other.strip_prefix("user:")?;
                let key = crate::model::image::normalize_meta_key(key).ok()?;
                Field::Indexed(IndexField::User(key))
            }
        })
    }

    /// The sort component of a record: `None` when a user field is absent.
    fn component(&self, rec: &ImageRecord) -> Option<Vec<u8>> {
        match self {
            Field::Hash | Field::ShortHash => Some(rec.hash.as_bytes().to_vec()),
            Field::BinaryHash => Some(rec.binary_hash.as_bytes().to_vec()),
            Field::Indexed(IndexField::Created) => {
                Some(index::encode_created(rec.created_ns).to_vec())
            }
            Field::Indexed(f) => f.values(rec).first().map(index::encode_value),
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

fn as_num(field: &IndexField, s: &str) -> Option<f64> {
    if *field == IndexField::Created {
        crate::model::time::parse_rfc3339(s).map(|t| t as f64 * 1e9)
    } else {
        s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
    }
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

    /// Whether a record matches: any of its values of the field does.
    fn matches(&self, field: &Field, rec: &ImageRecord) -> bool {
        let f = match field {
            Field::Hash => return self.matches_str(&rec.hash),
            Field::ShortHash => {
                return match self {
                    Matcher::Exact(want) | Matcher::Prefix(want) => rec.hash.starts_with(want),
                    Matcher::Range { .. } => self.matches_str(&rec.hash),
                }
            }
            Field::BinaryHash => return self.matches_str(&rec.binary_hash),
            Field::Indexed(f) => f,
        };
        if *f == IndexField::Created {
            if let Matcher::Exact(want) = self {
                if rec.created == *want {
                    return true;
                }
            }
        }
        f.values(rec).iter().any(|v| match v {
            IndexValue::Str(s) => self.matches_str(s),
            IndexValue::Num(n) => self.matches_num(f, *n),
        })
    }

    fn matches_str(&self, s: &str) -> bool {
        match self {
            Matcher::Exact(want) => s == want,
            Matcher::Prefix(p) => s.starts_with(p.as_str()),
            Matcher::Range { low, high } => {
                low.as_ref().is_none_or(|(b, incl)| {
                    if *incl {
                        s >= b.as_str()
                    } else {
                        s > b.as_str()
                    }
                }) && high.as_ref().is_none_or(|(b, incl)| {
                    if *incl {
                        s <= b.as_str()
                    } else {
                        s < b.as_str()
                    }
                })
            }
        }
    }

    fn matches_num(&self, field: &IndexField, n: f64) -> bool {
        match self {
            Matcher::Exact(want) => match as_num(field, want) {
                Some(w) if *field == IndexField::Created => (w - n).abs() < 1e9,
                Some(w) => w == n,
                None => false,
            },
            Matcher::Prefix(p) => *field != IndexField::Created && n.to_string().starts_with(p),
            Matcher::Range { low, high } => {
                let ok = |bound: &Option<(String, bool)>, upper: bool| match bound {
                    None => true,
                    Some((b, incl)) => match as_num(field, b) {
                        None => false,
                        Some(b) => match (upper, incl) {
                            (false, true) => n >= b,
                            (false, false) => n > b,
                            (true, true) => n <= b,
                            (true, false) => n < b,
                        },
                    },
                };
                ok(low, false) && ok(high, true)
            }
        }
    }

    /// Index spans that hold every match (a superset), and whether they hold only matches,
    /// each image once.
    fn spans(&self, field: &IndexField) -> (Vec<Span>, bool) {
        let numeric = !matches!(
            field,
            IndexField::Name | IndexField::Format | IndexField::Mimetype
        );
        let textual = matches!(
            field,
            IndexField::Name | IndexField::Format | IndexField::Mimetype | IndexField::User(_)
        );
        // An exact value is indexed once per image, even in an array; a prefix or a range may
        // meet several values of one array.
        let once = !field.multi_valued() || matches!(self, Matcher::Exact(_));
        let num_key = |n: f64| {
            let mut k = vec![0x01];
            k.extend_from_slice(&index::ordered_f64(n));
            k
        };
        let created_key = |n: f64| index::encode_created(n as i128).to_vec();
        let mut spans = Vec::new();
        let mut exact = once;
        match self {
            Matcher::Exact(want) => {
                if textual {
                    spans.push(Span::prefixed(index::encode_value(&IndexValue::Str(
                        want.clone(),
                    ))));
                }
                if numeric {
                    if let Some(w) = as_num(field, want) {
                        if *field == IndexField::Created {
                            spans.push(Span {
                                from: created_key(w - 1e9 + 1.0),
                                to: Some(created_key(w + 1e9)),
                            });
                            exact = false;
                        } else {
                            spans.push(Span::prefixed(num_key(w)));
                            exact &= w != 0.0;
                        }
                    }
                }
            }
            Matcher::Prefix(p) => {
                if textual {
                    spans.push(Span::prefixed(index::string_prefix(p)));
                }
                if numeric && *field != IndexField::Created {
                    spans.push(Span {
                        from: vec![0x01],
                        to: Some(vec![0x02]),
                    });
                    exact = false;
                }
            }
            Matcher::Range { low, high } => {
                if textual {
                    let from = match low {
                        None => vec![0x02],
                        Some((b, incl)) => {
                            let k = index::encode_value(&IndexValue::Str(b.clone()));
                            if *incl {
                                k
                            } else {
                                next_prefix(&k).unwrap_or(k)
                            }
                        }
                    };
                    let to = match high {
                        None => vec![0x03],
                        Some((b, incl)) => {
                            let k = index::encode_value(&IndexValue::Str(b.clone()));
                            if *incl {
                                next_prefix(&k).unwrap_or(vec![0x03])
                            } else {
                                k
                            }
                        }
                    };
                    spans.push(Span { from, to: Some(to) });
                }
                let parse = |b: &Option<(String, bool)>| match b {
                    None => Some(None),
                    Some((s, incl)) => as_num(field, s).map(|n| Some((n, *incl))),
                };
                if let (true, Some(lo), Some(hi)) = (numeric, parse(low), parse(high)) {
                    if *field == IndexField::Created {
                        spans.push(Span {
                            from: lo.map_or(vec![0], |(n, _)| created_key(n.floor())),
                            to: hi.map(|(n, _)| created_key(n.ceil() + 1.0)),
                        });
                        exact = false;
                    } else {
                        let from = match lo {
                            None => vec![0x01],
                            Some((n, true)) => num_key(n),
                            Some((n, false)) => next_prefix(&num_key(n)).unwrap_or(vec![0x02]),
                        };
                        let to = match hi {
                            None => vec![0x02],
                            Some((n, true)) => next_prefix(&num_key(n)).unwrap_or(vec![0x02]),
                            Some((n, false)) => num_key(n),
                        };
                        // -0 and 0 are equal numbers with different bytes.
                        exact &=
                            lo.is_none_or(|(n, _)| n != 0.0) && hi.is_none_or(|(n, _)| n != 0.0);
                        spans.push(Span { from, to: Some(to) });
                    }
                }
            }
        }
        (spans, exact)
    }
}

/// What one answer has learned of a source's index entries, so that no step counts them twice.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Counted {
    Unknown,
    Exactly(usize),
    /// More than this many.
    Over(usize),
}

impl Counted {
    /// Whether the entries are known to be more than `cap`.
    fn over(self, cap: usize) -> bool {
        match self {
            Counted::Unknown => false,
            Counted::Exactly(n) => n > cap,
            Counted::Over(c) => c >= cap,
        }
    }
}

/// Where a filter's candidates come from.
enum Source {
    /// These images (hash lookups); `None`: more than could be collected.
    Hashes(Option<Vec<String>>),
    /// Entries of an index; `exact`: the spans hold exactly the matches, each once.
    Index {
        field: IndexField,
        spans: Vec<Span>,
        exact: bool,
        /// One span of one value: its entries are in creation order.
        single: bool,
    },
    /// No index narrows it.
    None,
}

/// One component of an item's position in the answer: `None` for an absent user field.
type Component = Option<Vec<u8>>;

/// A parsed list query.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub limit: usize,
    offset: usize,
    cursor: Option<Vec<Component>>,
    sort: Vec<(Field, bool)>,
    filters: Vec<(Field, Matcher)>,
    any: bool,
    pub deleted: bool,
    facets: Vec<(String, IndexField)>,
    bounds: Bounds,
    /// The query pairs as given, for building `links`.
    raw: Vec<(String, String)>,
}

/// One walk of a field's index in order ([`ListQuery::walk`]).
struct Walk<'a> {
    field: &'a IndexField,
    span: &'a Span,
    reverse: bool,
    /// The images without the (user) field follow the entries.
    tail: bool,
    /// A filter known to hold for every entry of `span`.
    skip: Option<usize>,
    /// The number of matches, when it is known beforehand.
    total: Option<usize>,
}

/// One page, in order, with the total it is part of.
struct Answer {
    start: usize,
    page: Vec<ImageRecord>,
    total: usize,
    /// `total` is a lower bound: counting stopped.
    total_cut: bool,
    /// Matches follow the page.
    more: bool,
    facets: Option<serde_json::Map<String, Value>>,
}

/// The entries of `walk` whose image is one of `members` (every entry when there is no member
/// set); `stepped` counts the entries walked, and the walk ends, with `stopped` set, after
/// `bound` of them when there is a member set.
fn members_only<'a>(
    walk: Box<dyn Iterator<Item = crate::storage::Result<Position>> + 'a>,
    members: Option<&'a std::collections::HashSet<&'a str>>,
    bound: usize,
    stepped: &'a std::cell::Cell<usize>,
    stopped: &'a std::cell::Cell<bool>,
) -> impl Iterator<Item = crate::storage::Result<Position>> + 'a {
    walk.take_while(move |_| {
        let over = members.is_some() && stepped.get() >= bound;
        stepped.set(stepped.get() + 1);
        stopped.set(stopped.get() || over);
        !over
    })
    .filter(move |p| match (p, members) {
        (Ok(p), Some(m)) => m.contains(p.hash.as_str()),
        _ => true,
    })
}

/// Records read per round trip at first by [`Batched`], and at most.
const FIRST_BATCH: usize = 32;
const MAX_BATCH: usize = 256;

/// The records of a sequence of hashes (an index walk, positions in memory), read in batches
/// with [`Records::get_images`]: one round trip per batch on a database server instead of one
/// per record. A batch grows from [`FIRST_BATCH`] to [`MAX_BATCH`] as the reading goes on,
/// so a page that needs few records reads few more than it uses.
struct Batched<'a, I> {
    store: &'a dyn Records,
    org: &'a str,
    hashes: I,
    ready: std::collections::VecDeque<(String, Option<ImageRecord>)>,
    size: usize,
    /// Hashes passed over by [`Batched::pass`].
    skipped: usize,
    failed: Option<Error>,
    done: bool,
}

impl<'a, I: Iterator<Item = Result<String>>> Batched<'a, I> {
    fn new(store: &'a dyn Records, org: &'a str, hashes: I) -> Self {
        Batched {
            store,
            org,
            hashes,
            ready: Default::default(),
            size: FIRST_BATCH,
            skipped: 0,
            failed: None,
            done: false,
        }
    }

    /// Passes over `n` hashes without reading their records; the next batch reads `then`.
    fn pass(&mut self, n: usize, then: usize) {
        for _ in 0..n {
            match self.hashes.next() {
                Some(Ok(_)) => self.skipped += 1,
                Some(Err(e)) => {
                    self.failed = Some(e);
                    break;
                }
                None => break,
            }
        }
        self.size = then.clamp(1, MAX_BATCH);
    }

    fn fill(&mut self) -> Result<()> {
        let mut batch = Vec::with_capacity(self.size);
        while batch.len() < self.size {
            match self.hashes.next() {
                Some(hash) => batch.push(hash?),
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        self.size = (self.size * 2).min(MAX_BATCH);
        let records = self.store.get_images(self.org, &batch)?;
        self.ready.extend(batch.into_iter().zip(records));
        Ok(())
    }
}

impl<I: Iterator<Item = Result<String>>> Iterator for Batched<'_, I> {
    type Item = Result<(String, Option<ImageRecord>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.ready.is_empty() && !self.done {
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.ready.pop_front().map(Ok)
    }
}

/// A place of a page: its record, or its hash when the record is read with the page's others.
enum Slot {
    Read(Box<ImageRecord>),
    Unread(String),
}

impl Slot {
    /// The page's records in order, the unread ones read in one batch; records gone meanwhile
    /// are left out.
    fn resolve(store: &dyn Records, org: &str, page: Vec<Slot>) -> Result<Vec<ImageRecord>> {
        let unread: Vec<String> = page
            .iter()
            .filter_map(|s| match s {
                Slot::Unread(h) => Some(h.clone()),
                Slot::Read(_) => None,
            })
            .collect();
        let mut found = store.get_images(org, &unread)?.into_iter();
        Ok(page
            .into_iter()
            .filter_map(|s| match s {
                Slot::Read(r) => Some(*r),
                Slot::Unread(_) => found.next().flatten(),
            })
            .collect())
    }
}

impl ListQuery {
    /// Parses query pairs; empty values count as absent (spec §11.9).
    pub fn parse(pairs: &[(String, String)]) -> Result<ListQuery> {
        let mut q = ListQuery {
            limit: 100,
            offset: 0,
            cursor: None,
            sort: vec![(Field::Indexed(IndexField::Created), false)],
            filters: Vec::new(),
            any: false,
            deleted: false,
            facets: Vec::new(),
            bounds: BOUNDS,
            raw: pairs.to_vec(),
        };
        let mut cursor = None;
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
                    Err(_) => cursor = Some(v.clone()),
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
                        if matches!(&field, Field::Indexed(f) if f.multi_valued()) {
                            return Err(Error::Invalid(format!(
                                "cannot sort by '{name}': an array holds several values"
                            )));
                        }
                        q.sort.push((field, dir == "asc"));
                    }
                    if q.sort.is_empty() {
                        q.sort.push((Field::Indexed(IndexField::Created), false));
                    }
                }
                "deleted" => q.deleted = v == "true",
                "operator" => q.any = v.eq_ignore_ascii_case("or"),
                "facets" => {
                    for name in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        match Field::parse(name) {
                            Some(Field::Indexed(f @ IndexField::User(_))) => {
                                q.facets.push((name.to_string(), f))
                            }
                            _ => {
                                return Err(Error::Invalid(format!(
                                    "cannot count facets of '{name}': facets are counted for user:str:* and user:array:* fields"
                                )))
                            }
                        }
                    }
                }
                "binaryHash" => {}
                other => {
                    let field = Field::parse(other)
                        .ok_or_else(|| Error::Invalid(format!("cannot filter by '{other}'")))?;
                    q.filters.push((field, Matcher::parse(v)));
                }
            }
        }
        if let Some(raw) = cursor {
            q.cursor = Some(decode_cursor(&raw, q.sort.len() + 2)?);
        }
        Ok(q)
    }

    /// The position of a record in this query's order.
    fn key(&self, rec: &ImageRecord) -> Vec<Component> {
        let mut k: Vec<Component> = self.sort.iter().map(|(f, _)| f.component(rec)).collect();
        k.push(Some(index::encode_created(rec.created_ns).to_vec()));
        k.push(Some(rec.hash.as_bytes().to_vec()));
        k
    }

    fn compare(&self, a: &[Component], b: &[Component]) -> Ordering {
        let first = self.sort.first().is_none_or(|(_, asc)| *asc);
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            let asc = self.sort.get(i).map_or(first, |(_, asc)| *asc);
            let ord = match (x, y) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) if asc => x.cmp(y),
                (Some(x), Some(y)) => y.cmp(x),
            };
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
        let mut results = self.filters.iter().map(|(f, m)| m.matches(f, rec));
        if self.any {
            results.any(|x| x)
        } else {
            results.all(|x| x)
        }
    }

    /// Answers the query for `org` from the store's indexes.
    pub fn run(&self, store: &dyn Records, org: &str) -> Result<Value> {
        let answer = self.plan(store, org)?;
        self.answer(store, org, answer)
    }

    /// The records of the page this query selects, in order: the `items` of [`Self::run`],
    /// planned the same way, for answers that are not a JSON list (the ZIP download).
    pub fn records(&self, store: &dyn Records, org: &str) -> Result<Vec<ImageRecord>> {
        Ok(self.plan(store, org)?.page)
    }

    fn source(&self, store: &dyn Records, org: &str, field: &Field, m: &Matcher) -> Result<Source> {
        let hashes = |p: &str| -> Result<Source> {
            let found = store.hashes_with_prefix(org, p, self.bounds.collect + 1)?;
            Ok(Source::Hashes(
                (found.len() <= self.bounds.collect).then_some(found),
            ))
        };
        Ok(match (field, m) {
            (Field::Hash, Matcher::Exact(h)) => Source::Hashes(Some(vec![h.clone()])),
            (Field::Hash | Field::ShortHash, Matcher::Exact(p) | Matcher::Prefix(p)) => hashes(p)?,
            (Field::BinaryHash, Matcher::Exact(b)) => Source::Hashes(Some(
                store
                    .images_by_binary(org, &b.to_ascii_lowercase())?
                    .into_iter()
                    .map(|r| r.hash)
                    .collect(),
            )),
            (Field::Indexed(f), m) => {
                let (spans, exact) = m.spans(f);
                Source::Index {
                    single: matches!(m, Matcher::Exact(_))
                        && spans.len() == 1
                        && *f != IndexField::Created,
                    field: f.clone(),
                    spans,
                    exact,
                }
            }
            _ => Source::None,
        })
    }

    /// Collects a source's hashes, or `None` when there are more than `cap`.
    fn collect(
        &self,
        store: &dyn Records,
        org: &str,
        source: &Source,
        cap: usize,
    ) -> Result<Option<Vec<String>>> {
        match source {
            Source::Hashes(h) => Ok(h.clone().filter(|h| h.len() <= cap)),
            Source::None => Ok(None),
            Source::Index { field, spans, .. } => {
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                let mut walked = 0;
                for span in spans {
                    for p in store.index_walk(org, self.deleted, field, span, false) {
                        let p = p?;
                        walked += 1;
                        if walked > cap * 4 {
                            return Ok(None);
                        }
                        if seen.insert(p.hash.clone()) {
                            out.push(p.hash);
                            if out.len() > cap {
                                return Ok(None);
                            }
                        }
                    }
                }
                Ok(Some(out))
            }
        }
    }

    /// A cheap count of a source's candidates (at most `cap`), remembered in `known`.
    fn estimate(
        &self,
        store: &dyn Records,
        org: &str,
        source: &Source,
        cap: usize,
        known: &mut Counted,
    ) -> Result<usize> {
        match (source, *known) {
            (Source::Hashes(Some(h)), _) => Ok(h.len()),
            (Source::Hashes(None) | Source::None, _) => Ok(usize::MAX),
            (Source::Index { .. }, Counted::Exactly(n)) if n <= cap => Ok(n),
            (Source::Index { .. }, k) if k.over(cap) => Ok(usize::MAX),
            (Source::Index { field, spans, .. }, _) => {
                if let Some(n) = self.value_counter(store, org, source)? {
                    *known = Counted::Exactly(n);
                    return Ok(if n <= cap { n } else { usize::MAX });
                }
                let mut n = 0;
                for span in spans {
                    n += store.index_count(org, self.deleted, field, span, cap + 1 - n.min(cap))?;
                    if n > cap {
                        *known = Counted::Over(cap);
                        return Ok(usize::MAX);
                    }
                }
                *known = Counted::Exactly(n);
                Ok(n)
            }
        }
    }

    /// The number of images with the one value of a counted field that `source` matches,
    /// read from the value's counter; `None` for any other source.
    fn value_counter(
        &self,
        store: &dyn Records,
        org: &str,
        source: &Source,
    ) -> Result<Option<usize>> {
        match source {
            Source::Index {
                field,
                spans,
                single: true,
                ..
            } if field.counted() && spans.len() == 1 => {
                let n = store.value_count(org, self.deleted, field, &spans[0].from)?;
                Ok(Some(n as usize))
            }
            _ => Ok(None),
        }
    }

    /// Whether [`Self::collect`] is known to give up on `source` at `cap`: it walks at most
    /// `4 × cap` entries, and an exact source holds each image once.
    fn too_many(source: &Source, known: Counted, cap: usize) -> bool {
        match source {
            Source::Index { exact, .. } => known.over(if *exact { cap } else { cap * 4 }),
            _ => false,
        }
    }

    /// The page of a listing with one filter, sorted by an indexed field, when the filter's
    /// candidates `hashes` (all of its matches, each once) are many but the sort field's
    /// index is expected to meet enough of them soon: that index is walked and only its
    /// members' records are read, instead of every candidate's. `None` when the walk is not
    /// expected to pay, or when it has not met the page within twice the entries an even
    /// spread of the members would need (then the set is sorted in memory, as before).
    fn by_members(
        &self,
        store: &dyn Records,
        org: &str,
        source: &Source,
        hashes: &[String],
    ) -> Result<Option<Answer>> {
        let ([(Field::Indexed(sort_field), asc)], [_], Source::Index { exact: true, .. }) =
            (self.sort.as_slice(), self.filters.as_slice(), source)
        else {
            return Ok(None);
        };
        let n = hashes.len();
        if n <= self.bounds.small || !self.facets.is_empty() || self.any {
            return Ok(None);
        }
        let images = store.image_count(org, self.deleted)? as usize;
        let skip = if self.cursor.is_some() {
            0
        } else {
            self.offset
        };
        // The entries walked until the page and the one after it are met, were the members
        // spread evenly over the sort order.
        let expected = skip
            .saturating_add(self.limit)
            .saturating_add(1)
            .saturating_mul(images)
            / n
            + 1;
        if expected.saturating_mul(2) > self.bounds.member_walk
            || expected > n.saturating_mul(ENTRIES_PER_RECORD)
        {
            return Ok(None);
        }
        let members: std::collections::HashSet<&str> = hashes.iter().map(String::as_str).collect();
        let tail = matches!(sort_field, IndexField::User(_));
        self.walk_within(
            store,
            org,
            Walk {
                field: sort_field,
                span: &Span::default(),
                reverse: !*asc,
                tail,
                skip: Some(0),
                total: Some(n),
            },
            // Twice what an even spread needs: members gathered elsewhere in the order give
            // up early.
            Some((&members, expected.saturating_mul(2))),
        )
    }

    fn plan(&self, store: &dyn Records, org: &str) -> Result<Answer> {
        let mut sources = Vec::with_capacity(self.filters.len());
        for (f, m) in &self.filters {
            sources.push(self.source(store, org, f, m)?);
        }
        if self.any && self.filters.len() > 1 {
            let mut all = Vec::new();
            for s in &sources {
                match self.collect(store, org, s, self.bounds.collect)? {
                    Some(h) => all.extend(h),
                    None => {
                        if let Some(every) = self.everything(store, org)? {
                            return self.in_memory(store, org, every);
                        }
                        return Err(Error::Invalid(format!(
                            "with operator=or every filter must match at most {} images; narrow the filters", self.bounds.collect
                        )));
                    }
                }
            }
            all.sort();
            all.dedup();
            return self.in_memory(store, org, all);
        }
        // 1. A small candidate set, unless the page is one walk of an index that needs no
        //    record but the page's: the only filter is one counted value (its total is a
        //    counter) and the order is the creation order its positions carry (step 2).
        let created_order = matches!(
            self.sort.as_slice(),
            [(Field::Indexed(IndexField::Created), _)]
        );
        let direct = self.facets.is_empty()
            && created_order
            && matches!(
                sources.as_slice(),
                [Source::Index {
                    field,
                    exact: true,
                    single: true,
                    ..
                }] if field.counted()
            );
        let mut known = vec![Counted::Unknown; sources.len()];
        let mut best: Option<(usize, usize)> = None;
        for (i, s) in sources.iter().enumerate().filter(|_| !direct) {
            let n = self.estimate(store, org, s, self.bounds.small, &mut known[i])?;
            if n <= self.bounds.small && best.is_none_or(|(_, b)| n < b) {
                best = Some((i, n));
            }
        }
        // In creation order, one value's entries are already in order and the other filters
        // may be checked on index positions: step 2 walks them and reads only the page.
        let walked_in_order = |i: usize| {
            created_order
                && self.facets.is_empty()
                && matches!(
                    sources[i],
                    Source::Index {
                        exact: true,
                        single: true,
                        ..
                    }
                )
                && self.probes(Some(i)).is_some()
        };
        if let Some((i, _)) = best.filter(|(i, _)| !walked_in_order(*i)) {
            if let Some(h) = self.collect(store, org, &sources[i], self.bounds.small * 4)? {
                return self.in_memory(store, org, h);
            }
        }
        // 2. An index already in order.
        if let [(Field::Indexed(sort_field), asc)] = self.sort.as_slice() {
            let reverse = !*asc;
            let on_sort = sources.iter().enumerate().find(|(_, s)| {
                matches!(s, Source::Index { field, spans, .. } if field == sort_field && spans.len() == 1)
            });
            if let Some((i, Source::Index { spans, exact, .. })) = on_sort {
                let skip = if *exact { Some(i) } else { None };
                return self.walk(
                    store,
                    org,
                    Walk {
                        field: sort_field,
                        span: &spans[0],
                        reverse,
                        tail: false,
                        skip,
                        total: None,
                    },
                );
            }
            if *sort_field == IndexField::Created {
                // The value with the fewest entries, as far as step 1 counted them.
                let one_value = sources
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| {
                        matches!(
                            s,
                            Source::Index {
                                exact: true,
                                single: true,
                                ..
                            }
                        )
                    })
                    .min_by_key(|(i, _)| match known[*i] {
                        Counted::Exactly(n) => n,
                        Counted::Over(c) => c.saturating_add(1),
                        Counted::Unknown => usize::MAX,
                    });
                if let Some((i, source @ Source::Index { field, spans, .. })) = one_value {
                    let total = match self.filters.len() {
                        1 => self.value_counter(store, org, source)?,
                        _ => None,
                    };
                    return self.walk(
                        store,
                        org,
                        Walk {
                            field,
                            span: &spans[0],
                            reverse,
                            tail: false,
                            skip: Some(i),
                            total,
                        },
                    );
                }
            }
            if self.filters.is_empty() {
                let tail = matches!(sort_field, IndexField::User(_));
                let total = store.image_count(org, self.deleted)? as usize;
                return self.walk(
                    store,
                    org,
                    Walk {
                        field: sort_field,
                        span: &Span::default(),
                        reverse,
                        tail,
                        skip: None,
                        total: Some(total),
                    },
                );
            }
        }
        // 3. In creation order: one filter's index positions carry the creation time, so its
        //    candidates are ordered without reading them.
        if let [(Field::Indexed(IndexField::Created), asc)] = self.sort.as_slice() {
            // Counted first, even when there is one: counting entries costs less than reading
            // them (on a database server, much less), and a candidate past the bound is
            // common (a range matching most images).
            let mut best: Option<(usize, usize)> = None;
            for (i, s) in sources.iter().enumerate() {
                if matches!(s, Source::Index { .. }) {
                    let n = self.estimate(store, org, s, self.bounds.positions, &mut known[i])?;
                    if n <= self.bounds.positions && best.is_none_or(|(_, b)| n < b) {
                        best = Some((i, n));
                    }
                }
            }
            if let Some((i, _)) = best {
                // The walk keeps the bound even if images were added since the count.
                let cap = self.bounds.positions;
                match self.by_creation(store, org, &sources[i], i, !*asc, cap)? {
                    Some(answer) => return Ok(answer),
                    None => known[i] = Counted::Over(cap),
                }
            }
        }
        // 4. A candidate set that still fits in memory.
        for (s, k) in sources.iter().zip(&known) {
            if Self::too_many(s, *k, self.bounds.collect) {
                continue;
            }
            if let Some(h) = self.collect(store, org, s, self.bounds.collect)? {
                if let Some(answer) = self.by_members(store, org, s, &h)? {
                    return Ok(answer);
                }
                return self.in_memory(store, org, h);
            }
        }
        // 5. The sort field's whole index, every record checked.
        if let [(Field::Indexed(sort_field), asc)] = self.sort.as_slice() {
            let tail = matches!(sort_field, IndexField::User(_));
            // The only filter's matches are counted from its index, without reads.
            let (total, lower) = match self.known_total(store, org, &sources, &known)? {
                Some((n, lower)) => (Some(n), lower),
                None => (None, false),
            };
            let mut answer = self.walk(
                store,
                org,
                Walk {
                    field: sort_field,
                    span: &Span::default(),
                    reverse: !*asc,
                    tail,
                    skip: None,
                    total,
                },
            )?;
            answer.total_cut |= lower;
            answer.more |= lower && answer.page.len() == self.limit;
            return Ok(answer);
        }
        // 6. A library small enough to be read whole.
        if let Some(all) = self.everything(store, org)? {
            return self.in_memory(store, org, all);
        }
        Err(Error::Invalid(format!(
            "this listing needs a filter matching at most {} images: it sorts by several fields or by a field without an index", self.bounds.collect
        )))
    }

    /// Every image of the listing's kind (live or deleted) when there are at most `collect`.
    fn everything(&self, store: &dyn Records, org: &str) -> Result<Option<Vec<String>>> {
        if store.image_count(org, self.deleted)? as usize > self.bounds.collect {
            return Ok(None);
        }
        store
            .index_walk(
                org,
                self.deleted,
                &IndexField::Created,
                &Span::default(),
                false,
            )
            .map(|p| p.map(|p| p.hash))
            .collect::<crate::storage::Result<Vec<_>>>()
            .map(Some)
            .map_err(Into::into)
    }

    /// The number of matches of the only filter, from its counters or its index entries
    /// (keys only, at most `count`: then `true`, a lower bound); `None` when it takes reads.
    fn known_total(
        &self,
        store: &dyn Records,
        org: &str,
        sources: &[Source],
        known: &[Counted],
    ) -> Result<Option<(usize, bool)>> {
        let [source @ Source::Index {
            field,
            spans,
            exact: true,
            ..
        }] = sources
        else {
            return Ok(None);
        };
        if let Some(n) = self.value_counter(store, org, source)? {
            return Ok(Some((n, false)));
        }
        match known.first() {
            Some(Counted::Exactly(n)) if *n < self.bounds.count => return Ok(Some((*n, false))),
            Some(k) if k.over(self.bounds.count.saturating_sub(1)) => {
                return Ok(Some((self.bounds.count, true)))
            }
            _ => {}
        }
        let mut n = 0;
        for span in spans {
            n += store.index_count(org, self.deleted, field, span, self.bounds.count - n)?;
            if n >= self.bounds.count {
                return Ok(Some((n, true)));
            }
        }
        Ok(Some((n, false)))
    }

    /// The filters other than `skip`, when each can be checked on an index position without
    /// reading the record: exact values of indexed fields, whose entries hold only matches.
    /// For each, the field and the encoded values any of which an image must have.
    fn probes(&self, skip: Option<usize>) -> Option<Vec<(IndexField, Vec<Vec<u8>>)>> {
        if self.any || self.deleted {
            return None;
        }
        let mut out = Vec::new();
        for (i, (f, m)) in self.filters.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let (Field::Indexed(field), Matcher::Exact(_)) = (f, m) else {
                return None;
            };
            let (spans, exact) = m.spans(field);
            if !exact || spans.is_empty() || *field == IndexField::Created {
                return None;
            }
            out.push((field.clone(), spans.into_iter().map(|s| s.from).collect()));
        }
        Some(out)
    }

    /// Which of the images at `at` pass every probe: one batch of point lookups per probed
    /// value (one query on a shared backend), no record read.
    fn passing(
        &self,
        store: &dyn Records,
        org: &str,
        probes: &[(IndexField, Vec<Vec<u8>>)],
        at: &[Position],
    ) -> Result<Vec<bool>> {
        let mut pass = vec![true; at.len()];
        for (field, values) in probes {
            let mut found = vec![false; at.len()];
            for value in values {
                // Only the positions still in question are looked up.
                let open: Vec<usize> = (0..at.len()).filter(|&i| pass[i] && !found[i]).collect();
                if open.is_empty() {
                    break;
                }
                let suffixes: Vec<Vec<u8>> = open
                    .iter()
                    .map(|&i| {
                        Position {
                            value: value.clone(),
                            created: at[i].created,
                            hash: at[i].hash.clone(),
                        }
                        .suffix()
                    })
                    .collect();
                let has = store.index_has(org, self.deleted, field, &suffixes)?;
                for (&i, yes) in open.iter().zip(has) {
                    found[i] |= yes;
                }
            }
            for (p, f) in pass.iter_mut().zip(found) {
                *p &= f;
            }
        }
        Ok(pass)
    }

    /// Orders one filter's index positions by creation time, then reads records in that order
    /// for the page, checking the other filters.
    fn by_creation(
        &self,
        store: &dyn Records,
        org: &str,
        source: &Source,
        source_filter: usize,
        reverse: bool,
        cap: usize,
    ) -> Result<Option<Answer>> {
        let Source::Index {
            field,
            spans,
            exact,
            ..
        } = source
        else {
            return Err(Error::internal("creation order needs an index"));
        };
        // The other filters, checked on index positions when they can be.
        let probes = if *exact {
            self.probes(Some(source_filter))
        } else {
            None
        };
        // At most `cap` entries, or `None`.
        let mut positions: Vec<([u8; index::CREATED_LEN], String)> = Vec::new();
        for span in spans {
            for p in store.index_walk(org, self.deleted, field, span, false) {
                let p = p?;
                if positions.len() == cap {
                    return Ok(None);
                }
                positions.push((p.created, p.hash));
            }
        }
        positions.sort_unstable();
        // An image met in several values of one array field (a range, a prefix): its
        // positions carry the same creation time and hash, so they are neighbours now.
        if !*exact {
            positions.dedup();
        }
        if reverse {
            positions.reverse();
        }
        let start = match &self.cursor {
            Some(c) => {
                let at = (
                    c.get(c.len() - 2).cloned().flatten().unwrap_or_default(),
                    c.last().cloned().flatten().unwrap_or_default(),
                );
                positions
                    .iter()
                    .position(|(created, hash)| {
                        let here = (created.to_vec(), hash.as_bytes().to_vec());
                        if reverse {
                            here < at
                        } else {
                            here > at
                        }
                    })
                    .unwrap_or(positions.len())
            }
            None => 0,
        };
        // The only filter, and its positions are exactly its matches: no record is checked.
        let only = self.filters.len() == 1 && *exact;
        let offset = if self.cursor.is_some() {
            0
        } else {
            self.offset
        };
        let (mut page, mut skipped, mut counted, mut examined) = (Vec::new(), 0, 0, 0);
        let mut cut = false;
        if let (false, Some(probes)) = (only, &probes) {
            // The other filters are checked on index positions, a batch at a time; only the
            // page is read.
            let mut unread = Vec::new();
            let rest: Vec<Position> = positions
                .iter()
                .skip(start)
                .map(|(created, hash)| Position {
                    value: Vec::new(),
                    created: *created,
                    hash: hash.clone(),
                })
                .collect();
            let mut size = FIRST_BATCH;
            let mut at = 0;
            'walk: while at < rest.len() {
                let chunk = &rest[at..(at + size).min(rest.len())];
                at += chunk.len();
                size = (size * 2).min(MAX_BATCH);
                let pass = self.passing(store, org, probes, chunk)?;
                for (p, ok) in chunk.iter().zip(pass) {
                    examined += 1;
                    if examined > self.bounds.examine {
                        cut = true;
                        break 'walk;
                    }
                    if !ok {
                        continue;
                    }
                    if skipped < offset {
                        skipped += 1;
                    } else if unread.len() < self.limit {
                        unread.push(p.hash.clone());
                    } else {
                        counted += 1;
                        if counted >= self.bounds.count {
                            cut = true;
                            break 'walk;
                        }
                    }
                }
            }
            page = store
                .get_images(org, &unread)?
                .into_iter()
                .flatten()
                .collect();
        } else {
            let mut read = Batched::new(
                store,
                org,
                positions
                    .iter()
                    .skip(start)
                    .map(|(_, hash)| Ok(hash.clone())),
            );
            if only {
                // The page is exactly the positions after the offset: one read.
                read.pass(
                    offset.min(positions.len().saturating_sub(start)),
                    self.limit,
                );
                skipped = read.skipped;
            }
            for next in read {
                let (_, rec) = next?;
                if only && page.len() >= self.limit {
                    break;
                }
                examined += 1;
                if examined > self.bounds.examine {
                    cut = true;
                    break;
                }
                let Some(rec) = rec else {
                    continue;
                };
                if !(only || self.accepts(&rec)) {
                    continue;
                }
                if skipped < offset {
                    skipped += 1;
                } else if page.len() < self.limit {
                    page.push(rec);
                } else {
                    counted += 1;
                    if counted >= self.bounds.count {
                        cut = true;
                        break;
                    }
                }
            }
        }
        if cut && page.len() < self.limit {
            return Err(Error::Invalid(format!(
                "this listing would examine more than {} images for one page; add a filter that matches fewer images",
                self.bounds.examine
            )));
        }
        let total = if only {
            positions.len()
        } else {
            skipped + page.len() + counted
        };
        let facets = if self.facets.is_empty() {
            None
        } else {
            return Err(Error::Invalid(format!(
                "facets are counted over all images or over a filter matching at most {} images",
                self.bounds.collect
            )));
        };
        Ok(Some(Answer {
            more: if only {
                start + skipped + page.len() < total
            } else {
                counted > 0 || cut
            },
            start: if self.cursor.is_some() { 0 } else { skipped },
            page,
            total,
            total_cut: !only && cut,
            facets,
        }))
    }

    /// Reads the candidates, keeps the matches and sorts and pages them in memory.
    fn in_memory(&self, store: &dyn Records, org: &str, hashes: Vec<String>) -> Result<Answer> {
        let mut keyed = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(MAX_BATCH) {
            for rec in store.get_images(org, chunk)?.into_iter().flatten() {
                if self.accepts(&rec) {
                    keyed.push((self.key(&rec), rec));
                }
            }
        }
        keyed.sort_by(|a, b| self.compare(&a.0, &b.0));
        let total = keyed.len();
        let start = match &self.cursor {
            Some(c) => keyed
                .iter()
                .position(|(k, _)| self.compare(k, c) == Ordering::Greater)
                .unwrap_or(total),
            None => self.offset.min(total),
        };
        let facets = (!self.facets.is_empty()).then(|| {
            let mut out = serde_json::Map::new();
            for (name, field) in &self.facets {
                let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
                for (_, rec) in &keyed {
                    for v in field.values(rec) {
                        if let IndexValue::Str(s) = v {
                            *counts.entry(s).or_default() += 1;
                        }
                    }
                }
                let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
                counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                counts.truncate(FACET_VALUES);
                out.insert(name.clone(), facet_json(counts));
            }
            out
        });
        let page = keyed
            .into_iter()
            .skip(start)
            .take(self.limit)
            .map(|(_, r)| r)
            .collect::<Vec<_>>();
        Ok(Answer {
            start,
            more: start + page.len() < total,
            page,
            total,
            total_cut: false,
            facets,
        })
    }

    /// Walks one field's index in order: the page, then a count of the matches after it.
    fn walk(&self, store: &dyn Records, org: &str, walk: Walk) -> Result<Answer> {
        self.walk_within(store, org, walk, None)?
            .ok_or_else(|| Error::internal("an index walk without a member set gave up"))
    }

    /// [`Self::walk`], keeping only the images of `members` (when given, with a bound) of the
    /// entries walked, at most the bound of them: `None` when it is reached.
    fn walk_within(
        &self,
        store: &dyn Records,
        org: &str,
        walk: Walk,
        members: Option<(&std::collections::HashSet<&str>, usize)>,
    ) -> Result<Option<Answer>> {
        let Walk {
            field,
            span,
            reverse,
            tail,
            skip,
            total,
        } = walk;
        // Entries walked in search of members, and whether the bound stopped the walk.
        let stepped = std::cell::Cell::new(0usize);
        let stopped = std::cell::Cell::new(false);
        let (members, bound) = match members {
            Some((set, bound)) => (Some(set), bound),
            None => (None, usize::MAX),
        };
        let kept = |walk| members_only(walk, members, bound, &stepped, &stopped);
        let check = self.filters.len() > usize::from(skip.is_some()) || self.deleted;
        // The filters to check, on index positions when they can be.
        let probes = if check { self.probes(skip) } else { None };
        let mut span = span.clone();
        let mut in_tail = false;
        let mut tail_from: Option<Position> = None;
        if let Some(c) = &self.cursor {
            let created: [u8; index::CREATED_LEN] = c
                .get(c.len() - 2)
                .cloned()
                .flatten()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(bad_cursor)?;
            let hash = c
                .last()
                .cloned()
                .flatten()
                .and_then(|h| String::from_utf8(h).ok())
                .ok_or_else(bad_cursor)?;
            match c.first().cloned().flatten() {
                Some(v) => {
                    // Walking one value of another field: positions carry that value.
                    let value = match self.sort.first() {
                        Some((Field::Indexed(f), _)) if f != field => span.from.clone(),
                        _ if *field == IndexField::Created => Vec::new(),
                        _ => v,
                    };
                    span = span.past(
                        &Position {
                            value,
                            created,
                            hash,
                        },
                        reverse,
                    );
                }
                None => {
                    in_tail = true;
                    tail_from = Some(Position {
                        value: Vec::new(),
                        created,
                        hash,
                    });
                }
            }
        }
        // The page's records that the walk did not need are read after it, together.
        let mut page: Vec<Slot> = Vec::new();
        let mut skipped = 0;
        let mut counted = 0;
        let mut examined = 0;
        let mut cut = false;
        let offset = if self.cursor.is_some() {
            0
        } else {
            self.offset
        };
        let mut visit = |rec: Option<ImageRecord>, hash: &str| -> Result<bool> {
            // Returns false to stop.
            let matched = match rec {
                Some(r) => {
                    if self.accepts(&r) {
                        Some(Some(r))
                    } else {
                        None
                    }
                }
                None => Some(None),
            };
            let Some(rec) = matched else {
                return Ok(true);
            };
            if skipped < offset {
                skipped += 1;
                return Ok(true);
            }
            if page.len() < self.limit {
                page.push(match rec {
                    Some(r) => Slot::Read(Box::new(r)),
                    None => Slot::Unread(hash.to_string()),
                });
                return Ok(true);
            }
            counted += 1;
            Ok(total.is_none() && counted < self.bounds.count)
        };
        let mut done = false;
        if !in_tail {
            let mut walk = kept(store.index_walk(org, self.deleted, field, &span, reverse));
            if let (true, Some(probes)) = (check, &probes) {
                // The filters are checked on index positions, a batch at a time; the page is
                // read after the walk.
                let mut size = FIRST_BATCH;
                'walk: loop {
                    let chunk = walk
                        .by_ref()
                        .take(size)
                        .collect::<crate::storage::Result<Vec<Position>>>()?;
                    if chunk.is_empty() {
                        break;
                    }
                    size = (size * 2).min(MAX_BATCH);
                    let pass = self.passing(store, org, probes, &chunk)?;
                    for (p, ok) in chunk.iter().zip(pass) {
                        examined += 1;
                        if examined > self.bounds.examine {
                            cut = true;
                            done = true;
                            break 'walk;
                        }
                        if ok && !visit(None, &p.hash)? {
                            done = true;
                            cut = total.is_none();
                            break 'walk;
                        }
                    }
                }
            } else if check {
                let hashes = walk.map(|p| Ok(p?.hash));
                for next in Batched::new(store, org, hashes) {
                    let (hash, rec) = next?;
                    examined += 1;
                    if examined > self.bounds.examine {
                        cut = true;
                        done = true;
                        break;
                    }
                    let Some(rec) = rec else {
                        continue;
                    };
                    if !visit(Some(rec), &hash)? {
                        done = true;
                        cut = total.is_none();
                        break;
                    }
                }
            } else {
                for position in walk {
                    if !visit(None, &position?.hash)? {
                        done = true;
                        cut = total.is_none();
                        break;
                    }
                }
            }
        }
        if tail && !done {
            let mut all = Span::default();
            if let Some(p) = &tail_from {
                all = all.past(p, reverse);
            }
            let hashes =
                kept(store.index_walk(org, self.deleted, &IndexField::Created, &all, reverse))
                    .map(|p| Ok(p?.hash));
            for next in Batched::new(store, org, hashes) {
                let (hash, rec) = next?;
                examined += 1;
                if examined > self.bounds.examine {
                    cut = true;
                    break;
                }
                let Some(rec) = rec else {
                    continue;
                };
                if !field.values(&rec).is_empty() {
                    continue;
                }
                if !visit(Some(rec), &hash)? {
                    cut = total.is_none();
                    break;
                }
            }
        }
        if stopped.get() {
            return Ok(None);
        }
        let page = Slot::resolve(store, org, page)?;
        // Stopped by the bound before the page filled: the page would be wrong, whatever the
        // total.
        if cut && page.len() < self.limit && examined > self.bounds.examine {
            return Err(Error::Invalid(format!(
                "this listing would examine more than {} images for one page; add a filter that matches fewer images, or sort by the filtered field", self.bounds.examine
            )));
        }
        let start = skipped;
        let known = start + page.len() + counted;
        let facets = if self.facets.is_empty() {
            None
        } else if self.filters.is_empty() {
            let mut out = serde_json::Map::new();
            for (name, f) in &self.facets {
                let values = store.facet_values(org, self.deleted, f, FACET_VALUES, FACET_SCAN)?;
                out.insert(name.clone(), facet_json(values));
            }
            Some(out)
        } else {
            return Err(Error::Invalid(format!(
                "facets are counted over all images or over a filter matching at most {} images",
                self.bounds.collect
            )));
        };
        Ok(Some(Answer {
            more: counted > 0 || cut,
            start: if self.cursor.is_some() { 0 } else { start },
            page,
            total: total.unwrap_or(known),
            total_cut: total.is_none() && cut,
            facets,
        }))
    }

    fn answer(&self, store: &dyn Records, org: &str, a: Answer) -> Result<Value> {
        let hashes: Vec<String> = a.page.iter().map(|r| r.hash.clone()).collect();
        let shorts = store.short_hashes(org, &hashes)?;
        let items: Vec<Value> = a
            .page
            .iter()
            .zip(&shorts)
            .map(|(r, short)| r.to_json(short))
            .collect();
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
        if self.cursor.is_none() && a.start > 0 && self.limit > 0 {
            links.insert(
                "prev".into(),
                link(&a.start.saturating_sub(self.limit).to_string()),
            );
        }
        let cursor = a.page.last().map(|r| encode_cursor(&self.key(r)));
        if a.more && self.limit > 0 {
            let end = a.start + a.page.len();
            let next = match (&self.cursor, &cursor) {
                (Some(_), Some(c)) => c.clone(),
                (None, Some(c)) if end > DEEP_OFFSET => c.clone(),
                _ => end.to_string(),
            };
            links.insert("next".into(), link(&next));
        }
        let mut out = json!({ "total": a.total, "items": items, "links": links });
        if let Value::Object(m) = &mut out {
            if let Some(c) = cursor {
                m.insert("cursor".into(), Value::String(c));
            }
            if a.total_cut {
                m.insert("total_relation".into(), Value::String("gte".into()));
            }
            if let Some(f) = a.facets {
                m.insert("facets".into(), Value::Object(f));
            }
        }
        Ok(out)
    }
}

/// Values per facet field.
const FACET_VALUES: usize = 1000;
/// Distinct values read per facet field.
const FACET_SCAN: usize = 100_000;
/// Past this offset the `next` link carries a cursor (spec §4.4).
const DEEP_OFFSET: usize = 10_000;

fn facet_json(values: Vec<(String, u64)>) -> Value {
    Value::Array(
        values
            .into_iter()
            .map(|(value, count)| json!({ "value": value, "count": count }))
            .collect(),
    )
}

fn encode_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A cursor: version 1, then each component as `0` (absent) or `1`, a 2-byte length and
/// the bytes.
fn encode_cursor(key: &[Component]) -> String {
    let mut out = vec![1u8];
    for c in key {
        match c {
            None => out.push(0),
            Some(b) => {
                out.push(1);
                out.extend_from_slice(&(b.len().min(u16::MAX as usize) as u16).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

fn bad_cursor() -> Error {
    Error::Invalid(
        "offset must be a number or a cursor from a previous answer with the same sort".into(),
    )
}

fn decode_cursor(raw: &str, parts: usize) -> Result<Vec<Component>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| bad_cursor())?;
    let mut rest = bytes.strip_prefix(&[1u8]).ok_or_else(bad_cursor)?;
    let mut out = Vec::with_capacity(parts);
    while let Some((&tag, tail)) = rest.split_first() {
        match tag {
            0 => {
                out.push(None);
                rest = tail;
            }
            1 => {
                let len = tail
                    .get(..2)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                    .ok_or_else(bad_cursor)?;
                out.push(Some(tail.get(2..2 + len).ok_or_else(bad_cursor)?.to_vec()));
                rest = tail.get(2 + len..).unwrap_or_default();
            }
            _ => return Err(bad_cursor()),
        }
    }
    let tie_ok = matches!(out.get(parts.wrapping_sub(2)), Some(Some(c)) if c.len() == index::CREATED_LEN)
        && matches!(out.last(), Some(Some(_)));
    if out.len() != parts || !tie_ok {
        return Err(bad_cursor());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{ImageRecords, SledStore};

    fn rec(hash: &str, name: &str, size: u64, ns: i128, meta: Value) -> ImageRecord {
        ImageRecord {
            organization: "o".into(),
            name: name.into(),
            format: name.rsplit('.').next().unwrap_or("").into(),
            size,
            width: 10,
            height: 10,
            created_ns: ns,
            user_metadata: serde_json::from_value(meta).unwrap(),
            ..crate::storage::fixtures::image(hash, "x")
        }
    }

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn hashes(v: &Value) -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["hash"].as_str().unwrap().to_string())
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

    fn sample() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        for r in [
            rec(
                &"a".repeat(40),
                "a.jpg",
                30,
                1,
                json!({"int:n": 30, "tag": "a.jpg"}),
            ),
            rec(
                &"b".repeat(40),
                "b.png",
                10,
                2,
                json!({"int:n": 10, "tag": "b.png"}),
            ),
            rec(
                &"c".repeat(40),
                "c.jpg",
                20,
                3,
                json!({"int:n": 20, "tag": "c.jpg"}),
            ),
        ] {
            store.insert_image(&r).unwrap();
        }
        (dir, store)
    }

    fn run(store: &dyn Records, q: &[(&str, &str)]) -> Value {
        ListQuery::parse(&pairs(q))
            .unwrap()
            .run(store, "o")
            .unwrap()
    }

    #[test]
    fn the_default_order_is_newest_first() {
        let (_d, store) = sample();
        let v = run(&store, &[]);
        assert_eq!(names(&v), ["c.jpg", "b.png", "a.jpg"]);
        assert_eq!(v["total"], 3);
    }

    #[test]
    fn sorting_by_size_and_user_fields_works_both_ways() {
        let (_d, store) = sample();
        assert_eq!(
            names(&run(&store, &[("sort", "size asc")])),
            ["b.png", "c.jpg", "a.jpg"]
        );
        assert_eq!(
            names(&run(&store, &[("sort", "user:int:n desc")])),
            ["a.jpg", "c.jpg", "b.png"]
        );
        // Several fields: a small library is sorted in memory.
        assert_eq!(
            names(&run(&store, &[("sort", "format asc,name desc")])),
            ["c.jpg", "a.jpg", "b.png"]
        );
    }

    #[test]
    fn filters_match_exact_prefix_and_ranges() {
        let (_d, store) = sample();
        let r = |q: &[(&str, &str)]| names(&run(&store, q));
        assert_eq!(r(&[("name", "b.png")]), ["b.png"]);
        assert_eq!(r(&[("name", "a*"), ("sort", "name")]), ["a.jpg"]);
        assert_eq!(r(&[("size", "[15,30}"), ("sort", "size")]), ["c.jpg"]);
        assert_eq!(
            r(&[("user:int:n", "[20,}"), ("sort", "size")]),
            ["c.jpg", "a.jpg"]
        );
        assert_eq!(r(&[("user:tag", "a.jpg")]), ["a.jpg"]);
        assert_eq!(
            r(&[("format", "jpg"), ("sort", "name")]),
            ["a.jpg", "c.jpg"]
        );
    }

    #[test]
    fn offset_paging_gives_links() {
        let (_d, store) = sample();
        let v = run(&store, &[("limit", "1"), ("offset", "1")]);
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
    fn a_range_over_an_array_in_creation_order_lists_each_image_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        for i in 0..5u8 {
            let hash = format!("{i:040x}");
            let meta = json!({"array:labels": ["l0", "l1", "l2"]});
            store
                .insert_image(&rec(&hash, "a.jpg", 1, i128::from(i), meta))
                .unwrap();
        }
        // Every step before the creation-order one is ruled out by its bound.
        let bounds = Bounds {
            small: 0,
            collect: 0,
            examine: 10_000,
            count: 10_000,
            positions: 100,
            member_walk: 1_000,
        };
        for q in [
            ("user:array:labels", "[l0,l2]"),
            ("user:array:labels", "l*"),
        ] {
            let mut parsed = ListQuery::parse(&pairs(&[q])).unwrap();
            parsed.bounds = bounds;
            let v = parsed.run(&store, "o").unwrap();
            let want: Vec<String> = (0..5u8).rev().map(|i| format!("{i:040x}")).collect();
            assert_eq!(hashes(&v), want, "{q:?}");
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(ListQuery::parse(&pairs(&[("limit", "5000")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("sort", "bogus desc")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("sort", "user:array:labels")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("offset", "not-a-cursor!")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("facets", "size")])).is_err());
        assert!(ListQuery::parse(&pairs(&[("limit", ""), ("offset", "")])).is_ok());
    }

    /// Random images, metadata changes, deletes and queries: every answer from the indexes
    /// equals the brute-force one (every record filtered and sorted), and pages concatenate to
    /// the whole answer.
    #[test]
    fn indexed_answers_equal_the_brute_force_model() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        let mut rng = fastrand::Rng::with_seed(
            std::env::var("DARKROOM_LISTING_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(7),
        );
        let pick = |rng: &mut fastrand::Rng, xs: &[&str]| xs[rng.usize(..xs.len())].to_string();
        let mut model: Vec<ImageRecord> = Vec::new();
        let random_meta = |rng: &mut fastrand::Rng| {
            let mut m = serde_json::Map::new();
            if rng.u8(..4) > 0 {
                m.insert(
                    "tag".into(),
                    json!(["t0", "t1", "t2", "t\u{0}x", ""][rng.usize(..5)]),
                );
            }
            if rng.bool() {
                m.insert("int:n".into(), json!(rng.i64(-3..8)));
            }
            if rng.bool() {
                let labels: Vec<&str> = ["l0", "l1", "l2", "l3"]
                    .into_iter()
                    .filter(|_| rng.bool())
                    .collect();
                m.insert("array:labels".into(), json!(labels));
            }
            if rng.u8(..4) == 0 {
                m.insert("double:d".into(), json!(rng.i32(-20..20) as f64 / 4.0));
            }
            Value::Object(m)
        };
        // Settled entries are packed into runs now and then, so the answers come from both
        // tiers of the embedded index, with entries of runs removed and revived.
        for n in 0..400 {
            if n % 97 == 96 {
                store.pack_index(true).unwrap();
            }
            let hash = format!("{:040x}", rng.u128(..) >> 1);
            let name = format!(
                "{}{}.{}",
                pick(&mut rng, &["a", "ab", "b", "ba"]),
                rng.u8(..3),
                pick(&mut rng, &["jpg", "png", "gif"])
            );
            let mut r = rec(
                &hash,
                &name,
                rng.u64(0..6) * 10,
                i128::from(rng.u8(..60)) * 1_000_000_000 + i128::from(rng.u8(..3)),
                random_meta(&mut rng),
            );
            r.width = rng.u32(1..5);
            r.height = rng.u32(1..5);
            r.deleted = rng.u8(..6) == 0;
            store.insert_image(&r).unwrap();
            model.push(r);
        }
        // Changes after insertion: metadata, deletes, restores and removals.
        for n in 0..150 {
            if n % 37 == 36 {
                store.pack_index(true).unwrap();
            }
            let i = rng.usize(..model.len());
            match rng.u8(..4) {
                0 => {
                    store.remove_image("o", &model[i].hash).unwrap();
                    model.remove(i);
                }
                1 => {
                    model[i].deleted = !model[i].deleted;
                    store.update_image(&model[i]).unwrap();
                }
                _ => {
                    model[i].user_metadata = random_meta(&mut rng).as_object().unwrap().clone();
                    store.update_image(&model[i]).unwrap();
                }
            }
        }
        let problems: Vec<String> = store
            .verify(std::time::Duration::ZERO)
            .unwrap()
            .into_iter()
            .filter(|p| p.contains("listing"))
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
        let sorts = [
            "created",
            "size",
            "name",
            "width",
            "height",
            "format",
            "mimetype",
            "user:tag",
            "user:int:n",
            "user:double:d",
            "hash",
        ];
        let filters: &[(&str, &[&str])] = &[
            (
                "name",
                &["a1.jpg", "a*", "b*", "[a,b]", "{ab,}", "[,b1.png]"],
            ),
            ("size", &["20", "[10,30]", "{10,30}", "[30,}", "{,20]", "x"]),
            ("width", &["2", "[2,3]"]),
            ("height", &["{1,4}"]),
            ("format", &["jpg", "png", "p*"]),
            (
                "created",
                &[
                    "['1970-01-01T00:00:10Z','1970-01-01T00:00:30Z']",
                    "1970-01-01T00:00:05+00:00",
                ],
            ),
            ("user:str:tag", &["t1", "t*", "[t0,t1]", "", "t\u{0}x"]),
            ("user:tag", &["t2"]),
            ("user:int:n", &["3", "[0,4]", "{-2,}", "[,0]", "-1"]),
            ("user:array:labels", &["l1", "l*", "[l0,l1]"]),
            ("user:double:d", &["[-1.5,2]", "0.25"]),
            ("hash", &["0*", "1*"]),
            ("short_hash", &["2", "a"]),
        ];
        let mut refused = 0;
        for round in 0..600 {
            let mut q: Vec<(String, String)> = Vec::new();
            let nsort = if rng.u8(..5) == 0 { 2 } else { 1 };
            let sort: Vec<String> = (0..nsort)
                .map(|_| {
                    format!(
                        "{} {}",
                        pick(&mut rng, &sorts),
                        if rng.bool() { "asc" } else { "desc" }
                    )
                })
                .collect();
            if round % 7 != 0 {
                q.push(("sort".into(), sort.join(",")));
            }
            for _ in 0..rng.usize(..3) {
                let (f, vals) = filters[rng.usize(..filters.len())];
                q.push((f.into(), pick(&mut rng, vals)));
            }
            if rng.u8(..6) == 0 {
                q.push(("operator".into(), "or".into()));
            }
            if rng.u8(..5) == 0 {
                q.push(("deleted".into(), "true".into()));
            }
            let limit = [1usize, 3, 7, 50][rng.usize(..4)];
            let mut parsed = ListQuery::parse(&q).unwrap();
            parsed.bounds = Bounds {
                small: rng.usize(0..20),
                collect: rng.usize(20..60),
                examine: 10_000,
                count: rng.usize(1..60),
                positions: rng.usize(0..300),
                member_walk: rng.usize(0..400),
            };
            let want: Vec<String> = {
                let mut m: Vec<&ImageRecord> = model.iter().filter(|r| parsed.accepts(r)).collect();
                m.sort_by(|a, b| parsed.compare(&parsed.key(a), &parsed.key(b)));
                m.iter().map(|r| r.hash.clone()).collect()
            };
            // A walk by cursor.
            let mut got = Vec::new();
            let mut cursor: Option<String> = None;
            let mut failed = None;
            for _ in 0..1000 {
                let mut page_q = q.clone();
                page_q.push(("limit".into(), limit.to_string()));
                if let Some(c) = &cursor {
                    page_q.push(("offset".into(), c.clone()));
                }
                let mut pq = ListQuery::parse(&page_q).unwrap();
                pq.bounds = parsed.bounds;
                match pq.run(&store, "o") {
                    Ok(v) => {
                        let page = hashes(&v);
                        if cursor.is_none() {
                            let total = v["total"].as_u64().unwrap() as usize;
                            match v.get("total_relation") {
                                None => assert_eq!(total, want.len(), "total of {q:?}"),
                                Some(_) => assert!(total <= want.len(), "total of {q:?}"),
                            }
                        }
                        got.extend(page.iter().cloned());
                        if page.len() < limit {
                            break;
                        }
                        cursor = Some(v["cursor"].as_str().unwrap().to_string());
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                // Only what no index orders may be refused.
                let unordered =
                    parsed.sort.len() > 1 || !matches!(parsed.sort[0].0, Field::Indexed(_));
                assert!(unordered || parsed.any, "{q:?} refused: {e}");
                refused += 1;
                continue;
            }
            assert_eq!(got, want, "cursor walk of {q:?} (limit {limit})");
            // One offset page.
            let offset = rng.usize(..want.len() + 2);
            let mut page_q = q.clone();
            page_q.push(("limit".into(), limit.to_string()));
            page_q.push(("offset".into(), offset.to_string()));
            let mut pq = ListQuery::parse(&page_q).unwrap();
            pq.bounds = parsed.bounds;
            let v = pq.run(&store, "o").unwrap();
            let end = (offset + limit).min(want.len());
            assert_eq!(
                hashes(&v),
                want.get(offset.min(end)..end).unwrap_or_default(),
                "offset {offset} of {q:?}"
            );
        }
        assert!(refused < 200, "{refused} of 600 queries refused");
    }

    #[test]
    fn facets_count_values_of_all_or_of_the_filtered_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        for (i, labels) in [json!(["sea", "sky"]), json!(["sea"]), json!(["hill"])]
            .iter()
            .enumerate()
        {
            store
                .insert_image(&rec(
                    &format!("{i:040}"),
                    "x.jpg",
                    1,
                    i as i128,
                    json!({"array:labels": labels, "tag": "t"}),
                ))
                .unwrap();
        }
        let v = run(&store, &[("facets", "user:array:labels"), ("limit", "0")]);
        assert_eq!(
            v["facets"]["user:array:labels"],
            json!([{"value":"sea","count":2},{"value":"hill","count":1},{"value":"sky","count":1}])
        );
        assert_eq!(v["total"], 3);
        assert_eq!(v["items"], json!([]));
        let v = run(
            &store,
            &[
                ("facets", "user:array:labels"),
                ("user:array:labels", "sky"),
            ],
        );
        assert_eq!(
            v["facets"]["user:array:labels"],
            json!([{"value":"sea","count":1},{"value":"sky","count":1}])
        );
    }
}

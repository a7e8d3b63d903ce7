//! The PostgreSQL image records and listing index against the embedded store: the same records,
//! changed the same way, must give the same answers to every read the listing planner and the
//! image service make (walks in both directions over whole fields, spans and cursor pages,
//! bounded counts, counters, facets, short hashes, usage and expiry).

use super::testing;
use crate::model::image::ImageRecord;
use crate::storage::fixtures::org;
use crate::storage::index::{
    encode_created, encode_value, string_prefix, IndexField, IndexValue, Position,
};
use crate::storage::query::Span;
use crate::storage::{Accounts, ImageIndex, ImageRecords, SledStore};
use serde_json::json;

/// A small deterministic generator (splitmix64), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const TAGS: &[&str] = &["red", "green", "blue", "", "Red", "red\u{0}x", "grün"];

/// `n` records of two organizations: mixed formats, sizes, names (with NUL and non-ASCII),
/// creation-time ties, shared blobs, hashes with long shared prefixes, user metadata of every
/// kind, some soft-deleted.
pub(super) fn records(n: usize, seed: u64) -> Vec<ImageRecord> {
    let mut rng = Rng(seed);
    let names = [
        "a.jpg",
        "B.png",
        "é.webp",
        "a\u{0}b.gif",
        "",
        "zz top.jpg",
        "a.jpg2",
        "ab",
    ];
    let formats = [
        ("jpg", "image/jpeg"),
        ("png", "image/png"),
        ("webp", "image/webp"),
        ("gif", "image/gif"),
    ];
    (0..n)
        .map(|i| {
            let mut meta = serde_json::Map::new();
            if rng.below(3) != 0 {
                meta.insert("tag".into(), json!(rng.pick(TAGS)));
            }
            if rng.below(2) == 0 {
                meta.insert("int:n".into(), json!(rng.below(50) as i64 - 25));
            }
            if rng.below(3) == 0 {
                let labels: Vec<&str> = (0..rng.below(4)).map(|_| rng.pick(TAGS)).collect();
                meta.insert("array:labels".into(), json!(labels));
            }
            let blob = rng.below(60);
            let (format, mimetype) = rng.pick(&formats);
            let deleted = rng.below(5) == 0;
            let hash = if i % 10 == 0 {
                format!("abcdef01{:016x}{:016x}", rng.next(), rng.next())
            } else {
                format!("{:016x}{:016x}{:08x}", rng.next(), rng.next(), rng.below(1 << 32))
            };
            serde_json::from_value(json!({
                "organization": if i % 7 == 3 { "beta" } else { "acme" },
                "hash": hash,
                "binary_hash": format!("{blob:040x}"),
                "blob": format!("{blob:064x}"),
                "name": rng.pick(&names),
                "format": format, "mimetype": mimetype,
                "size": 1000 + blob * 37,
                "width": 1 + rng.below(4000), "height": 1 + rng.below(4000),
                "created": "2026-01-01T00:00:00+00:00",
                "created_ns": 1_700_000_000_000_000_000_i128 + i128::from(rng.below(100)) * 1_000_000_000,
                "deleted": deleted,
                "deleted_at": deleted.then(|| 1_700_000_000 + rng.below(1000) as i64),
                "user_metadata": meta,
                "opaque": true, "animated": false
            }))
            .unwrap()
        })
        .collect()
}

/// Writes the records, then changes some (deleted flag, metadata) and removes others.
fn fill<S: Accounts + ImageRecords>(store: &S, recs: &[ImageRecord]) {
    store.create_org(&org("acme")).unwrap();
    store.create_org(&org("beta")).unwrap();
    for rec in recs {
        store.insert_image(rec).unwrap();
    }
    for (i, rec) in recs.iter().enumerate() {
        if i % 11 == 0 {
            let mut changed = rec.clone();
            changed.deleted = !rec.deleted;
            changed.deleted_at = changed.deleted.then_some(1_700_000_500);
            changed
                .user_metadata
                .insert("tag".into(), json!(TAGS[i % TAGS.len()]));
            assert!(store.update_image(&changed).unwrap());
        } else if i % 13 == 5 {
            store.remove_image(&rec.organization, &rec.hash).unwrap();
        }
    }
}

fn fields() -> Vec<IndexField> {
    vec![
        IndexField::Created,
        IndexField::Size,
        IndexField::Name,
        IndexField::Width,
        IndexField::Height,
        IndexField::Format,
        IndexField::Mimetype,
        IndexField::DeletedAt,
        IndexField::User("tag".into()),
        IndexField::User("int:n".into()),
        IndexField::User("array:labels".into()),
        IndexField::User("absent".into()),
    ]
}

fn num(v: f64) -> Vec<u8> {
    encode_value(&IndexValue::Num(v))
}

fn str_value(s: &str) -> Vec<u8> {
    encode_value(&IndexValue::Str(s.into()))
}

/// Spans the planner builds for a field: everything, exact values, prefixes and ranges.
fn spans(field: &IndexField) -> Vec<Span> {
    let mut out = vec![Span::default()];
    match field {
        IndexField::Created => out.push(Span {
            from: encode_created(1_700_000_010_000_000_000).to_vec(),
            to: Some(encode_created(1_700_000_050_000_000_000).to_vec()),
        }),
        IndexField::Size | IndexField::Width | IndexField::Height => {
            out.push(Span {
                from: num(1500.0),
                to: Some(num(2500.0)),
            });
            out.push(Span::prefixed(num(1000.0 + 37.0 * 5.0)));
        }
        IndexField::User(k) if k == "int:n" => out.push(Span {
            from: num(-5.0),
            to: Some(num(10.0)),
        }),
        _ => {
            for p in ["a", "", "é", "r", "image/"] {
                out.push(Span::prefixed(string_prefix(p)));
            }
            for v in ["red", "jpg", "image/png", "ab"] {
                out.push(Span::prefixed(str_value(v)));
            }
            // Reversed bounds are an empty span on both.
            out.push(Span {
                from: str_value("z"),
                to: Some(str_value("a")),
            });
        }
    }
    out
}

/// Reads the same positions page by page, as a cursor does: each page starts past the last
/// position of the one before.
fn paged<S: ImageIndex>(
    store: &S,
    org: &str,
    deleted: bool,
    field: &IndexField,
    span: &Span,
    reverse: bool,
    page: usize,
) -> Vec<Vec<crate::storage::index::Position>> {
    let mut pages = Vec::new();
    let mut span = span.clone();
    loop {
        let got: Vec<_> = store
            .index_walk(org, deleted, field, &span, reverse)
            .take(page)
            .collect::<Result<_, _>>()
            .unwrap();
        let Some(last) = got.last() else {
            return pages;
        };
        span = span.past(last, reverse);
        pages.push(got);
    }
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn the_listing_index_answers_as_the_embedded_store_does() {
    let Some(pg) = testing::store("listing_same") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path(), 16).unwrap();
    let recs = records(600, 7);
    fill(&sled, &recs);
    fill(&pg, &recs);

    let mut compared = 0;
    for org in ["acme", "beta", "nobody"] {
        for deleted in [false, true] {
            assert_eq!(
                pg.image_count(org, deleted).unwrap(),
                sled.image_count(org, deleted).unwrap(),
                "{org} {deleted}"
            );
            for field in fields() {
                for span in spans(&field) {
                    let what = format!("{org} deleted={deleted} {field:?} {span:?}");
                    for reverse in [false, true] {
                        let a: Vec<_> = pg
                            .index_walk(org, deleted, &field, &span, reverse)
                            .collect::<Result<_, _>>()
                            .unwrap();
                        let b: Vec<_> = sled
                            .index_walk(org, deleted, &field, &span, reverse)
                            .collect::<Result<_, _>>()
                            .unwrap();
                        assert_eq!(a, b, "walk {what} reverse={reverse}");
                        compared += a.len();
                        let pages = paged(&pg, org, deleted, &field, &span, reverse, 37);
                        assert_eq!(
                            pages,
                            paged(&sled, org, deleted, &field, &span, reverse, 37),
                            "pages {what} reverse={reverse}"
                        );
                        assert_eq!(pages.concat(), a, "pages concatenate to the walk {what}");
                    }
                    for cap in [1, 10, 100_000] {
                        assert_eq!(
                            pg.index_count(org, deleted, &field, &span, cap).unwrap(),
                            sled.index_count(org, deleted, &field, &span, cap).unwrap(),
                            "count {what} cap={cap}"
                        );
                    }
                }
                if field.counted() {
                    for (max, scan) in [(5, 1000), (100, 2), (100, 1000)] {
                        let facets = pg.facet_values(org, deleted, &field, max, scan).unwrap();
                        assert_eq!(
                            facets,
                            sled.facet_values(org, deleted, &field, max, scan).unwrap(),
                            "facets {org} {deleted} {field:?} {max} {scan}"
                        );
                        for (value, n) in facets {
                            let v = str_value(&value);
                            assert_eq!(pg.value_count(org, deleted, &field, &v).unwrap(), n);
                        }
                    }
                }
            }
        }
    }
    assert!(compared > 10_000, "only {compared} positions compared");
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn image_records_read_back_as_the_embedded_store_has_them() {
    let Some(pg) = testing::store("records_same") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path(), 16).unwrap();
    let recs = records(600, 11);
    fill(&sled, &recs);
    fill(&pg, &recs);

    let key = |r: &ImageRecord| (r.organization.clone(), r.hash.clone());
    let mut a: Vec<ImageRecord> = pg.all_images().collect::<Result<_, _>>().unwrap();
    let mut b: Vec<ImageRecord> = sled.all_images().collect::<Result<_, _>>().unwrap();
    a.sort_by_key(key);
    b.sort_by_key(key);
    assert_eq!(a.len(), b.len());
    assert_eq!(a, b);
    assert!(a.len() > 500, "more than one batch of all_images");

    for rec in &recs {
        let (org, hash) = (&rec.organization, &rec.hash);
        assert_eq!(
            pg.get_image(org, hash).unwrap(),
            sled.get_image(org, hash).unwrap()
        );
        assert_eq!(
            pg.short_hash(org, hash).unwrap(),
            sled.short_hash(org, hash).unwrap(),
            "{hash}"
        );
        assert_eq!(
            pg.images_by_binary(org, &rec.binary_hash).unwrap(),
            sled.images_by_binary(org, &rec.binary_hash).unwrap()
        );
        assert_eq!(
            pg.blob_refs(&rec.blob).unwrap(),
            sled.blob_refs(&rec.blob).unwrap()
        );
    }
    // A page read at once: in the order asked, with hashes that are not stored (in the
    // middle, twice, of another organization) answered as one by one.
    let mut asked: Vec<String> = recs
        .iter()
        .filter(|r| r.organization == "acme")
        .rev()
        .take(40)
        .map(|r| r.hash.clone())
        .collect();
    asked.insert(3, "abcdef0123".to_string());
    asked.insert(7, asked[0].clone());
    asked.push("0".repeat(40));
    let one_by_one: Vec<Option<ImageRecord>> = asked
        .iter()
        .map(|h| sled.get_image("acme", h).unwrap())
        .collect();
    assert_eq!(pg.get_images("acme", &asked).unwrap(), one_by_one);
    assert_eq!(sled.get_images("acme", &asked).unwrap(), one_by_one);
    assert!(one_by_one[0].is_some() && one_by_one[3].is_none());
    assert_eq!(
        pg.short_hashes("acme", &asked).unwrap(),
        sled.short_hashes("acme", &asked).unwrap()
    );
    assert!(pg.get_images("acme", &[]).unwrap().is_empty());
    assert!(pg.short_hashes("acme", &[]).unwrap().is_empty());
    // Point lookups of index positions, a batch at once: the stored entries of some images
    // (each also under another value and another image's time, which are not stored).
    for field in [
        IndexField::User("tag".into()),
        IndexField::Size,
        IndexField::Name,
    ] {
        let mut suffixes = Vec::new();
        for rec in recs.iter().filter(|r| r.organization == "acme").take(30) {
            for value in field.values(rec) {
                let at = Position::of(&field, Some(&value), rec);
                let mut elsewhere = at.clone();
                elsewhere.created = encode_created(rec.created_ns + 1);
                let mut other = at.clone();
                other.value = encode_value(&IndexValue::Str("no such value".into()));
                suffixes.extend([at.suffix(), elsewhere.suffix(), other.suffix()]);
            }
        }
        let deleted = false;
        let want = sled.index_has("acme", deleted, &field, &suffixes).unwrap();
        assert!(
            want.iter().any(|x| *x) && want.iter().any(|x| !*x),
            "{field:?}"
        );
        assert_eq!(
            pg.index_has("acme", deleted, &field, &suffixes).unwrap(),
            want,
            "{field:?}"
        );
        assert!(pg
            .index_has("acme", deleted, &field, &[])
            .unwrap()
            .is_empty());
    }
    for (prefix, max) in [
        ("abcdef01", 1000),
        ("abcdef01", 3),
        ("", 5),
        ("zz", 5),
        ("é", 5),
    ] {
        assert_eq!(
            pg.hashes_with_prefix("acme", prefix, max).unwrap(),
            sled.hashes_with_prefix("acme", prefix, max).unwrap(),
            "{prefix}"
        );
    }
    for org in ["acme", "beta"] {
        assert_eq!(pg.org_usage(org).unwrap(), sled.org_usage(org).unwrap());
        assert_eq!(pg.day_stats(org).unwrap(), sled.day_stats(org).unwrap());
    }
    for cutoff in [0, 1_700_000_300, 1_700_000_501, i64::MAX / 2] {
        let mut a = pg.expired_images(cutoff, 10_000).unwrap();
        let mut b = sled.expired_images(cutoff, 10_000).unwrap();
        a.sort();
        b.sort();
        assert_eq!(a, b, "expired before {cutoff}");
        assert_eq!(pg.expired_images(cutoff, 3).unwrap().len(), a.len().min(3));
    }
}

/// Not a benchmark harness: one run of writes and sorted listings at a size where the index
/// matters, reported on the test's output (`--nocapture`).
#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn five_thousand_images_insert_and_list_in_size_order() {
    let Some(pg) = testing::store("five_thousand") else {
        return;
    };
    let recs: Vec<ImageRecord> = records(5000, 3)
        .into_iter()
        .map(|mut r| {
            r.organization = "acme".into();
            r.deleted = false;
            r.deleted_at = None;
            r
        })
        .collect();
    let started = std::time::Instant::now();
    for rec in &recs {
        pg.insert_image(rec).unwrap();
    }
    let took = started.elapsed();
    eprintln!(
        "insert_image: {} records in {:.2?} ({:.0}/s)",
        recs.len(),
        took,
        recs.len() as f64 / took.as_secs_f64()
    );
    let live = pg.image_count("acme", false).unwrap();
    assert_eq!(live as usize, recs.len());
    for reverse in [false, true] {
        let started = std::time::Instant::now();
        let page: Vec<_> = pg
            .index_walk("acme", false, &IndexField::Size, &Span::default(), reverse)
            .take(100)
            .collect::<Result<_, _>>()
            .unwrap();
        let first_page = started.elapsed();
        let started = std::time::Instant::now();
        let all: Vec<_> = pg
            .index_walk("acme", false, &IndexField::Size, &Span::default(), reverse)
            .collect::<Result<_, _>>()
            .unwrap();
        let whole = started.elapsed();
        eprintln!(
            "size order (reverse={reverse}): first 100 in {first_page:.2?}, all {} in {whole:.2?}",
            all.len()
        );
        assert_eq!(page.len(), 100);
        assert_eq!(all.len(), recs.len());
        let mut sorted = all.clone();
        sorted.sort();
        if reverse {
            sorted.reverse();
        }
        assert_eq!(all, sorted);
    }
}

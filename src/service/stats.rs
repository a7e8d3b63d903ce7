//! Stats and billing (spec §7, design §5): rokka's daily series — `space_in_bytes` (distinct
//! blobs of live images, counted once per organization), `number_of_files`,
//! `bytes_downloaded` — plus the render cache (`render_cache_bytes`, `renders`), which is
//! reported and never billed. Storage figures are written with the data they count; traffic is
//! counted in memory on the hot path and written in batches.

use super::accounts::{authorize, require_org, Principal};
use super::Services;
use crate::error::{Error, Result};
use crate::model::account::Right;
use crate::model::ids::OrgName;
use crate::model::time;
use crate::storage::{DayStats, Records};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes served per organization since the last flush.
#[derive(Default)]
pub struct Traffic {
    pending: Mutex<HashMap<String, u64>>,
}

impl Traffic {
    /// Counts bytes served for an organization (renders and original downloads).
    pub fn add(&self, org: &str, bytes: u64) {
        if let Ok(mut p) = self.pending.lock() {
            // A hit's organization is almost always counted already: no key to allocate.
            match p.get_mut(org) {
                Some(sum) => *sum += bytes,
                None => {
                    p.insert(org.to_string(), bytes);
                }
            }
        }
    }

    /// Writes the pending counts into today's figures.
    pub fn flush(&self, store: &dyn Records) -> Result<()> {
        let pending: Vec<(String, u64)> = match self.pending.lock() {
            Ok(mut p) => p.drain().collect(),
            Err(_) => return Err(Error::internal("traffic counters poisoned")),
        };
        let today = time::day_of(time::now_unix());
        for (org, bytes) in pending {
            store.add_downloaded(&org, &today, bytes)?;
        }
        Ok(())
    }
}

fn parse_day(raw: Option<String>, what: &str) -> Result<Option<i64>> {
    let Some(raw) = raw else { return Ok(None) };
    let stamp = format!("{raw}T00:00:00Z");
    time::parse_rfc3339(&stamp)
        .map(Some)
        .ok_or_else(|| Error::Invalid(format!("{what} must be a date like 2024-01-31")))
}

/// The days asked for, as Unix seconds at midnight: `to` defaults to today (and is capped at
/// it with `up_to_today`), `from` to `default_days` before `to`; at most ten years.
fn day_range(
    from: Option<String>,
    to: Option<String>,
    up_to_today: bool,
    default_days: i64,
) -> Result<(i64, i64)> {
    let today = time::now_unix() / 86_400 * 86_400;
    let mut to = parse_day(to, "to")?.unwrap_or(today);
    if up_to_today {
        to = to.min(today);
    }
    let from = parse_day(from, "from")?.unwrap_or(to - default_days * 86_400);
    if from > to {
        return Err(Error::Invalid("from must not be after to".into()));
    }
    if (to - from) / 86_400 > 3660 {
        return Err(Error::Invalid(
            "at most ten years can be asked at once".into(),
        ));
    }
    Ok((from, to))
}

/// The last snapshot of an organization's figures on or before `day` (`YYYY-MM-DD`).
fn snapshot(days: &[(String, DayStats)], day: &str) -> DayStats {
    days.iter()
        .rev()
        .find(|(d, _)| d.as_str() <= day)
        .map(|(_, s)| *s)
        .unwrap_or_default()
}

/// `GET /stats/{org}?from=YYYY-MM-DD&to=YYYY-MM-DD` (both inclusive; default the last 30
/// days including today). Series are newest first; storage figures carry forward over days
/// without a change; traffic lists only days with traffic.
pub fn get(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    from: Option<String>,
    to: Option<String>,
) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::Read)?;
    require_org(&*svc.store, org)?;
    svc.traffic.flush(&*svc.store)?;
    let (from, to) = day_range(from, to, false, 29)?;
    let days = svc.store.day_stats(org.as_str())?;
    let point = |day: i64, value: u64, unit: Value| json!({"timestamp": time::format_unix(day), "value": value, "unit": unit});
    let (mut space, mut files, mut downloaded, mut render_bytes, mut renders) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut day = to;
    while day >= from {
        let name = time::day_of(day);
        let snap = snapshot(&days, &name);
        space.push(point(day, snap.space_in_bytes, json!("Bytes")));
        files.push(point(day, snap.number_of_files, Value::Null));
        render_bytes.push(point(day, snap.render_bytes, json!("Bytes")));
        renders.push(point(day, snap.renders, Value::Null));
        if let Some((_, s)) = days.iter().find(|(d, _)| *d == name) {
            if s.bytes_downloaded > 0 {
                downloaded.push(point(day, s.bytes_downloaded, Value::Null));
            }
        }
        day -= 86_400;
    }
    Ok(json!({
        "space_in_bytes": space,
        "number_of_files": files,
        "bytes_downloaded": downloaded,
        "bytes_downloaded_external": [],
        "render_cache_bytes": render_bytes,
        "renders": renders,
    }))
}

/// `GET /billing/{org}?from=&to=` (spec §7.2): the billed units per month, in rokka's shape
/// (`{org: {"YYYY-MM": {"combined": …, "organizations": {org: …}}}}`). Storage is the average
/// of the month's daily source bytes in GB, traffic the bytes served in GB; renders are cache
/// and never appear. Darkroom keeps the units and no price list, so every `price_in_chf` is 0.
/// Dates are rounded to whole months; the default is the current month.
pub fn billing(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    from: Option<String>,
    to: Option<String>,
) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::BillingRead)?;
    require_org(&*svc.store, org)?;
    svc.traffic.flush(&*svc.store)?;
    let (from, to) = day_range(from, to, true, 0)?;
    let days = svc.store.day_stats(org.as_str())?;
    // Whole months: from the first of `from`'s month to the end of `to`'s (or today).
    let first = time::day_of(from);
    let mut day = time::parse_rfc3339(&format!("{}-01T00:00:00Z", &first[..7])).unwrap_or(from);
    let mut months: Vec<(String, Value)> = Vec::new();
    let (mut month, mut storage_sum, mut storage_days, mut traffic) =
        (String::new(), 0f64, 0u32, 0u64);
    let entry = |storage: f64, traffic: u64| {
        let gb = |bytes: f64| bytes / 1e9;
        let part = |units: f64| json!({"total": {"units_consumed": units, "unit": "GB", "price_in_chf": 0}});
        let figures = json!({
            "storage": part(gb(storage)),
            "traffic": part(gb(traffic as f64)),
            "total": {"price_in_chf": 0},
        });
        json!({"combined": figures.clone(), "organizations": {org.as_str(): figures}})
    };
    while day <= to {
        let name = time::day_of(day);
        let this_month = name[..7].to_string();
        if this_month != month && !month.is_empty() {
            months.push((
                month.clone(),
                entry(storage_sum / f64::from(storage_days.max(1)), traffic),
            ));
            (storage_sum, storage_days, traffic) = (0.0, 0, 0);
        }
        month = this_month;
        let snap = snapshot(&days, &name);
        storage_sum += snap.space_in_bytes as f64;
        storage_days += 1;
        if let Some((_, s)) = days.iter().find(|(d, _)| *d == name) {
            traffic += s.bytes_downloaded;
        }
        day += 86_400;
    }
    if !month.is_empty() {
        months.push((
            month,
            entry(storage_sum / f64::from(storage_days.max(1)), traffic),
        ));
    }
    let mut per_month = serde_json::Map::new();
    for (m, v) in months {
        per_month.insert(m, v);
    }
    Ok(json!({ org.as_str(): per_month }))
}

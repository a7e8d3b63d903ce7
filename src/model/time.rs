//! Timestamps as the API shows them: ISO-8601 with a numeric offset, always UTC
//! (`2019-12-10T11:13:24+00:00`), which rokka clients parse.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Nanoseconds since the Unix epoch, now; used to order records created in the same second.
pub fn now_unix_nanos() -> i128 {
    OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// Formats a Unix time as `YYYY-MM-DDThh:mm:ss+00:00`.
pub fn format_unix(secs: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00+00:00".to_string())
}

/// Parses an ISO-8601/RFC 3339 timestamp into Unix seconds.
pub fn parse_rfc3339(raw: &str) -> Option<i64> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .ok()
        .map(|t| t.to_offset(UtcOffset::UTC).unix_timestamp())
}

/// The UTC calendar day (`YYYY-MM-DD`) of a Unix time.
pub fn day_of(secs: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]");
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01".to_string())
}

/// The UTC calendar fields of a Unix time: year, month, day, hour, minute, second (file
/// timestamps inside ZIP archives are such fields, without a zone).
pub fn utc_fields(secs: i64) -> Option<(i32, u8, u8, u8, u8, u8)> {
    let t = OffsetDateTime::from_unix_timestamp(secs).ok()?;
    Some((
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_fields_split_a_unix_time() {
        assert_eq!(utc_fields(1_575_976_404), Some((2019, 12, 10, 11, 13, 24)));
    }

    #[test]
    fn timestamps_use_a_numeric_utc_offset() {
        assert_eq!(format_unix(1_575_976_404), "2019-12-10T11:13:24+00:00");
    }

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(
            parse_rfc3339("2019-12-10T11:13:24+00:00"),
            Some(1_575_976_404)
        );
        assert_eq!(
            parse_rfc3339("2050-02-08T07:05:00.000Z"),
            Some(2_527_916_700)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

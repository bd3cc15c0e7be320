//! Time as hookline writes it: RFC 3339 in UTC with milliseconds.

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

const MILLIS_UTC: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T10:00:00.123Z`.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(MILLIS_UTC)
        .expect("a UTC date with a four-digit year always formats")
}

/// Parses any RFC 3339 time (what [`format_timestamp`] writes, and more).
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Parses a receive time read back from a queue or spool: any RFC 3339 time, cut to whole
/// milliseconds in UTC; `None` outside years 0..=9999, which [`format_timestamp`] cannot write.
pub fn parse_received_at(text: &str) -> Option<OffsetDateTime> {
    from_epoch_millis(epoch_millis(parse_timestamp(text)?))
}

/// Formats JavaScript epoch milliseconds; `None` when out of range.
pub fn format_epoch_millis(millis: f64) -> Option<String> {
    from_epoch_millis_f64(millis).map(format_timestamp)
}

/// `at` cut to whole milliseconds, the precision the raw-delivery format keeps.
pub fn to_millis(at: OffsetDateTime) -> OffsetDateTime {
    from_epoch_millis(epoch_millis(at)).unwrap_or(at)
}

/// Unix milliseconds of `at` (what the raw-delivery format stores).
pub fn epoch_millis(at: OffsetDateTime) -> i64 {
    // Flooring, as the formatted text does, so a time before 1970 keeps the same millisecond.
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

/// The time `millis` after the epoch; `None` outside years 0..=9999.
pub fn from_epoch_millis(millis: i64) -> Option<OffsetDateTime> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()?;
    (0..=9999).contains(&at.year()).then_some(at)
}

fn from_epoch_millis_f64(millis: f64) -> Option<OffsetDateTime> {
    if !millis.is_finite() || millis.abs() > 1e17 {
        return None;
    }
    from_epoch_millis(millis.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_millis_table() {
        assert_eq!(
            format_epoch_millis(1524181344796.0).as_deref(),
            Some("2018-04-19T23:42:24.796Z")
        );
        assert_eq!(
            format_epoch_millis(0.0).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(format_epoch_millis(f64::NAN), None);
        assert_eq!(format_epoch_millis(1e30), None);
        assert_eq!(format_epoch_millis(-1e30), None);
    }

    #[test]
    fn round_trips() {
        let at = parse_timestamp("2026-11-22T10:00:00.123Z").unwrap();
        assert_eq!(format_timestamp(at), "2026-11-22T10:00:00.123Z");
        assert_eq!(from_epoch_millis(epoch_millis(at)), Some(at));
        let offset = parse_timestamp("2026-11-22T12:00:00.5+02:00").unwrap();
        assert_eq!(format_timestamp(offset), "2026-11-22T10:00:00.500Z");
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(from_epoch_millis(i64::MAX), None);
    }

    #[test]
    fn received_times_are_whole_milliseconds_in_four_digit_years() {
        let cut = |text| parse_received_at(text).map(format_timestamp);
        assert_eq!(
            cut("2026-05-01T12:00:00.123999999Z").as_deref(),
            Some("2026-05-01T12:00:00.123Z")
        );
        assert_eq!(
            cut("2026-05-01T14:00:00.5+02:00").as_deref(),
            Some("2026-05-01T12:00:00.500Z")
        );
        let before_1970 = parse_received_at("1969-12-31T23:59:59.9999Z").unwrap();
        assert_eq!(format_timestamp(before_1970), "1969-12-31T23:59:59.999Z");
        assert_eq!(epoch_millis(before_1970), -1);
        // In UTC these fall in years 10000 and -1, which would not format.
        assert_eq!(cut("9999-12-31T23:59:59.999-23:59"), None);
        assert_eq!(cut("0000-01-01T00:00:00+00:01"), None);
        assert_eq!(
            cut("0000-01-01T00:00:00Z").as_deref(),
            Some("0000-01-01T00:00:00.000Z")
        );
        assert_eq!(cut("yesterday"), None);
    }
}

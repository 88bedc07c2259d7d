//! vSphere's `xsd:dateTime` ↔ Unix milliseconds, without a date library.

use dr_core::Timestamp;

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses `2026-11-25T10:43:44.123456Z` (or with a `+hh:mm` offset).
pub fn parse(text: &str) -> Option<Timestamp> {
    let t = text.trim();
    let (date, rest) = t.split_once('T')?;
    let mut dp = date.split('-');
    let (y, m, d): (i64, u32, u32) = (
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (clock, offset_min) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?),
        )
    } else {
        (rest, 0)
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut tp = hms.split(':');
    let (h, mi, s): (i64, i64, i64) = (
        tp.next()?.parse().ok()?,
        tp.next()?.parse().ok()?,
        tp.next()?.parse().ok()?,
    );
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let ms: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(3).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{digits:0<3}").parse().ok()?
    };
    let secs = days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok().map(Timestamp)
}

/// The last instant of year 9999: later times are written as this, which is
/// as far as `xsd:dateTime` readers go.
const MAX_MS: u64 = 253_402_300_799_999;

/// Formats as `2026-11-25T10:43:44.123Z`.
pub fn format(t: Timestamp) -> String {
    let ms = t.as_millis().min(MAX_MS);
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_values() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        assert_eq!(
            parse("2000-03-01T00:00:00.5Z"),
            Some(Timestamp(951_868_800_500))
        );
        assert_eq!(
            parse("2026-11-25T10:43:44.123456Z").map(format).as_deref(),
            Some("2026-11-25T10:43:44.123Z")
        );
        assert_eq!(
            parse("2026-11-25T12:43:44+02:00"),
            parse("2026-11-25T10:43:44Z")
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-11-25",
            "2026-11-25T25:00:00Z",
            "2026-11-25T10:00:00.xZ",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(format(Timestamp(u64::MAX)), "9999-12-31T23:59:59.999Z");
        for t in [0u64, 1_000, 951_868_800_500, 1_795_000_000_123, MAX_MS] {
            assert_eq!(parse(&format(Timestamp(t))), Some(Timestamp(t)));
        }
    }
}

//! Sizes, counts and durations: parsing what a person types on the command line, and
//! formatting what the commands print.
//!
//! Sizes are binary: `K`/`KiB` = 1024, `M`/`MiB` = 1024², `G`/`GiB` = 1024³, `T`/`TiB` = 1024⁴,
//! `B` or no suffix = bytes; suffixes are case-insensitive. Decimal `KB`/`MB`/`GB` are refused
//! with a hint (whether they mean 1000 or 1024 is a classic source of wrong capacities).
//! Durations are one or more `<integer><unit>` parts with units `ms`, `s`, `m`, `h`, `d`
//! (`500ms`, `30s`, `20m`, `1h30m`); a bare number is refused, since its unit would be a guess.
//! Every parser returns a message that names the input and says what is accepted: clap prints
//! it as `invalid value '<input>' for '--flag <X>': <message>`.

use std::time::Duration;

/// The longest TTL the engine stores: deadlines and sliding windows are whole milliseconds
/// in 32 bits (about 49.7 days).
pub const MAX_TTL: Duration = Duration::from_millis(u32::MAX as u64);

/// Parses a byte size: `4096`, `64MiB`, `64M`, `1 GiB`, `512k`.
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit() && c != '_').unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let unit = unit.trim_start();
    if num.is_empty() || num.starts_with('_') {
        return Err(format!("expected a size like 4096, 512KiB, 64MiB or 1GiB, found {input:?}"));
    }
    let n: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{input:?}: the number is too large (sizes are at most 2^64 - 1 bytes)"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "kb" | "mb" | "gb" | "tb" => {
            return Err(format!(
                "{input:?}: decimal units are ambiguous here; write {n}{}iB (binary, powers of 1024) \
                 or the exact byte count",
                unit[..1].to_ascii_uppercase()
            ));
        }
        _ => {
            return Err(format!(
                "{input:?}: unknown unit {unit:?}; use B, KiB, MiB, GiB, TiB (or K, M, G, T)"
            ));
        }
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{input:?} is too large (at most 2^64 - 1 bytes)"))
}

/// Parses a count (entries, clients, feed positions): digits, optionally grouped with `_`.
pub fn parse_count(input: &str) -> Result<u64, String> {
    let s = input.trim();
    if s.is_empty() || s.starts_with('_') || !s.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return Err(format!("expected a whole number like 65536 or 1_000_000, found {input:?}"));
    }
    s.replace('_', "").parse().map_err(|_| format!("{input:?} is too large"))
}

/// Parses a duration: `500ms`, `30s`, `20m`, `1h`, `2d`, or a sum of parts like `1h30m`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("expected a duration like 500ms, 30s, 20m, 1h or 1h30m, found nothing".into());
    }
    let mut rest = s;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!(
                "{input:?}: expected a number at {rest:?}; durations look like 500ms, 30s, 20m, 1h30m"
            ));
        }
        let (num, after) = rest.split_at(digits_end);
        let unit_end = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let per_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{input:?}: add a unit (ms, s, m, h, d), e.g. {num}s or {num}m")),
            _ => return Err(format!("{input:?}: unknown unit {unit:?}; use ms, s, m, h or d")),
        };
        let n: u64 = num.parse().map_err(|_| format!("{input:?} is too long a duration"))?;
        total_ms = n
            .checked_mul(per_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("{input:?} is too long a duration"))?;
        rest = next;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses a TTL: a duration of at least 1 ms and at most [`MAX_TTL`].
pub fn parse_ttl(input: &str) -> Result<Duration, String> {
    let d = parse_duration(input)?;
    if d.is_zero() {
        return Err(format!(
            "{input:?}: a TTL must be at least 1ms (leave out --ttl for an entry that never expires)"
        ));
    }
    if d > MAX_TTL {
        return Err(format!(
            "{input:?}: the longest TTL is {} (2^32 - 1 ms); leave out --ttl for an entry that never expires",
            format_duration(MAX_TTL)
        ));
    }
    Ok(d)
}

/// `1536` → `1.5 KiB`; below 1 KiB, `812 B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// `1234567` → `1,234,567`.
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in the syntax [`parse_duration`] reads: `20m`, `1h2m3s`, `4s250ms`, `0ms`.
/// Past one minute, milliseconds are dropped.
pub fn format_duration(d: Duration) -> String {
    let total = d.as_millis().min(u64::MAX as u128) as u64;
    let keep_ms = total < 60_000;
    let parts = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")];
    let mut rest = total;
    let mut out = String::new();
    for (per, unit) in parts {
        if per == 1 && !keep_ms {
            break;
        }
        let n = rest / per;
        rest %= per;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str(if keep_ms { "0ms" } else { "0s" });
    }
    out
}

/// `part / whole` as a percentage with one decimal, or `n/a` when `whole` is 0.
pub fn format_percent(part: u64, whole: u64) -> String {
    if whole == 0 { "n/a".into() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("4096", 4096),
            ("4_096", 4096),
            ("12B", 12),
            ("1K", 1024),
            ("1k", 1024),
            ("2KiB", 2048),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("64m", 64 << 20),
            ("1G", 1 << 30),
            ("3gib", 3 << 30),
            ("2T", 2 << 40),
            (" 8M ", 8 << 20),
        ];
        for (s, want) in ok {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for bad in ["", "MiB", "-1", "1.5GiB", "64QB", "64 M iB", "_1", "99999999999999999999", "16777216T"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(&format!("{:?}", bad.trim())) || e.contains("expected"), "{bad}: {e}");
        }
        let e = parse_size("64MB").unwrap_err();
        assert!(e.contains("64MiB"), "{e}");
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("65536"), Ok(65536));
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        for bad in ["", "1M", "-3", "1.0", "_5", "x", "99999999999999999999999"] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        let ms = |n| Duration::from_millis(n);
        let ok = [
            ("500ms", ms(500)),
            ("30s", ms(30_000)),
            ("20m", ms(1_200_000)),
            ("20min", ms(1_200_000)),
            ("1h", ms(3_600_000)),
            ("2d", ms(172_800_000)),
            ("1h30m", ms(5_400_000)),
            ("1s500ms", ms(1_500)),
            ("0s", ms(0)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        for bad in ["", "20", "5x", "m", "1h 30m", "-1s", "1.5s", "99999999999999999999d", "213503982335d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("20").unwrap_err().contains("add a unit"));
        assert!(parse_ttl("0ms").unwrap_err().contains("at least 1ms"));
        assert!(parse_ttl("50d").unwrap_err().contains("longest TTL"));
        assert_eq!(parse_ttl("49d"), Ok(ms(49 * 86_400_000)));
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["20m", "1h2m3s", "4s250ms", "500ms", "1d", "0ms"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert_eq!(format_duration(Duration::from_millis(61_500)), "1m1s");
        assert_eq!(format_bytes(812), "812 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(64 << 20), "64.0 MiB");
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_count(1_234_567), "1,234,567");
        assert_eq!(format_percent(1, 3), "33.3%");
        assert_eq!(format_percent(1, 0), "n/a");
    }
}

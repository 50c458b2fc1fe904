//! Human durations in configuration (`"7d"`, `"12h"`, `"90min"`).

use std::time::Duration;

/// A text that is not a duration, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(pub String);

/// Parses a duration made of `<number><unit>` parts, units `s`, `min`, `h`,
/// `d`, `w` (e.g. `"7d"`, `"1d12h"`, `"90min"`). `m` is rejected as ambiguous.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    parse(text).map_err(DurationError)
}

fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("`{text}`: expected a number before `{rest}`"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let secs = match unit {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "" => return Err(format!("`{text}`: missing unit (use s, min, h, d or w)")),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use s, min, h, d or w)"
                ))
            }
        };
        total = total
            .checked_add(
                n.checked_mul(secs)
                    .ok_or_else(|| format!("`{text}`: too large"))?,
            )
            .ok_or_else(|| format!("`{text}`: too large"))?;
    }
    if total == 0 {
        return Err(format!("`{text}`: must be longer than zero"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(parse_duration("90min").unwrap(), Duration::from_secs(5400));
        for bad in ["", "7", "d", "7m", "7x", "0d", "-1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

//! Calendar functions of the glue (`_gmtime_js`, `_localtime_js`, `_mktime_js`, `strftime`), pinned
//! to UTC as the reference runs (TZ unset, `C.UTF-8`).
//!
//! JavaScript `Date` arithmetic on a proleptic Gregorian calendar, without floating point: days
//! from the epoch to civil dates by Howard Hinnant's algorithms. Times outside JavaScript's `Date`
//! range (±8.64e15 ms) yield an all-zero `tm`, as `NaN` stored into an `Int32Array` does.

/// Broken-down time (`struct tm` fields the glue writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tm {
    pub sec: i32,
    pub min: i32,
    pub hour: i32,
    pub mday: i32,
    pub mon: i32,
    pub year: i32,
    pub wday: i32,
    pub yday: i32,
}

const MAX_DATE_MS: i128 = 8_640_000_000_000_000;

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `new Date(seconds * 1000)` broken down in UTC; `None` for an invalid date.
pub fn gmtime(seconds: i64) -> Option<Tm> {
    let ms = seconds as i128 * 1000;
    if ms.abs() > MAX_DATE_MS {
        return None;
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let yday = days - days_from_civil(y, 1, 1);
    Some(Tm {
        sec: (secs % 60) as i32,
        min: (secs / 60 % 60) as i32,
        hour: (secs / 3600) as i32,
        mday: d as i32,
        mon: (m - 1) as i32,
        year: (y - 1900) as i32,
        wday: (days + 4).rem_euclid(7) as i32,
        yday: yday as i32,
    })
}

/// `mktime` in UTC: normalises `tm` like `new Date(y, mon, d, h, mi, s)` and returns the seconds.
pub fn mktime(tm: &Tm) -> Option<(i64, Tm)> {
    let total_months = (tm.year as i64 + 1900) * 12 + tm.mon as i64;
    let y = total_months.div_euclid(12);
    let m = total_months.rem_euclid(12) + 1;
    let days = days_from_civil(y, m, 1) + tm.mday as i64 - 1;
    let secs = days * 86_400 + tm.hour as i64 * 3600 + tm.min as i64 * 60 + tm.sec as i64;
    gmtime(secs).map(|t| (secs, t))
}

const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// `strftime` of the glue for the conversions Lua's `os.date` uses (UTC, C locale).
pub fn strftime(format: &str, tm: &Tm) -> String {
    let year = tm.year as i64 + 1900;
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next().unwrap_or('%');
        if spec == 'E' || spec == 'O' {
            spec = chars.next().unwrap_or('%');
        }
        let wd = WEEKDAYS.get(tm.wday as usize).copied().unwrap_or("");
        let mo = MONTHS.get(tm.mon as usize).copied().unwrap_or("");
        match spec {
            'a' => out.push_str(&wd[..wd.len().min(3)]),
            'A' => out.push_str(wd),
            'b' | 'h' => out.push_str(&mo[..mo.len().min(3)]),
            'B' => out.push_str(mo),
            'c' => out.push_str(&strftime("%a %b %d %H:%M:%S %Y", tm)),
            'C' => out.push_str(&format!("{:02}", year / 100)),
            'd' => out.push_str(&format!("{:02}", tm.mday)),
            'D' | 'x' => out.push_str(&strftime("%m/%d/%y", tm)),
            'e' => out.push_str(&format!("{:>2}", tm.mday)),
            'F' => out.push_str(&strftime("%Y-%m-%d", tm)),
            'H' => out.push_str(&format!("{:02}", tm.hour)),
            'I' => {
                let h = match tm.hour {
                    0 => 12,
                    h if h > 12 => h - 12,
                    h => h,
                };
                out.push_str(&format!("{h:02}"))
            }
            'j' => out.push_str(&format!("{:03}", tm.yday + 1)),
            'm' => out.push_str(&format!("{:02}", tm.mon + 1)),
            'M' => out.push_str(&format!("{:02}", tm.min)),
            'n' => out.push('\n'),
            'p' => out.push_str(if tm.hour < 12 { "AM" } else { "PM" }),
            'r' => out.push_str(&strftime("%I:%M:%S %p", tm)),
            'R' => out.push_str(&strftime("%H:%M", tm)),
            'S' => out.push_str(&format!("{:02}", tm.sec)),
            't' => out.push('\t'),
            'T' | 'X' => out.push_str(&strftime("%H:%M:%S", tm)),
            'u' => out.push_str(&(if tm.wday == 0 { 7 } else { tm.wday }).to_string()),
            'U' => out.push_str(&format!("{:02}", (tm.yday + 7 - tm.wday) / 7)),
            'W' => out.push_str(&format!("{:02}", (tm.yday + 7 - (tm.wday + 6) % 7) / 7)),
            'w' => out.push_str(&tm.wday.to_string()),
            'y' => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            'Y' => out.push_str(&year.to_string()),
            'z' => out.push_str("+0000"),
            'Z' => out.push_str("GMT"),
            'G' | 'g' | 'V' => {
                let (iso_year, week) = iso_week(year, tm.yday as i64, tm.wday as i64);
                match spec {
                    'G' => out.push_str(&iso_year.to_string()),
                    'g' => out.push_str(&format!("{:02}", iso_year.rem_euclid(100))),
                    _ => out.push_str(&format!("{week:02}")),
                }
            }
            '%' => out.push('%'),
            other => {
                out.push('%');
                out.push(other);
            }
        }
    }
    out
}

fn iso_week(year: i64, yday: i64, wday: i64) -> (i64, i64) {
    let wd = (wday + 6) % 7; // Monday = 0
    let week = (yday - wd + 10) / 7;
    if week < 1 {
        let py = year - 1;
        let pdays = if is_leap(py) { 366 } else { 365 };
        return iso_week(py, yday + pdays, wday);
    }
    let days = if is_leap(year) { 366 } else { 365 };
    if week == 53 && yday - wd + 3 >= days {
        return (year + 1, 1);
    }
    (year, week)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        let t = gmtime(0).unwrap();
        assert_eq!((t.year, t.mon, t.mday, t.wday, t.yday), (70, 0, 1, 4, 0));
        let t = gmtime(1_732_000_000).unwrap(); // 2024-11-19T07:06:40Z, a Tuesday
        assert_eq!((t.year, t.mon, t.mday, t.hour, t.min, t.sec, t.wday, t.yday), (124, 10, 19, 7, 6, 40, 2, 323));
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S %a %b %j", &t), "2024-11-19 07:06:40 Tue Nov 324");
        assert!(gmtime(i64::MAX / 1000).is_none());
    }

    #[test]
    fn mktime_normalises_like_date() {
        let tm = Tm { year: 124, mon: 12, mday: 32, ..Tm::default() };
        let (secs, norm) = mktime(&tm).unwrap();
        assert_eq!((norm.year, norm.mon, norm.mday), (125, 1, 1));
        assert_eq!(gmtime(secs).unwrap(), norm);
    }
}

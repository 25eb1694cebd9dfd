use chrono::{NaiveDate, Weekday};

use super::*;

fn at(s: &str) -> Nanos {
    crate::clock::parse_rfc3339(s).unwrap()
}

fn w(period: Period, week_start: Weekday, now: &str) -> (String, String) {
    let w = window(period, week_start, at(now));
    (
        crate::clock::format_rfc3339(w.start),
        crate::clock::format_rfc3339(w.end),
    )
}

/// Each case, `TIME in START..END`: the `period` window (weeks from `week_start`) that holds
/// TIME runs from START to END.
#[track_caller]
fn windows(period: Period, week_start: Weekday, cases: &[&str]) {
    for case in cases {
        let (now, window) = case.split_once(" in ").unwrap();
        let (start, end) = window.split_once("..").unwrap();
        let want = (start.to_owned(), end.to_owned());
        assert_eq!(w(period, week_start, now), want, "{period:?} at {now}");
    }
}

#[test]
fn day_boundaries() {
    windows(
        Period::Day,
        Weekday::Mon,
        &[
            "2026-11-25T23:59:59.999999999Z in 2026-11-25T00:00:00Z..2026-11-26T00:00:00Z",
            "2026-11-26T00:00:00Z in 2026-11-26T00:00:00Z..2026-11-27T00:00:00Z",
            "2028-02-29T12:00:00Z in 2028-02-29T00:00:00Z..2028-03-01T00:00:00Z",
            "2026-12-31T23:00:00Z in 2026-12-31T00:00:00Z..2027-01-01T00:00:00Z",
        ],
    );
}

#[test]
fn week_starting_monday() {
    windows(
        Period::Week,
        Weekday::Mon,
        &[
            // 2026-11-25 is a Wednesday.
            "2026-11-25T10:00:00Z in 2026-11-23T00:00:00Z..2026-11-30T00:00:00Z",
            // Monday 00:00 starts a new week; Sunday 23:59 is still the old one.
            "2026-11-30T00:00:00Z in 2026-11-30T00:00:00Z..2026-12-07T00:00:00Z",
            "2026-11-29T23:59:59Z in 2026-11-23T00:00:00Z..2026-11-30T00:00:00Z",
            // Across the year end: 2026-12-31 is a Thursday.
            "2027-01-01T05:00:00Z in 2026-12-28T00:00:00Z..2027-01-04T00:00:00Z",
        ],
    );
}

#[test]
fn week_starting_sunday() {
    windows(
        Period::Week,
        Weekday::Sun,
        &[
            "2026-11-25T10:00:00Z in 2026-11-22T00:00:00Z..2026-11-29T00:00:00Z",
            "2026-11-29T00:00:00Z in 2026-11-29T00:00:00Z..2026-12-06T00:00:00Z",
            "2026-11-28T23:59:59Z in 2026-11-22T00:00:00Z..2026-11-29T00:00:00Z",
            // Leap day inside the week.
            "2028-03-01T00:00:00Z in 2028-02-27T00:00:00Z..2028-03-05T00:00:00Z",
        ],
    );
}

#[test]
fn month_boundaries() {
    windows(
        Period::Month,
        Weekday::Mon,
        &[
            "2028-02-29T23:59:59Z in 2028-02-01T00:00:00Z..2028-03-01T00:00:00Z",
            "2027-02-28T12:00:00Z in 2027-02-01T00:00:00Z..2027-03-01T00:00:00Z",
            "2026-12-31T23:59:59.999Z in 2026-12-01T00:00:00Z..2027-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z in 2027-01-01T00:00:00Z..2027-02-01T00:00:00Z",
        ],
    );
}

#[test]
fn offset_only_in_the_period_of_starts_at() {
    let starts = NaiveDate::from_ymd_opt(2026, 11, 10);
    let nov = window(Period::Month, Weekday::Mon, at("2026-11-25T00:00:00Z"));
    let dec = window(Period::Month, Weekday::Mon, at("2026-12-01T00:00:00Z"));
    let oct = window(Period::Month, Weekday::Mon, at("2026-10-31T23:59:59Z"));
    assert_eq!(effective_limit(5000, 1200, starts, nov), 3800);
    assert_eq!(effective_limit(5000, 1200, starts, dec), 5000);
    assert_eq!(effective_limit(5000, 1200, starts, oct), 5000);
    assert_eq!(effective_limit(5000, 1200, None, nov), 5000);
    // A week: the offset applies in the week of starts_at only.
    let wk = window(Period::Week, Weekday::Mon, at("2026-11-12T00:00:00Z"));
    let next = window(Period::Week, Weekday::Mon, at("2026-11-17T00:00:00Z"));
    assert_eq!(effective_limit(100, 30, starts, wk), 70);
    assert_eq!(effective_limit(100, 30, starts, next), 100);
}

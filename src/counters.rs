//! Per-employee lookup counters handed to Cedar (`lookups_last_hour`, `lookups_last_day`), so
//! volume thresholds live in policy, not in code. Counts are per data-subject decision, kept in
//! minute buckets (last hour) and hour buckets (last day); they live in memory only.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::Counters;

#[derive(Debug, Clone)]
struct Window {
    /// `(epoch minute, count)` per minute slot.
    minutes: [(i64, u32); 60],
    /// `(epoch hour, count)` per hour slot.
    hours: [(i64, u32); 24],
    last_minute: i64,
}

impl Window {
    fn new() -> Window {
        Window {
            minutes: [(i64::MIN, 0); 60],
            hours: [(i64::MIN, 0); 24],
            last_minute: i64::MIN,
        }
    }

    fn counts(&self, minute: i64) -> Counters {
        let hour = minute.div_euclid(60);
        let last_hour: u32 = self
            .minutes
            .iter()
            .filter(|(m, _)| *m > minute - 60 && *m <= minute)
            .map(|(_, c)| *c)
            .sum();
        let last_day: u32 = self
            .hours
            .iter()
            .filter(|(h, _)| *h > hour - 24 && *h <= hour)
            .map(|(_, c)| *c)
            .sum();
        Counters {
            lookups_last_hour: i64::from(last_hour),
            lookups_last_day: i64::from(last_day),
        }
    }

    fn add(&mut self, minute: i64, n: u32) {
        let hour = minute.div_euclid(60);
        let ms = &mut self.minutes[minute.rem_euclid(60) as usize];
        if ms.0 != minute {
            *ms = (minute, 0);
        }
        ms.1 = ms.1.saturating_add(n);
        let hs = &mut self.hours[hour.rem_euclid(24) as usize];
        if hs.0 != hour {
            *hs = (hour, 0);
        }
        hs.1 = hs.1.saturating_add(n);
        self.last_minute = self.last_minute.max(minute);
    }
}

/// Lookup counts per employee.
#[derive(Debug, Default)]
pub struct LookupCounters {
    inner: Mutex<HashMap<String, Window>>,
}

impl LookupCounters {
    /// The counts before this request, then adds `n` lookups at `unix_secs`.
    pub fn count_and_add(&self, employee: &str, unix_secs: i64, n: u32) -> Counters {
        let minute = unix_secs.div_euclid(60);
        let Ok(mut map) = self.inner.lock() else {
            return Counters::default();
        };
        if map.len() > 100_000 {
            map.retain(|_, w| w.last_minute > minute - 24 * 60);
        }
        let w = map.entry(employee.to_string()).or_insert_with(Window::new);
        let before = w.counts(minute);
        w.add(minute, n);
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_over_the_hour_and_day() {
        let c = LookupCounters::default();
        let t0 = 1_800_000_000;
        assert_eq!(c.count_and_add("e", t0, 3).lookups_last_hour, 0);
        let after = c.count_and_add("e", t0 + 60, 1);
        assert_eq!(after.lookups_last_hour, 3);
        assert_eq!(after.lookups_last_day, 3);
        let later = c.count_and_add("e", t0 + 2 * 3600, 0);
        assert_eq!(later.lookups_last_hour, 0);
        assert_eq!(later.lookups_last_day, 4);
        let next_day = c.count_and_add("e", t0 + 26 * 3600, 0);
        assert_eq!(next_day.lookups_last_day, 0);
        assert_eq!(c.count_and_add("other", t0, 0).lookups_last_hour, 0);
    }
}

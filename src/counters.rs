//! Per-employee lookup counters handed to Cedar (`lookups_last_hour`, `lookups_last_day`), so
//! volume thresholds live in policy, not in code. Counts are per data-subject decision, kept in
//! minute buckets (last hour) and hour buckets (last day), in memory.
//!
//! At start a gate rebuilds them from its own log ([`LookupCounters::rebuild`]): a restart does
//! not hand out a fresh allowance. With `[store]`, the other gates' counts, read from the store
//! every `counter_refresh`, are added ([`LookupCounters::set_others`]); the docs
//! (`docs/scale-out.md`) state the bound on overshoot this staleness allows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

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
    /// Other gates' counts per employee, as last read from the store.
    others: ArcSwap<HashMap<String, Counters>>,
}

impl LookupCounters {
    /// Replaces the other gates' counts (read from the store).
    pub fn set_others(&self, others: HashMap<String, Counters>) {
        self.others.store(Arc::new(others));
    }

    /// Counts the decision records about a data subject of the last 24 hours in the log at
    /// `dir` (the same unit [`LookupCounters::count_and_add`] counts); returns how many.
    /// Segments hold one UTC day each, so only the newest segments are read.
    pub fn rebuild(&self, dir: &Path, now_secs: i64) -> Result<u64, String> {
        let segments = crate::audit::list_segment_files(dir)
            .map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?;
        let since = now_secs - 24 * 3600;
        let since_day = chrono::DateTime::from_timestamp(since, 0)
            .map(|t| t.date_naive())
            .unwrap_or_default();
        let mut counted = 0u64;
        for (_, path) in segments {
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
            };
            // Skip whole segments of days before the window (the first record's day).
            let first_day = text
                .split(|b| *b == b'\n')
                .next()
                .and_then(|l| crate::audit::parse_record(l).ok())
                .and_then(|r| chrono::DateTime::parse_from_rfc3339(r.time()).ok())
                .map(|t| t.with_timezone(&chrono::Utc).date_naive());
            if first_day.is_some_and(|d| d < since_day.pred_opt().unwrap_or(since_day)) {
                continue;
            }
            for line in text.split(|b| *b == b'\n') {
                let Ok(crate::audit::Record::Decision(d)) = crate::audit::parse_record(line) else {
                    continue;
                };
                let (Some(p), Some(_)) = (&d.principal, &d.resource) else {
                    continue;
                };
                let Ok(t) = chrono::DateTime::parse_from_rfc3339(&d.time) else {
                    continue;
                };
                let secs = t.timestamp();
                if secs <= since || secs > now_secs {
                    continue;
                }
                self.count_and_add(&p.id, secs, 1);
                counted += 1;
            }
        }
        Ok(counted)
    }

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
        let mut before = w.counts(minute);
        w.add(minute, n);
        drop(map);
        if let Some(o) = self.others.load().get(employee) {
            before.lookups_last_hour += o.lookups_last_hour;
            before.lookups_last_day += o.lookups_last_day;
        }
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

    #[test]
    fn other_gates_counts_are_added_to_the_exact_local_ones() {
        let c = LookupCounters::default();
        let t0 = 1_800_000_000;
        c.count_and_add("e", t0, 2);
        c.set_others(HashMap::from([(
            "e".to_string(),
            Counters {
                lookups_last_hour: 5,
                lookups_last_day: 7,
            },
        )]));
        let now = c.count_and_add("e", t0 + 1, 0);
        assert_eq!(now.lookups_last_hour, 7);
        assert_eq!(now.lookups_last_day, 9);
        assert_eq!(c.count_and_add("f", t0, 0).lookups_last_hour, 0);
    }
}

//! The per-integration daily quota counter: pure logic, no I/O.
//!
//! The owning client actor calls [`QuotaCounter::try_admit`] once per request; the
//! counter decides and, when the persisted reservation would be overtaken, asks for a
//! new reservation first ([`Admission::NeedsReservation`]). The actor performs that
//! durable write and asks again. So `used ≤ durable_reserved` holds after every
//! admission: a crash resumes at the reservation and can over-count by at most one
//! block, never under-count.

use tollgate_storage::model::DayUsage;

use crate::clock::{day_of, hour_of, next_midnight_ms};

/// The quota position reported with every decision (and turned into headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    /// Requests allowed per UTC day.
    pub limit: u64,
    /// Requests counted today, including this one when admitted.
    pub used: u64,
    /// Requests left today.
    pub remaining: u64,
    /// When the count resets (next UTC midnight, Unix ms).
    pub resets_at_ms: u64,
    /// The highest warning threshold (percent) that `used` has reached, if any.
    pub warning_threshold: Option<u8>,
}

/// What [`QuotaCounter::try_admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Counted.
    Admitted {
        status: QuotaStatus,
        /// A threshold reached for the first time today (to audit once).
        newly_crossed: Option<u8>,
        /// This admission used the last request of the day (to audit once).
        is_now_exhausted: bool,
    },
    /// Refused and not counted.
    Exceeded {
        status: QuotaStatus,
        /// First refusal today while exhaustion was not yet audited.
        is_first_refusal: bool,
    },
    /// Persist a reservation of at least `upto` first, then ask again.
    NeedsReservation { upto: u64 },
}

/// One integration's live count for the current UTC day.
#[derive(Debug, Clone)]
pub(crate) struct QuotaCounter {
    day: u32,
    used: u64,
    hourly: [u64; 24],
    /// The reservation known to be on disk for `day`.
    durable_reserved: u64,
    /// Bit i set: threshold i was audited today.
    warned: u32,
    is_exhaustion_audited: bool,
}

impl QuotaCounter {
    /// Resumes a day from its persisted usage (the reservation, after a crash).
    pub(crate) fn resume(day: u32, persisted: Option<DayUsage>) -> Self {
        let persisted = persisted.unwrap_or_default();
        Self {
            day,
            used: persisted.reserved,
            hourly: persisted.hourly,
            durable_reserved: persisted.reserved,
            warned: 0,
            is_exhaustion_audited: false,
        }
    }

    pub(crate) fn day(&self) -> u32 {
        self.day
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    pub(crate) fn durable_reserved(&self) -> u64 {
        self.durable_reserved
    }

    /// Whether `now_ms` falls on a later day than the counter's.
    pub(crate) fn is_stale(&self, now_ms: u64) -> bool {
        day_of(now_ms) != self.day
    }

    /// The status without admitting anything.
    pub(crate) fn status(&self, now_ms: u64, limit: u64, thresholds: &[u8]) -> QuotaStatus {
        QuotaStatus {
            limit,
            used: self.used,
            remaining: limit.saturating_sub(self.used),
            resets_at_ms: next_midnight_ms(now_ms),
            warning_threshold: thresholds
                .iter()
                .copied()
                .filter(|&t| self.used.saturating_mul(100) >= u64::from(t).saturating_mul(limit))
                .max(),
        }
    }

    /// Check-and-consume one request.
    pub(crate) fn try_admit(&mut self, now_ms: u64, limit: u64, thresholds: &[u8]) -> Admission {
        if self.used >= limit {
            let is_first_refusal = !self.is_exhaustion_audited;
            self.is_exhaustion_audited = true;
            return Admission::Exceeded {
                status: self.status(now_ms, limit, thresholds),
                is_first_refusal,
            };
        }
        if self.used + 1 > self.durable_reserved {
            return Admission::NeedsReservation { upto: self.used + 1 };
        }
        self.used += 1;
        self.hourly[hour_of(now_ms)] += 1;
        let status = self.status(now_ms, limit, thresholds);
        let mut newly_crossed = None;
        for (i, &t) in thresholds.iter().enumerate() {
            let bit = 1u32 << (i.min(31));
            if self.warned & bit == 0 && self.used.saturating_mul(100) >= u64::from(t).saturating_mul(limit) {
                self.warned |= bit;
                newly_crossed = newly_crossed.max(Some(t));
            }
        }
        let is_now_exhausted = self.used == limit && !self.is_exhaustion_audited;
        if is_now_exhausted {
            self.is_exhaustion_audited = true;
        }
        Admission::Admitted {
            status,
            newly_crossed,
            is_now_exhausted,
        }
    }

    /// The reservation to persist next: one block past the live count (so the
    /// reservation is never more than a block ahead of it), never less than `upto`
    /// or what is already reserved, and not past the limit unless `upto` requires it.
    pub(crate) fn next_reservation(&self, upto: u64, limit: u64, block: u64) -> u64 {
        (self.used + block)
            .min(limit.max(upto))
            .max(upto)
            .max(self.durable_reserved)
    }

    /// Whether to reserve the next block now, before the current one runs out.
    pub(crate) fn should_reserve_ahead(&self, limit: u64, block: u64) -> bool {
        self.durable_reserved < limit && self.durable_reserved - self.used.min(self.durable_reserved) <= block / 2
    }

    /// What to persist for a reservation up to `target`: the excess over the live
    /// count is booked to the current hour so that the hourly buckets sum to it.
    pub(crate) fn reservation_snapshot(&self, target: u64, now_ms: u64) -> DayUsage {
        let mut hourly = self.hourly;
        hourly[hour_of(now_ms)] += target.saturating_sub(self.used);
        DayUsage {
            reserved: target.max(self.used),
            hourly,
        }
    }

    /// Records that a reservation up to `target` is durable.
    pub(crate) fn reservation_durable(&mut self, target: u64) {
        self.durable_reserved = self.durable_reserved.max(target);
    }

    /// The exact count, persisted on graceful stop.
    pub(crate) fn exact_snapshot(&self) -> DayUsage {
        DayUsage {
            reserved: self.used,
            hourly: self.hourly,
        }
    }

    /// After the exact count is durable, the reservation equals the count.
    pub(crate) fn exact_durable(&mut self) {
        self.durable_reserved = self.used;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::DAY_MS;
    use proptest::prelude::*;

    const T: &[u8] = &[80, 95];
    const NOW: u64 = 20_000 * DAY_MS + 3_600_000;

    /// Drives a counter like the actor does, with an in-memory "disk".
    fn admit(c: &mut QuotaCounter, disk: &mut DayUsage, limit: u64, block: u64) -> Admission {
        loop {
            match c.try_admit(NOW, limit, T) {
                Admission::NeedsReservation { upto } => {
                    let target = c.next_reservation(upto, limit, block);
                    *disk = c.reservation_snapshot(target, NOW);
                    c.reservation_durable(target);
                }
                other => {
                    // The invariant itself, before any reserve-ahead could mask a
                    // missing synchronous reservation.
                    assert!(
                        c.used() <= c.durable_reserved(),
                        "admitted past the durable reservation"
                    );
                    if c.should_reserve_ahead(limit, block) {
                        let target = c.next_reservation(c.used() + 1, limit, block);
                        *disk = c.reservation_snapshot(target, NOW);
                        c.reservation_durable(target);
                    }
                    return other;
                }
            }
        }
    }

    #[test]
    fn admits_exactly_the_limit_and_does_not_charge_refusals() {
        let mut c = QuotaCounter::resume(20_000, None);
        let mut disk = DayUsage::default();
        let mut admitted = 0;
        for _ in 0..150 {
            if matches!(admit(&mut c, &mut disk, 100, 8), Admission::Admitted { .. }) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 100);
        assert_eq!(c.used(), 100, "refused requests are not counted");
    }

    #[test]
    fn thresholds_and_exhaustion_are_reported_once() {
        let mut c = QuotaCounter::resume(20_000, None);
        let mut disk = DayUsage::default();
        let mut crossed = Vec::new();
        let mut exhausted = 0;
        let mut first_refusals = 0;
        for _ in 0..30 {
            match admit(&mut c, &mut disk, 20, 4) {
                Admission::Admitted {
                    newly_crossed,
                    is_now_exhausted,
                    status,
                } => {
                    crossed.extend(newly_crossed);
                    exhausted += u32::from(is_now_exhausted);
                    if status.used == 16 {
                        assert_eq!(status.warning_threshold, Some(80));
                    }
                }
                Admission::Exceeded {
                    is_first_refusal,
                    status,
                } => {
                    first_refusals += u32::from(is_first_refusal);
                    assert_eq!(status.remaining, 0);
                }
                Admission::NeedsReservation { .. } => unreachable!(),
            }
        }
        assert_eq!(crossed, vec![80, 95]);
        assert_eq!(
            (exhausted, first_refusals),
            (1, 0),
            "exhaustion was already audited when reached"
        );
    }

    #[test]
    fn raising_the_limit_keeps_the_count() {
        let mut c = QuotaCounter::resume(20_000, None);
        let mut disk = DayUsage::default();
        for _ in 0..10 {
            admit(&mut c, &mut disk, 10, 4);
        }
        assert!(matches!(admit(&mut c, &mut disk, 10, 4), Admission::Exceeded { .. }));
        assert!(matches!(admit(&mut c, &mut disk, 20, 4), Admission::Admitted { status, .. } if status.used == 11));
    }

    proptest! {
        /// Random runs with crashes: the resumed count is never below what was
        /// admitted, and at most one block above it; hourly buckets sum to it.
        #[test]
        fn crashes_never_under_count(ops in proptest::collection::vec(0u8..20, 1..400), limit in 1u64..300, block in 1u64..64) {
            let mut c = QuotaCounter::resume(20_000, None);
            let mut disk = DayUsage::default();
            let mut admitted = 0u64;
            for op in ops {
                if op == 0 {
                    // kill -9: only the disk survives.
                    c = QuotaCounter::resume(20_000, Some(disk));
                    prop_assert!(c.used() >= admitted);
                    prop_assert!(c.used() <= admitted + block, "over-count beyond one block");
                    admitted = c.used();
                } else if matches!(admit(&mut c, &mut disk, limit, block), Admission::Admitted { .. }) {
                    admitted += 1;
                }
                prop_assert!(disk.reserved >= c.used());
                prop_assert_eq!(disk.hourly.iter().sum::<u64>(), disk.reserved);
                prop_assert!(admitted <= limit.max(1) + block);
            }
        }
    }
}

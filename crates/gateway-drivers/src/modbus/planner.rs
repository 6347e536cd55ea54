//! The request planner: merges the tags of a device into the fewest read
//! requests, because on Modbus the round trip, not the register count, is
//! what costs (a 125-register read takes barely longer than a 1-register one).
//!
//! Rules:
//! * one table per request (coils, discrete inputs, holding and input
//!   registers are separate function codes), tables in that order, addresses
//!   ascending within a table, so the plan is the same on every run;
//! * a request holds at most `max_registers` registers (at most 125) or
//!   `max_coils` bits (at most 2000);
//! * two tags share a request only if at most `max_gap` unused registers lie
//!   between them (for bits: `16 × max_gap`, the same bytes on the wire);
//!   some devices refuse reads that touch unmapped addresses, so the driver
//!   splits a request the device refuses with "illegal data address" ([`split`]);
//! * overlapping tags (bits of one register, a register read both as u32 and
//!   as two u16) share their registers;
//! * within those limits requests are filled greedily in address order: a
//!   new request starts only where the next tag cannot join the current one.

use super::config::Area;

/// Where a tag sits: its table, first address and width (registers or bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// The table; tags of different tables never share a request.
    pub area: Area,
    /// 0-based address of the first coil or register, as on the wire.
    pub start: u16,
    /// Coils or registers, at least 1.
    pub width: u16,
}

impl Span {
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.width.max(1))
    }
}

/// The limits a plan keeps, from the device's `max_*` fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most registers per read (`max_registers_per_read`, at most 125).
    pub max_registers: u16,
    /// Coils or discrete inputs per request.
    pub max_coils: u16,
    /// Unused registers allowed between two tags of one request.
    pub max_gap: u16,
}

impl Limits {
    fn max_count(&self, area: Area) -> u32 {
        u32::from(if area.is_bits() { self.max_coils } else { self.max_registers }.max(1))
    }

    fn max_gap(&self, area: Area) -> u32 {
        let gap = u32::from(self.max_gap);
        if area.is_bits() { gap * 16 } else { gap }
    }
}

/// One read request and the tags (indexes into the device's tags) it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Read {
    /// The table, which picks the function code (FC 1 to 4).
    pub area: Area,
    /// 0-based address the read starts at: that of its first tag.
    pub start: u16,
    /// Coils or registers read, gaps between tags included.
    pub count: u16,
    /// The tags whose spans lie inside, in address order.
    pub tags: Vec<usize>,
}

/// The fewest requests that read every span (`spans[i]` is tag `i`).
pub(crate) fn plan(spans: &[Span], limits: Limits) -> Vec<Read> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].area, spans[i].start, std::cmp::Reverse(spans[i].width)));
    let mut reads: Vec<Read> = Vec::new();
    // The open request: its table, first address and end (exclusive).
    let mut open: Option<(Area, u32, u32)> = None;
    for i in order {
        let s = spans[i];
        if let Some((area, start, end)) = open.as_mut()
            && *area == s.area
            && s.end().max(*end) - *start <= limits.max_count(s.area)
            && u32::from(s.start) <= *end + limits.max_gap(s.area)
            && let Some(r) = reads.last_mut()
        {
            *end = (*end).max(s.end());
            // A u16 count: the request is at most 2000 long by the check above,
            // or one tag's own width when that alone exceeds the limit.
            r.count = u16::try_from(*end - *start).unwrap_or(u16::MAX);
            r.tags.push(i);
            continue;
        }
        open = Some((s.area, u32::from(s.start), s.end()));
        reads.push(Read { area: s.area, start: s.start, count: s.width.max(1), tags: vec![i] });
    }
    reads
}

/// Smaller requests for the tags of `read`, which the device refused: the
/// same tags planned with no gaps, or, if that changes nothing, one request
/// per distinct span. `None` when `read` cannot be split any further.
pub(crate) fn split(read: &Read, spans: &[Span], limits: Limits) -> Option<Vec<Read>> {
    let own: Vec<Span> = read.tags.iter().filter_map(|&i| spans.get(i).copied()).collect();
    let remap = |mut reads: Vec<Read>| {
        for r in &mut reads {
            for t in &mut r.tags {
                *t = read.tags[*t];
            }
        }
        reads
    };
    let tight = plan(&own, Limits { max_gap: 0, ..limits });
    if tight.len() > 1 {
        return Some(remap(tight));
    }
    // One request per distinct span (tags with the same span stay together).
    let single = plan(&own, Limits { max_gap: 0, max_registers: 1, max_coils: 1 });
    let mut by_span: Vec<Read> = Vec::new();
    for r in remap(single) {
        for t in r.tags {
            let s = spans[t];
            match by_span.iter_mut().find(|x| x.area == s.area && x.start == s.start && x.count == s.width.max(1)) {
                Some(x) => x.tags.push(t),
                None => by_span.push(Read { area: s.area, start: s.start, count: s.width.max(1), tags: vec![t] }),
            }
        }
    }
    (by_span.len() > 1).then_some(by_span)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_registers: 125, max_coils: 2000, max_gap: 8 };

    fn hr(start: u16, width: u16) -> Span {
        Span { area: Area::HoldingRegister, start, width }
    }

    fn ranges(reads: &[Read]) -> Vec<(Area, u16, u16)> {
        reads.iter().map(|r| (r.area, r.start, r.count)).collect()
    }

    /// Every tag is in exactly one read that covers it; no read breaks a limit
    /// (unless one tag alone does).
    fn check(spans: &[Span], reads: &[Read], limits: Limits) {
        let mut seen = vec![0; spans.len()];
        for r in reads {
            let max = if r.area.is_bits() { limits.max_coils } else { limits.max_registers };
            assert!(r.count <= max || r.tags.len() == 1, "{r:?} too long");
            for &t in &r.tags {
                seen[t] += 1;
                let s = spans[t];
                assert_eq!(s.area, r.area);
                assert!(s.start >= r.start && s.end() <= u32::from(r.start) + u32::from(r.count), "{s:?} not in {r:?}");
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn adjacent_and_nearby_tags_share_one_request() {
        let spans = [hr(0, 2), hr(2, 2), hr(4, 1), hr(13, 4)];
        let reads = plan(&spans, LIMITS);
        assert_eq!(ranges(&reads), vec![(Area::HoldingRegister, 0, 17)]);
        assert_eq!(reads[0].tags, vec![0, 1, 2, 3]);
        check(&spans, &reads, LIMITS);
    }

    #[test]
    fn a_gap_wider_than_max_gap_starts_a_new_request() {
        let spans = [hr(0, 1), hr(10, 1), hr(19, 1)];
        // 0 → 10 leaves 9 unused registers (1..=9): one more than allowed.
        let reads = plan(&spans, LIMITS);
        assert_eq!(ranges(&reads), vec![(Area::HoldingRegister, 0, 1), (Area::HoldingRegister, 10, 10)]);
        let reads = plan(&spans, Limits { max_gap: 0, ..LIMITS });
        assert_eq!(reads.len(), 3);
    }

    #[test]
    fn requests_stop_at_125_registers_and_2000_coils() {
        let spans: Vec<Span> = (0..300).map(|i| hr(i * 2, 2)).collect();
        let reads = plan(&spans, LIMITS);
        // 600 registers in f32 pairs: 62 pairs (124 registers) per request.
        assert_eq!(reads.len(), 5);
        assert!(reads.iter().all(|r| r.count <= 125));
        check(&spans, &reads, LIMITS);

        let coils: Vec<Span> = (0..5000).map(|i| Span { area: Area::Coil, start: i, width: 1 }).collect();
        let reads = plan(&coils, LIMITS);
        assert_eq!(ranges(&reads), vec![(Area::Coil, 0, 2000), (Area::Coil, 2000, 2000), (Area::Coil, 4000, 1000)]);
        check(&coils, &reads, LIMITS);
        let small = Limits { max_registers: 10, max_coils: 100, max_gap: 8 };
        let reads = plan(&spans[..10], small);
        assert_eq!(reads.len(), 2);
        check(&spans[..10], &reads, small);
    }

    #[test]
    fn tables_are_never_mixed_and_come_in_function_code_order() {
        let spans = [
            Span { area: Area::InputRegister, start: 0, width: 1 },
            Span { area: Area::Coil, start: 5, width: 1 },
            hr(0, 1),
            Span { area: Area::DiscreteInput, start: 0, width: 1 },
            Span { area: Area::Coil, start: 100, width: 1 },
        ];
        let reads = plan(&spans, LIMITS);
        assert_eq!(
            ranges(&reads),
            vec![
                (Area::Coil, 5, 96),
                (Area::DiscreteInput, 0, 1),
                (Area::HoldingRegister, 0, 1),
                (Area::InputRegister, 0, 1)
            ],
            "coils 5 and 100 are 94 bits apart, within 16 × 8"
        );
        check(&spans, &reads, LIMITS);
    }

    #[test]
    fn overlapping_tags_share_their_registers() {
        let spans = [hr(10, 2), hr(10, 1), hr(11, 1), hr(10, 1), hr(8, 4)];
        let reads = plan(&spans, LIMITS);
        assert_eq!(ranges(&reads), vec![(Area::HoldingRegister, 8, 4)]);
        check(&spans, &reads, LIMITS);
    }

    #[test]
    fn the_last_register_of_the_address_space_is_reachable() {
        let spans = [hr(65_531, 4), hr(65_535, 1)];
        let reads = plan(&spans, LIMITS);
        assert_eq!(ranges(&reads), vec![(Area::HoldingRegister, 65_531, 5)]);
        assert!(plan(&[], LIMITS).is_empty());
    }

    #[test]
    fn the_plan_never_breaks_a_rule_on_many_random_layouts() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..500 {
            let limits = Limits {
                max_registers: 1 + next(125) as u16,
                max_coils: 1 + next(2000) as u16,
                max_gap: next(20) as u16,
            };
            let spans: Vec<Span> = (0..1 + next(60))
                .map(|_| {
                    let area =
                        [Area::Coil, Area::DiscreteInput, Area::HoldingRegister, Area::InputRegister][next(4) as usize];
                    let width = if area.is_bits() { 1 } else { [1, 2, 4][next(3) as usize].min(limits.max_registers) };
                    Span { area, start: next(400) as u16, width }
                })
                .collect();
            let reads = plan(&spans, limits);
            check(&spans, &reads, limits);
            // No two consecutive requests of one table could have been one.
            for w in reads.windows(2) {
                if w[0].area == w[1].area {
                    let joined = u32::from(w[1].start) + u32::from(w[1].count) - u32::from(w[0].start);
                    let gap = i64::from(w[1].start) - (i64::from(w[0].start) + i64::from(w[0].count));
                    assert!(
                        joined > limits.max_count(w[0].area) || gap > i64::from(limits.max_gap(w[0].area)),
                        "{w:?} could have been merged under {limits:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_refused_request_splits_first_at_its_gaps_then_per_tag() {
        let spans = [hr(0, 2), hr(2, 1), hr(6, 2), hr(6, 1)];
        let reads = plan(&spans, LIMITS);
        assert_eq!(reads.len(), 1);
        let parts = split(&reads[0], &spans, LIMITS).unwrap();
        assert_eq!(ranges(&parts), vec![(Area::HoldingRegister, 0, 3), (Area::HoldingRegister, 6, 2)]);
        check(&spans, &parts, LIMITS);
        let parts = split(&parts[0], &spans, LIMITS).unwrap();
        assert_eq!(ranges(&parts), vec![(Area::HoldingRegister, 0, 2), (Area::HoldingRegister, 2, 1)]);
        assert_eq!(parts[0].tags, vec![0]);
        assert_eq!(parts[1].tags, vec![1]);
        assert_eq!(split(&parts[0], &spans, LIMITS), None);
        let same = Read { area: Area::HoldingRegister, start: 6, count: 2, tags: vec![2] };
        assert_eq!(split(&same, &spans, LIMITS), None);
    }
}

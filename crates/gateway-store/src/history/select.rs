//! Which readings are written: `include`/`exclude`, values that arrive
//! older than the retention, and each tag's deadband, decided before a row
//! is made. Pure (a state machine over readings), so the rules are tested
//! without a bus or a database.
//!
//! It must never drop a quality change: whatever the deadband, a reading
//! whose quality differs from the last stored one is stored. The deadband
//! compares with the last *stored* value, not the last seen, so a slow drift
//! is stored once it has drifted by the deadband. After a restart the first
//! reading of each tag is stored (the state is not persisted).

use std::collections::HashMap;

use gateway_model::{DataFrame, TagId, TagPattern, Value};

use super::config::{DeadbandRule, HistoryConfig};
use super::row::{int_of, quality_code};

/// What happens to one reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it, as tag `id` (`new` the first time this id is used).
    Keep { id: i32, new: bool },
    /// Not recorded: `include` does not match or `exclude` does.
    Excluded,
    /// Within the deadband of the last stored value.
    Deadband,
    /// Older than the retention already, or its time does not fit a row.
    Expired,
}

#[derive(Clone, Debug)]
struct Last {
    value: Value,
    q: i32,
    ts: i64,
}

struct TagState {
    /// None: not recorded.
    id: Option<i32>,
    /// Whether `id` came from the database (false: assigned here, not yet written).
    known: bool,
    rule: Option<usize>,
    last: Option<Last>,
}

/// The per-tag decisions and the tag ids (`history_tags.id`) the writer uses.
pub(crate) struct Selector {
    include: Vec<TagPattern>,
    exclude: Vec<TagPattern>,
    rules: Vec<(DeadbandRule, i64)>,
    tags: HashMap<TagId, TagState>,
    /// Ids of tags recorded before (from the database), by name.
    stored: HashMap<String, i32>,
    next_id: i32,
}

impl Selector {
    /// The selector for `cfg`, knowing the tags already in the database.
    pub fn new(cfg: &HistoryConfig, stored: HashMap<String, i32>) -> Selector {
        let next_id = stored.values().copied().max().unwrap_or(0) + 1;
        let rules =
            cfg.deadband.iter().map(|r| (r.clone(), r.max_gap.map_or(i64::MAX, |g| g.as_nanos() as i64))).collect();
        Selector {
            include: cfg.include.clone(),
            exclude: cfg.exclude.clone(),
            rules,
            tags: HashMap::new(),
            stored,
            next_id,
        }
    }

    /// Decides about `f`; `oldest_ns` is the retention's cutoff now.
    pub fn admit(&mut self, f: &DataFrame, oldest_ns: i64) -> Verdict {
        let Ok(ts) = i64::try_from(f.source_ts_ns) else { return Verdict::Expired };
        if ts < oldest_ns {
            return Verdict::Expired;
        }
        let st = match self.tags.get_mut(&f.tag) {
            Some(st) => st,
            None => {
                let state = self.first_sight(&f.tag);
                self.tags.entry(f.tag.clone()).or_insert(state)
            }
        };
        let Some(id) = st.id else { return Verdict::Excluded };
        let q = quality_code(f.quality);
        if let Some(i) = st.rule {
            let (rule, gap_ns) = &self.rules[i];
            if let Some(last) = &st.last
                && !changed(rule, *gap_ns, last, &f.value, q, ts)
            {
                return Verdict::Deadband;
            }
            st.last = Some(Last { value: f.value.clone(), q, ts });
        }
        let new = !st.known;
        st.known = true;
        Verdict::Keep { id, new }
    }

    fn first_sight(&mut self, tag: &TagId) -> TagState {
        let name = tag.as_str();
        let recorded = self.include.iter().any(|p| p.matches(name)) && !self.exclude.iter().any(|p| p.matches(name));
        if !recorded {
            return TagState { id: None, known: true, rule: None, last: None };
        }
        let (id, known) = match self.stored.get(name) {
            Some(&id) => (id, true),
            None => {
                let id = self.next_id;
                self.next_id += 1;
                (id, false)
            }
        };
        let rule = self.rules.iter().position(|(r, _)| r.tags.matches(name));
        TagState { id: Some(id), known, rule, last: None }
    }
}

/// Whether `value` (quality `q`, time `ts`) must be stored after `last`.
fn changed(rule: &DeadbandRule, gap_ns: i64, last: &Last, value: &Value, q: i32, ts: i64) -> bool {
    if q != last.q || ts.saturating_sub(last.ts) >= gap_ns {
        return true;
    }
    match (value, &last.value) {
        // A NaN on either side is a change (it compares with nothing).
        (Value::F64(a), Value::F64(b)) => (a - b).abs() > rule.value || (a - b).is_nan(),
        (Value::I64(_) | Value::U64(_), Value::I64(_) | Value::U64(_)) => {
            let (a, b) = (value.as_f64().unwrap_or(0.0), last.value.as_f64().unwrap_or(0.0));
            // Exact for integers that differ by less than 2^53 too.
            int_of(value) != int_of(&last.value) && (a - b).abs() > rule.value
        }
        // A bool, a text or a change of type: stored when it changes at all.
        _ => !value.same(&last.value),
    }
}

#[cfg(test)]
mod tests {
    use gateway_model::{Quality, Reason};

    use super::*;
    use crate::history::config::Span;

    fn frame(tag: &str, v: Value, q: Quality, ts: u64) -> DataFrame {
        DataFrame::new(TagId::new(tag).unwrap(), v, q, ts)
    }

    fn cfg(rules: Vec<DeadbandRule>) -> HistoryConfig {
        HistoryConfig {
            include: vec![TagPattern::new("a.*").unwrap(), TagPattern::new("b.*").unwrap()],
            exclude: vec![TagPattern::new("b.secret").unwrap()],
            deadband: rules,
            ..HistoryConfig::default()
        }
    }

    fn rule(tags: &str, value: f64, max_gap: Option<Span>) -> DeadbandRule {
        DeadbandRule { tags: TagPattern::new(tags).unwrap(), value, max_gap }
    }

    fn kept(s: &mut Selector, f: &DataFrame) -> bool {
        matches!(s.admit(f, 0), Verdict::Keep { .. })
    }

    #[test]
    fn include_and_exclude_pick_the_recorded_tags_and_ids_are_given_once() {
        let mut s = Selector::new(&cfg(vec![]), HashMap::from([("a.old".to_string(), 7)]));
        assert_eq!(s.admit(&frame("a.old", Value::F64(1.0), Quality::GOOD, 1), 0), Verdict::Keep { id: 7, new: false });
        assert_eq!(s.admit(&frame("a.x", Value::F64(1.0), Quality::GOOD, 1), 0), Verdict::Keep { id: 8, new: true });
        assert_eq!(s.admit(&frame("a.x", Value::F64(1.0), Quality::GOOD, 2), 0), Verdict::Keep { id: 8, new: false });
        assert_eq!(s.admit(&frame("b.secret", Value::F64(1.0), Quality::GOOD, 1), 0), Verdict::Excluded);
        assert_eq!(s.admit(&frame("c.y", Value::F64(1.0), Quality::GOOD, 1), 0), Verdict::Excluded);
        assert_eq!(s.admit(&frame("a.x", Value::F64(1.0), Quality::GOOD, 5), 10), Verdict::Expired);
    }

    #[test]
    fn every_value_is_kept_without_a_deadband_even_repeats() {
        let mut s = Selector::new(&cfg(vec![]), HashMap::new());
        for ts in 0..5 {
            assert!(kept(&mut s, &frame("a.x", Value::F64(1.0), Quality::GOOD, ts)));
        }
    }

    #[test]
    fn the_deadband_compares_with_the_last_stored_value_so_a_drift_is_stored() {
        let mut s = Selector::new(&cfg(vec![rule("a.*", 0.5, None)]), HashMap::new());
        let kept: Vec<bool> = [10.0, 10.2, 10.4, 10.6, 10.7, 9.0]
            .iter()
            .enumerate()
            .map(|(i, v)| kept(&mut s, &frame("a.x", Value::F64(*v), Quality::GOOD, i as u64)))
            .collect();
        // 10.6 is 0.6 from the stored 10.0; 10.7 is 0.1 from the stored 10.6.
        assert_eq!(kept, [true, false, false, true, false, true]);
    }

    #[test]
    fn a_quality_change_and_the_max_gap_are_stored_whatever_the_deadband() {
        let mut s = Selector::new(&cfg(vec![rule("a.*", 100.0, Some(Span::from_secs(10)))]), HashMap::new());
        let s_ns = 1_000_000_000;
        assert!(kept(&mut s, &frame("a.x", Value::F64(1.0), Quality::GOOD, 0)));
        assert!(!kept(&mut s, &frame("a.x", Value::F64(2.0), Quality::GOOD, s_ns)));
        assert!(kept(&mut s, &frame("a.x", Value::F64(2.0), Quality::bad(Reason::TIMEOUT), 2 * s_ns)));
        assert!(!kept(&mut s, &frame("a.x", Value::F64(2.0), Quality::bad(Reason::TIMEOUT), 3 * s_ns)));
        assert!(kept(&mut s, &frame("a.x", Value::F64(2.0), Quality::GOOD, 4 * s_ns)));
        assert!(!kept(&mut s, &frame("a.x", Value::F64(2.0), Quality::GOOD, 13 * s_ns)));
        assert!(kept(&mut s, &frame("a.x", Value::F64(2.0), Quality::GOOD, 14 * s_ns)), "10 s since the last stored");
    }

    #[test]
    fn booleans_and_text_are_stored_when_they_change_and_the_first_matching_rule_applies() {
        let rules = vec![rule("a.flag", 5.0, None), rule("a.*", 0.0, None)];
        let mut s = Selector::new(&cfg(rules), HashMap::new());
        let seq = [true, true, false, false, true];
        let kept_flags: Vec<bool> = seq
            .iter()
            .enumerate()
            .map(|(i, b)| kept(&mut s, &frame("a.flag", Value::Bool(*b), Quality::GOOD, i as u64)))
            .collect();
        assert_eq!(kept_flags, [true, false, true, false, true]);
        let texts = ["x", "x", "y"];
        let kept_texts: Vec<bool> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| kept(&mut s, &frame("a.t", Value::from(*t), Quality::GOOD, i as u64)))
            .collect();
        assert_eq!(kept_texts, [true, false, true]);
        // Deadband 0 on integers: any change is stored, a repeat is not.
        let ints = [1i64, 1, 2];
        let kept_ints: Vec<bool> = ints
            .iter()
            .enumerate()
            .map(|(i, v)| kept(&mut s, &frame("a.n", Value::I64(*v), Quality::GOOD, i as u64)))
            .collect();
        assert_eq!(kept_ints, [true, false, true]);
    }
}

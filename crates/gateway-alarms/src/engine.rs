//! The engine: every alarm of every rule, found from a reading's tag with one
//! hash lookup, and the events their transitions make. No I/O and no clock:
//! the [`service`](crate::service) feeds it readings, ticks and operators'
//! actions and publishes what comes out, so everything here is tested
//! directly.
//!
//! A rule on one tag has its alarm from the start. A pattern rule gets an
//! alarm for a tag the first time a reading of that tag arrives; the answer
//! "which alarms watch this tag" is then kept per tag (also when it is
//! "none"), so a reading costs one lookup however many rules there are.

use std::collections::HashMap;
use std::sync::Arc;

use gateway_model::{AlarmInfo, AlarmState, DataFrame, EventFrame, Frame, Quality, TagId, Value};
use serde::Serialize;

use crate::machine::{ActionError, Alarm, Transition};
use crate::rule::{Priority, Rule, Target};

type Hasher = foldhash::fast::RandomState;

/// Tags whose "which alarms watch it" answer is kept; past this, a new tag
/// is matched against pattern rules on every reading (and counted).
pub const MAX_SUBJECTS: usize = 1_000_000;
/// Alarms the engine holds; a pattern rule matching more tags than this
/// leaves the rest unwatched (counted, and logged once).
pub const MAX_ALARMS: usize = 200_000;

/// Why an action on an alarm was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No alarm has that id.
    #[error("no alarm {0:?}")]
    NotFound(String),
    /// The alarm is not in a state that allows it.
    #[error(transparent)]
    Refused(#[from] ActionError),
}

/// An alarm as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlarmView {
    /// `rule:subject`.
    pub id: Arc<str>,
    /// The rule.
    pub rule: Arc<str>,
    /// The tag or figure.
    pub tag: Arc<str>,
    /// The state as shown.
    pub state: AlarmState,
    /// The rule's priority.
    pub priority: Priority,
    /// The rule's kind.
    pub kind: &'static str,
    /// The message as rendered when last raised.
    pub message: Arc<str>,
    /// The value when it was raised.
    pub value: Option<Value>,
    /// The latest value seen (only where the alarm is read through the
    /// service, not in the ready-made list of active alarms, which changes
    /// only when an alarm does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<Value>,
    /// The rule's limit.
    pub limit: Option<Value>,
    /// When it entered its state, RFC 3339.
    pub since: String,
    /// Who acknowledged it last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<Arc<str>>,
    /// Until when it is shelved, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shelved_until: Option<String>,
    /// Why it is shelved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shelve_reason: Option<Arc<str>>,
}

/// All alarms and rules.
#[derive(Debug, Default)]
pub struct Engine {
    rules: Vec<Arc<Rule>>,
    rule_index: HashMap<Arc<str>, usize>,
    /// Indices into `rules` of pattern rules.
    patterns: Vec<usize>,
    /// Per tag named by a rule: indices into `rules` of those rules.
    exact: HashMap<Arc<str>, Vec<usize>>,
    alarms: Vec<Alarm>,
    /// Index into `rules` per alarm.
    alarm_rule: Vec<usize>,
    by_id: HashMap<Arc<str>, u32, Hasher>,
    /// Per tag seen (or watched by name): its alarms. Looked up for every
    /// reading, so with a fast hasher (tags are not chosen by attackers: they
    /// come from the configuration and the devices it names).
    by_subject: HashMap<Arc<str>, Vec<u32>, Hasher>,
    /// Alarms read from the state file before the rules that own them were
    /// set: the next [`Engine::set_rules`] puts them back.
    kept: Vec<Alarm>,
    /// Alarms not created because of [`MAX_ALARMS`].
    pub refused_alarms: u64,
    /// Whether something changed since the last [`Engine::take_dirty`].
    dirty: bool,
    /// Whether any rule may watch a tag (not only the gateway's own
    /// `_gateway.` figures): without one, readings need no lookup at all.
    watches_tags: bool,
}

impl Engine {
    /// An engine with `rules` and no alarm history, at `now`.
    pub fn new(rules: Vec<Rule>, now: u64) -> Self {
        let mut e = Engine::default();
        let mut out = Vec::new();
        e.set_rules(rules, now, &mut out);
        e
    }

    /// The rules.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// How many alarms exist.
    pub fn len(&self) -> usize {
        self.alarms.len()
    }

    /// Whether no alarm exists.
    pub fn is_empty(&self) -> bool {
        self.alarms.is_empty()
    }

    /// Whether state changed since the last call (to persist it).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Replaces the rules. Alarms of rules still present (same name, same
    /// target) keep their state; the others are dropped. A rule that changed
    /// `enabled` disables or enables its alarms (events in `out`).
    pub fn set_rules(&mut self, rules: Vec<Rule>, now: u64, out: &mut Vec<Frame>) {
        let old: Vec<Alarm> = std::mem::take(&mut self.alarms);
        self.rules = rules.into_iter().map(Arc::new).collect();
        let system = |t: &str| t.starts_with(crate::system::SUBJECT_PREFIX);
        self.watches_tags = self.rules.iter().any(|r| match &r.target {
            Target::Exact(t) => !system(t),
            Target::Pattern(p) => !system(p.as_str()),
        });
        self.rule_index = self.rules.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect();
        self.patterns = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.target, Target::Pattern(_)))
            .map(|(i, _)| i)
            .collect();
        self.alarm_rule.clear();
        self.by_id.clear();
        self.by_subject.clear();
        self.exact.clear();
        for (i, r) in self.rules.iter().enumerate() {
            if let Target::Exact(t) = &r.target {
                self.exact.entry(t.clone()).or_default().push(i);
            }
        }
        // Alarms on named tags exist from the start (a stale tag that never
        // reports must still be raised, and the list shows them all).
        let named: Vec<Arc<str>> = self.exact.keys().cloned().collect();
        for t in named {
            self.subject_alarms(&t, now);
        }
        let kept = std::mem::take(&mut self.kept);
        for a in old.into_iter().chain(kept) {
            self.restore(a, now, out);
        }
        self.dirty = true;
    }

    /// Alarms from the state file: those whose rule is known now are put
    /// back at once, the others at the next [`Engine::set_rules`] (the rules
    /// made over the API are loaded after the engine starts).
    pub fn restore_all(&mut self, alarms: Vec<Alarm>, now: u64, out: &mut Vec<Frame>) {
        for a in alarms {
            if self.rule_index.contains_key(&a.rule) {
                self.restore(a, now, out);
            } else {
                self.kept.push(a);
            }
        }
    }

    /// Puts back an alarm kept from before (the previous rule set, or the
    /// state file after a restart), if its rule still covers its subject.
    pub fn restore(&mut self, mut a: Alarm, now: u64, out: &mut Vec<Frame>) {
        let Some(&ri) = self.rule_index.get(&a.rule) else { return };
        let rule = self.rules[ri].clone();
        if !rule.target.matches(&a.subject) {
            return;
        }
        if let Some(t) = a.set_enabled(rule.enabled, now) {
            out.push(Self::event(&a, &rule, t));
        }
        self.dirty = true;
        match self.by_id.get(&a.id) {
            Some(&idx) => self.alarms[idx as usize] = a,
            None => {
                // A pattern rule's alarm: make the tag's entry whole (every
                // alarm it has), then put the kept state in its place.
                self.subject_alarms(&a.subject.clone(), now);
                if let Some(&idx) = self.by_id.get(&a.id) {
                    self.alarms[idx as usize] = a;
                }
            }
        }
    }

    fn insert(&mut self, a: Alarm, rule: usize) -> Option<u32> {
        if self.alarms.len() >= MAX_ALARMS {
            self.refused_alarms += 1;
            return None;
        }
        let idx = self.alarms.len() as u32;
        self.by_id.insert(a.id.clone(), idx);
        self.by_subject.entry(a.subject.clone()).or_default().push(idx);
        self.alarms.push(a);
        self.alarm_rule.push(rule);
        Some(idx)
    }

    /// The alarms watching `subject`, creating pattern rules' alarms the
    /// first time it is seen.
    fn subject_alarms(&mut self, subject: &Arc<str>, now: u64) -> Option<&[u32]> {
        if !self.by_subject.contains_key(subject) {
            if self.by_subject.len() >= MAX_SUBJECTS {
                return None;
            }
            self.by_subject.insert(subject.clone(), Vec::new());
            for ri in self.exact.get(subject).cloned().unwrap_or_default() {
                let a = Alarm::new(&self.rules[ri].clone(), subject.clone(), now);
                self.insert(a, ri);
            }
            for pi in 0..self.patterns.len() {
                let ri = self.patterns[pi];
                let rule = self.rules[ri].clone();
                if rule.target.matches(subject) {
                    let a = Alarm::new(&rule, subject.clone(), now);
                    self.insert(a, ri);
                }
            }
        }
        self.by_subject.get(subject).map(Vec::as_slice)
    }

    /// Whether any rule watches tags; if none does, readings need not be
    /// given to [`Engine::on_data`] at all (the default configuration has
    /// only the gateway's rules on itself).
    pub fn watches_tags(&self) -> bool {
        self.watches_tags
    }

    /// Evaluates a reading; transition events go to `out`.
    pub fn on_data(&mut self, f: &DataFrame, out: &mut Vec<Frame>) {
        let subject: &Arc<str> = f.tag.as_arc();
        self.on_value(subject, &f.value, f.quality, f.source_ts_ns, out);
    }

    /// Evaluates a value of `subject` (a tag or a system figure) taken at `ts`.
    pub fn on_value(&mut self, subject: &Arc<str>, value: &Value, quality: Quality, ts: u64, out: &mut Vec<Frame>) {
        // One hash lookup for a tag seen before (every reading but its first).
        if self.eval_known(subject, value, quality, ts, out) {
            return;
        }
        if self.subject_alarms(subject, ts).is_some() {
            self.eval_known(subject, value, quality, ts, out);
        }
    }

    /// Evaluates the alarms of `subject` if it was seen before; whether it was.
    fn eval_known(&mut self, subject: &str, value: &Value, quality: Quality, ts: u64, out: &mut Vec<Frame>) -> bool {
        let Engine { by_subject, alarms, rules, alarm_rule, dirty, .. } = self;
        let Some(idxs) = by_subject.get(subject) else { return false };
        for &idx in idxs {
            let idx = idx as usize;
            let rule = &rules[alarm_rule[idx]];
            if let Some(t) = alarms[idx].on_reading(rule, value, quality, ts) {
                out.push(Self::event(&alarms[idx], rule, t));
                *dirty = true;
            }
        }
        true
    }

    /// Moves every alarm's time to `now`: delays, staleness, shelving ends.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Frame>) {
        for idx in 0..self.alarms.len() {
            let rule = &self.rules[self.alarm_rule[idx]];
            let a = &mut self.alarms[idx];
            // Most alarms have nothing waiting; skip them cheaply.
            if a.pending_since.is_none() && a.shelved.is_none() && rule.kind != crate::rule::Kind::Stale {
                continue;
            }
            let rule = rule.clone();
            if let Some(t) = a.on_tick(&rule, now) {
                out.push(Self::event(&self.alarms[idx], &rule, t));
                self.dirty = true;
            }
        }
    }

    fn find(&mut self, id: &str) -> Result<(usize, Arc<Rule>), EngineError> {
        let idx = *self.by_id.get(id).ok_or_else(|| EngineError::NotFound(id.to_owned()))? as usize;
        Ok((idx, self.rules[self.alarm_rule[idx]].clone()))
    }

    /// An operator acknowledges alarm `id`.
    pub fn ack(
        &mut self,
        id: &str,
        user: Arc<str>,
        comment: Option<Arc<str>>,
        now: u64,
        out: &mut Vec<Frame>,
    ) -> Result<(), EngineError> {
        let (idx, rule) = self.find(id)?;
        let t = self.alarms[idx].ack(user, comment, now)?;
        out.push(Self::event(&self.alarms[idx], &rule, t));
        self.dirty = true;
        Ok(())
    }

    /// An operator shelves alarm `id` until `until_ns`.
    pub fn shelve(
        &mut self,
        id: &str,
        user: Arc<str>,
        reason: Arc<str>,
        until_ns: u64,
        now: u64,
        out: &mut Vec<Frame>,
    ) -> Result<(), EngineError> {
        let (idx, rule) = self.find(id)?;
        let t = self.alarms[idx].shelve(user, reason, until_ns, now)?;
        out.push(Self::event(&self.alarms[idx], &rule, t));
        self.dirty = true;
        Ok(())
    }

    /// An operator unshelves alarm `id`.
    pub fn unshelve(
        &mut self,
        id: &str,
        user: Arc<str>,
        comment: Option<Arc<str>>,
        now: u64,
        out: &mut Vec<Frame>,
    ) -> Result<(), EngineError> {
        let (idx, rule) = self.find(id)?;
        let t = self.alarms[idx].unshelve(&rule, user, comment, now)?;
        out.push(Self::event(&self.alarms[idx], &rule, t));
        self.dirty = true;
        Ok(())
    }

    /// The event for transition `t` of alarm `a`.
    fn event(a: &Alarm, rule: &Rule, t: Transition) -> Frame {
        let message: Arc<str> = match t.change {
            crate::machine::Change::Raised => a.message.clone(),
            c => format!("{} {}: {}", a.id, c.as_str(), rule.render(&a.subject, t.value.as_ref())).into(),
        };
        Frame::Event(Box::new(EventFrame {
            source: Arc::from("alarm"),
            code: Arc::from(t.change.as_str()),
            severity: rule.priority.severity(),
            message,
            tag: TagId::new(&a.subject).ok(),
            ts_ns: t.ts_ns,
            alarm: Some(Box::new(AlarmInfo {
                id: a.id.clone(),
                rule: a.rule.clone(),
                state: t.state,
                value: t.value,
                limit: rule.limit.clone(),
                user: t.user,
                comment: t.comment,
            })),
        }))
    }

    /// The alarms needing attention (neither normal nor disabled), highest
    /// priority first, then newest first.
    pub fn active(&self) -> Vec<AlarmView> {
        let mut v: Vec<AlarmView> = self
            .alarms
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_active())
            .map(|(i, a)| AlarmView { current: None, ..self.view(i, a) })
            .collect();
        v.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| b.since.cmp(&a.since)));
        v
    }

    /// Every alarm.
    pub fn all(&self) -> Vec<AlarmView> {
        self.alarms.iter().enumerate().map(|(i, a)| self.view(i, a)).collect()
    }

    /// One alarm.
    pub fn get(&self, id: &str) -> Option<AlarmView> {
        let idx = *self.by_id.get(id)? as usize;
        Some(self.view(idx, &self.alarms[idx]))
    }

    fn view(&self, idx: usize, a: &Alarm) -> AlarmView {
        let rule = &self.rules[self.alarm_rule[idx]];
        AlarmView {
            id: a.id.clone(),
            rule: a.rule.clone(),
            tag: a.subject.clone(),
            state: a.state(),
            priority: rule.priority,
            kind: rule.kind.as_str(),
            message: a.message.clone(),
            value: a.raised_value.clone(),
            current: a.value.clone(),
            limit: rule.limit.clone(),
            since: gateway_model::format_rfc3339_ns(a.since_ns),
            acked_by: a.acked_by.clone(),
            shelved_until: a.shelved.as_ref().map(|s| gateway_model::format_rfc3339_ns(s.until_ns)),
            shelve_reason: a.shelved.as_ref().map(|s| s.reason.clone()),
        }
    }

    /// What must survive a restart: every alarm not plainly normal (active,
    /// awaiting acknowledgement, shelved, or with a condition pending).
    pub fn persistent(&self) -> Vec<&Alarm> {
        self.alarms
            .iter()
            .filter(|a| a.base != AlarmState::Normal || a.shelved.is_some() || a.cond || a.pending_since.is_some())
            .chain(&self.kept)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::RuleConfig;

    const S: u64 = 1_000_000_000;

    fn rules(text: &str) -> Vec<Rule> {
        #[derive(serde::Deserialize)]
        struct R {
            rules: Vec<RuleConfig>,
        }
        let r: R = toml::from_str(text).unwrap();
        crate::rule::compile_all(&r.rules, "rules").unwrap()
    }

    fn data(tag: &str, v: f64, ts: u64) -> DataFrame {
        DataFrame::new(TagId::new(tag).unwrap(), Value::F64(v), Quality::GOOD, ts)
    }

    fn info(f: &Frame) -> (&str, &str, AlarmState) {
        let Frame::Event(e) = f else { panic!("{f:?}") };
        let a = e.alarm.as_ref().unwrap();
        (&a.id, &e.code, a.state)
    }

    #[test]
    fn a_pattern_rule_makes_one_alarm_per_matching_tag() {
        let mut e =
            Engine::new(rules("[[rules]]\nname = \"hot\"\ntag = \"line*.temp\"\nkind = \"high\"\nlimit = 50\n"), 0);
        assert_eq!(e.len(), 0);
        let mut out = Vec::new();
        e.on_data(&data("line1.temp", 60.0, S), &mut out);
        e.on_data(&data("line2.temp", 40.0, S), &mut out);
        e.on_data(&data("line2.speed", 99.0, S), &mut out);
        e.on_data(&data("other.temp", 99.0, S), &mut out);
        assert_eq!(e.len(), 2);
        assert_eq!(out.len(), 1);
        assert_eq!(info(&out[0]), ("hot:line1.temp", "raised", AlarmState::ActiveUnacked));
        let Frame::Event(ev) = &out[0] else { unreachable!() };
        assert_eq!(ev.severity, gateway_model::Severity::Warning, "medium priority");
        assert_eq!(ev.tag.as_ref().unwrap().as_str(), "line1.temp");
        assert_eq!(ev.message.as_ref(), "line1.temp is 60, above the limit 50");
        assert_eq!(e.active().len(), 1);
        out.clear();
        e.ack("hot:line1.temp", "op".into(), Some("on it".into()), 2 * S, &mut out).unwrap();
        assert_eq!(info(&out[0]), ("hot:line1.temp", "acked", AlarmState::ActiveAcked));
        assert!(matches!(e.ack("hot:nope", "op".into(), None, 2 * S, &mut out), Err(EngineError::NotFound(_))));
    }

    #[test]
    fn changing_the_rules_keeps_the_state_of_alarms_that_remain() {
        let two = "[[rules]]\nname = \"a\"\ntag = \"d.x\"\nkind = \"high\"\nlimit = 1\n[[rules]]\nname = \"b\"\ntag = \"d.*\"\nkind = \"high\"\nlimit = 1\n";
        let mut e = Engine::new(rules(two), 0);
        let mut out = Vec::new();
        e.on_data(&data("d.x", 5.0, S), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(e.active().len(), 2);
        out.clear();
        e.set_rules(rules("[[rules]]\nname = \"b\"\ntag = \"d.*\"\nkind = \"high\"\nlimit = 1\n"), 2 * S, &mut out);
        assert!(out.is_empty());
        let active = e.active();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].id.as_ref(), "b:d.x");
        assert_eq!(active[0].state, AlarmState::ActiveUnacked);
        e.set_rules(
            rules("[[rules]]\nname = \"b\"\ntag = \"d.*\"\nkind = \"high\"\nlimit = 1\nenabled = false\n"),
            3 * S,
            &mut out,
        );
        assert_eq!(info(&out[0]), ("b:d.x", "disabled", AlarmState::Disabled));
        assert!(e.active().is_empty());
    }

    #[test]
    fn alarms_kept_from_before_a_restart_wait_for_their_rules() {
        let text = "[[rules]]\nname = \"a\"\ntag = \"d.*\"\nkind = \"high\"\nlimit = 1\n";
        let mut before = Engine::new(rules(text), 0);
        let mut out = Vec::new();
        before.on_data(&data("d.x", 5.0, S), &mut out);
        let kept: Vec<Alarm> = before.persistent().into_iter().cloned().collect();
        assert_eq!(kept.len(), 1);
        // Restarted: the rules come later (the API's are loaded from the database).
        let mut after = Engine::new(Vec::new(), 10 * S);
        after.restore_all(kept, 10 * S, &mut out);
        assert_eq!(after.persistent().len(), 1, "kept while no rule owns it, so a save does not lose it");
        after.set_rules(rules(text), 11 * S, &mut out);
        let a = after.active();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].state, AlarmState::ActiveUnacked);
        assert_eq!(a[0].since, gateway_model::format_rfc3339_ns(S), "the same raise");
        out.clear();
        after.on_data(&data("d.x", 6.0, 12 * S), &mut out);
        assert!(out.is_empty(), "still active: not raised again");
    }

    #[test]
    fn only_rules_on_tags_make_readings_worth_looking_up() {
        let system = crate::system::SystemConfig::default().rules(0.85, 0.7);
        let compiled = crate::rule::compile_all(&system, "system").unwrap();
        let mut e = Engine::new(compiled.clone(), 0);
        assert!(!e.watches_tags(), "the gateway's own rules watch no tag");
        let mut with_tag = compiled;
        with_tag.extend(rules("[[rules]]\nname = \"x\"\ntag = \"line*\"\nkind = \"bad_quality\"\n"));
        let mut out = Vec::new();
        e.set_rules(with_tag, S, &mut out);
        assert!(e.watches_tags());
    }

    #[test]
    fn the_tick_runs_delays_for_alarms_that_wait() {
        let mut e =
            Engine::new(rules("[[rules]]\nname = \"s\"\ntag = \"d.x\"\nkind = \"stale\"\ntimeout = \"5s\"\n"), 0);
        let mut out = Vec::new();
        e.on_data(&data("d.x", 1.0, S), &mut out);
        e.tick(5 * S, &mut out);
        assert!(out.is_empty());
        e.tick(7 * S, &mut out);
        assert_eq!(info(&out[0]), ("s:d.x", "raised", AlarmState::ActiveUnacked));
    }
}

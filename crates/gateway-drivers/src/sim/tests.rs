//! The simulator's tests: signal shapes, writes that are refused or taken
//! exactly, configuration errors with their field paths, generated tags.

use super::*;

fn tag(signal: Signal) -> SimTag {
    SimTag::new(TagId::new("d.t").unwrap(), SimTagConfig::new(signal), true)
}

#[test]
fn signals_have_their_shape() {
    let mut rng = Rng(1);
    let ms = 1_000_000u64;
    let mut sine = tag(Signal::Sine);
    assert_eq!(sine.sample(0, &mut rng), Value::F64(0.0));
    assert!(matches!(sine.sample(2_500 * ms, &mut rng), Value::F64(v) if (v - 1.0).abs() < 1e-9));
    let mut ramp = tag(Signal::Ramp);
    assert!(matches!(ramp.sample(5_000 * ms, &mut rng), Value::F64(v) if (v - 0.5).abs() < 1e-9));
    let mut sq = tag(Signal::Square);
    assert_eq!(sq.sample(1_000 * ms, &mut rng), Value::Bool(true));
    assert_eq!(sq.sample(6_000 * ms, &mut rng), Value::Bool(false));
    let mut c = tag(Signal::Counter);
    let seq: Vec<_> = (0..5).map(|_| c.sample(0, &mut rng)).collect();
    assert_eq!(seq, (0..5).map(Value::I64).collect::<Vec<_>>());
    let mut w = tag(Signal::RandomWalk);
    for _ in 0..10_000 {
        let Value::F64(v) = w.sample(0, &mut rng) else { panic!() };
        assert!((-1.0..=1.0).contains(&v));
    }
}

#[test]
fn writes_set_the_level_or_the_counter() {
    let mut rng = Rng(1);
    let mut c = tag(Signal::Counter);
    assert_eq!(c.write(&Value::I64(100)), Ok(Value::I64(100)));
    assert_eq!(c.sample(0, &mut rng), Value::I64(100));
    assert_eq!(c.sample(0, &mut rng), Value::I64(101));
    let mut k = tag(Signal::Constant);
    k.write(&Value::F64(42.5)).unwrap();
    assert_eq!(k.sample(0, &mut rng), Value::F64(42.5));
    assert!(k.write(&Value::from("high")).is_err());
    let mut b = tag(Signal::Square);
    assert_eq!(b.write(&Value::Bool(true)), Ok(Value::Bool(true)));
    assert_eq!(b.sample(6_000_000_000, &mut rng), Value::Bool(true), "a written boolean holds");
}

fn sim_device(tag: serde_json::Value) -> Result<DeviceConfig, FieldError> {
    DeviceConfig::from_json(serde_json::json!({"name": "d", "driver": "sim", "tags": [tag]}))
}

#[test]
fn inputs_that_would_panic_the_driver_are_refused_with_their_field_path() {
    use serde_json::json;
    let cases = [
        (json!({"name": "t", "signal": "random_walk", "amplitude": -1.0}), "tags[0].amplitude"),
        (json!({"name": "t", "signal": "sine", "amplitude": -1.0}), "tags[0].amplitude"),
        (json!({"name": "t", "signal": "random_walk", "min": 5.0}), "tags[0].min"),
        (json!({"name": "t", "signal": "random_walk", "max": -5.0}), "tags[0].max"),
        (json!({"name": "t", "signal": "random_walk", "min": 3.0, "max": 2.0}), "tags[0].min"),
        (json!({"name": "t", "signal": "random_walk", "step": -1.0}), "tags[0].step"),
        (json!({"name": "t", "signal": "ramp", "offset": 1e308, "amplitude": 1e308}), "tags[0].amplitude"),
        (json!({"name": "t", "signal": "sine", "period_ms": 0}), "tags[0].period_ms"),
    ];
    for (tag, path) in cases {
        let e = sim_device(tag.clone()).unwrap_err();
        assert_eq!(e.path, path, "{tag}: {e}");
    }
    // NaN and infinities cannot come from JSON, but can from TOML.
    let nan = |f: fn(&mut SimTagConfig)| {
        let mut t = SimTagConfig::new(Signal::RandomWalk);
        f(&mut t);
        validate_tag(&t).unwrap_err().path
    };
    assert_eq!(nan(|t| t.step = Some(f64::NAN)), "step");
    assert_eq!(nan(|t| t.min = Some(f64::NAN)), "min");
    assert_eq!(nan(|t| t.max = Some(f64::INFINITY)), "max");
    assert_eq!(nan(|t| t.amplitude = f64::NAN), "amplitude");
    assert_eq!(nan(|t| t.duty = f64::NAN), "duty");

    let generate = |g: serde_json::Value, tags: serde_json::Value| {
        DeviceConfig::from_json(json!({"name": "d", "driver": "sim", "generate": g, "tags": tags}))
    };
    let e = generate(json!({"count": 10, "signal": "sine", "prefix": "t"}), json!([{"name": "t3", "signal": "sine"}]))
        .unwrap_err();
    assert_eq!(e.path, "generate.prefix", "{e}");
    assert!(
        generate(json!({"count": 3, "signal": "sine", "prefix": "t"}), json!([{"name": "t3", "signal": "sine"}]))
            .is_ok()
    );
    assert!(
        generate(json!({"count": 10, "signal": "sine", "prefix": "t"}), json!([{"name": "t03", "signal": "sine"}]))
            .is_ok()
    );
    // "d.{prefix}0" fits the 256-byte tag id limit, "d.{prefix}99999" does not.
    let long = "p".repeat(253);
    let e = generate(json!({"count": 100000, "signal": "sine", "prefix": long}), json!([])).unwrap_err();
    assert_eq!(e.path, "generate.prefix", "{e}");
}

#[test]
fn every_accepted_random_walk_samples_without_panicking() {
    use serde_json::json;
    let accepted = [
        json!({"name": "t", "signal": "random_walk", "amplitude": 0.0}),
        json!({"name": "t", "signal": "random_walk", "min": 1.0}),
        json!({"name": "t", "signal": "random_walk", "max": -1.0}),
        json!({"name": "t", "signal": "random_walk", "min": 2.0, "max": 2.0, "step": 0.0}),
        json!({"name": "t", "signal": "random_walk", "offset": -1e300, "amplitude": 1e300, "data_type": "u64"}),
    ];
    let mut rng = Rng(7);
    for t in accepted {
        let dev = sim_device(t.clone()).unwrap_or_else(|e| panic!("{t}: {e}"));
        for mut tag in build_tags(&dev, &SimConfig::default()) {
            for _ in 0..100 {
                tag.sample(0, &mut rng);
            }
        }
    }
}

#[test]
fn generated_tags_share_one_configuration_and_keep_their_own_level() {
    let dev = DeviceConfig::from_json(serde_json::json!({
        "name": "d", "driver": "sim", "generate": {"count": 3, "signal": "sine"},
        "tags": [{"name": "w", "signal": "constant", "offset": 7.0}]
    }))
    .unwrap();
    let p: SimConfig = serde_json::from_value(serde_json::json!({"generate": {"count": 3, "signal": "sine"}})).unwrap();
    let tags = build_tags(&dev, &p);
    assert_eq!(tags.len(), 4);
    let generated = &tags[1..];
    assert!(generated.iter().all(|t| Arc::ptr_eq(&t.p, &generated[0].p)), "one configuration per device");
    assert!(!Arc::ptr_eq(&tags[0].p, &generated[0].p));
    assert_eq!(generated.iter().map(|t| t.offset).collect::<Vec<_>>(), [0.0, 1.0, 2.0]);
    assert_eq!(generated.iter().map(|t| t.period_ms).collect::<Vec<_>>(), [5_000, 5_137, 5_274]);
    assert_eq!((tags[0].offset, tags[0].period_ms), (7.0, 10_000));
    // The tag table is most of the simulator's memory at 10,000 tags.
    assert!(std::mem::size_of::<SimTag>() <= 64, "{} bytes a tag", std::mem::size_of::<SimTag>());
}

fn typed(signal: Signal, kind: SimType) -> SimTag {
    let mut p = SimTagConfig::new(signal);
    p.data_type = Some(kind);
    SimTag::new(TagId::new("d.t").unwrap(), p, true)
}

#[test]
fn writes_a_tag_cannot_hold_exactly_are_refused_not_rounded() {
    let refused = [
        (typed(Signal::Constant, SimType::I64), Value::F64(1e30)),
        (typed(Signal::Constant, SimType::I64), Value::F64(2.5)),
        (typed(Signal::Constant, SimType::I64), Value::U64(u64::MAX)),
        (typed(Signal::Constant, SimType::I64), Value::I64((1 << 53) + 1)),
        (typed(Signal::Constant, SimType::U64), Value::I64(-5)),
        (typed(Signal::Constant, SimType::U64), Value::F64(-5.0)),
        (typed(Signal::Constant, SimType::U64), Value::F64(0.5)),
        (typed(Signal::Counter, SimType::I64), Value::F64(1e30)),
        (typed(Signal::Counter, SimType::I64), Value::F64(2.5)),
        (typed(Signal::Counter, SimType::U64), Value::U64(u64::MAX)),
        (typed(Signal::Counter, SimType::F64), Value::F64(2.5)),
        (typed(Signal::Constant, SimType::F64), Value::F64(f64::INFINITY)),
        (typed(Signal::Constant, SimType::F64), Value::Bool(true)),
        (typed(Signal::Constant, SimType::I64), Value::from("7")),
    ];
    for (mut tag, v) in refused {
        let before = (tag.offset, tag.counter);
        let r = tag.write(&v);
        assert!(r.is_err(), "{:?} tag, {:?} signal accepted {v:?} as {r:?}", tag.kind, tag.p.signal);
        assert_eq!((tag.offset, tag.counter), before, "a refused write changed the tag");
    }
}

#[test]
fn writes_a_tag_can_hold_are_taken_exactly() {
    let mut rng = Rng(1);
    let mut i = typed(Signal::Constant, SimType::I64);
    assert_eq!(i.write(&Value::I64(-42)), Ok(Value::I64(-42)));
    assert_eq!(i.write(&Value::F64(42.0)), Ok(Value::I64(42)));
    assert_eq!(i.sample(0, &mut rng), Value::I64(42));
    let mut u = typed(Signal::Constant, SimType::U64);
    assert_eq!(u.write(&Value::I64(5)), Ok(Value::U64(5)));
    assert_eq!(u.sample(0, &mut rng), Value::U64(5));
    let mut c = typed(Signal::Counter, SimType::I64);
    assert_eq!(c.write(&Value::I64(i64::MAX)), Ok(Value::I64(i64::MAX)));
    assert_eq!(c.sample(0, &mut rng), Value::I64(i64::MAX));
    let mut cu = typed(Signal::Counter, SimType::U64);
    assert_eq!(cu.write(&Value::U64(1 << 62)), Ok(Value::U64(1 << 62)));
    let mut f = typed(Signal::Constant, SimType::F64);
    assert_eq!(f.write(&Value::F64(2.5)), Ok(Value::F64(2.5)));
    assert_eq!(f.write(&Value::I64(1600)), Ok(Value::F64(1600.0)));
    let mut w = typed(Signal::RandomWalk, SimType::I64);
    assert_eq!(w.write(&Value::U64(3)), Ok(Value::I64(3)));
}

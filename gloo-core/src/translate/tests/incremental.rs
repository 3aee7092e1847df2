//! The incremental translator against fresh translations: after every change of a randomized
//! sequence, what it keeps (snapshot, reports, origins) equals a translation from scratch, and
//! it names exactly the objects whose report changed.
use serde_json::{json, Value};

use super::*;

fn object(kind: Kind, name: &str, uid: u64, generation: u64, spec: Value) -> Resource {
    fn de<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }
    let spec = match kind {
        Kind::Upstream => Spec::Upstream(de(spec)),
        Kind::VirtualService => Spec::VirtualService(de(spec)),
        Kind::Gateway => Spec::Gateway(de(spec)),
        Kind::Secret => Spec::Secret(de(spec)),
        Kind::Endpoints => Spec::Endpoints(de(spec)),
        Kind::Function => Spec::Function(de(spec)),
        Kind::UpstreamGroup => Spec::UpstreamGroup(de(spec)),
        Kind::Unspecified => unreachable!(),
    };
    Resource {
        metadata: Some(Metadata {
            name: name.into(),
            namespace: "default".into(),
            uid,
            generation,
            ..Default::default()
        }),
        status: None,
        spec: Some(spec),
    }
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len())]
    }
}

const UPSTREAMS: [&str; 5] = ["u0", "u1", "u2", "aws", "gcp"];
/// Names that are sometimes there and sometimes not.
const TARGETS: [&str; 6] = ["u0", "u1", "u2", "aws", "gcp", "missing"];

/// A random version of the object in slot (kind, name).
fn variant(rng: &mut Rng, kind: Kind, name: &str) -> Value {
    match kind {
        Kind::Secret => match rng.below(3) {
            0 => {
                json!({"tls": {"certChain": "c", "privateKey": "k", "rootCa": format!("ca{}", rng.below(3))}})
            }
            1 => {
                json!({"aws": {"accessKeyId": format!("a{}", rng.below(3)), "secretAccessKey": "s"}})
            }
            _ => json!({"opaque": {"data": {"token": format!("t{}", rng.below(3))}}}),
        },
        Kind::Upstream => {
            let mut spec = match name {
                "aws" => json!({"aws": {"region": "us-east-1", "accountId": "123456789012",
                                        "secretRef": {"name": rng.pick(&["s0", "s1"])}}}),
                "gcp" => {
                    let mut g = json!({"project": "p"});
                    if rng.below(2) == 0 {
                        g["functionAuth"] =
                            json!({"tokenSecretRef": {"name": rng.pick(&["s0", "s1"])}});
                    }
                    json!({ "gcp": g })
                }
                _ if rng.below(2) == 0 => {
                    json!({"kube": {"serviceName": name, "servicePort": 8080}})
                }
                _ => {
                    json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": 1000 + rng.below(3)}]}})
                }
            };
            match rng.below(4) {
                0 => spec["tls"] = json!({"secretRef": {"name": rng.pick(&["s0", "s1"])}}),
                1 => spec["useHttp2"] = json!(true),
                _ => {}
            }
            spec
        }
        Kind::Endpoints => json!({"upstream": rng.pick(&TARGETS),
                                  "endpoints": [{"address": format!("10.0.0.{}", rng.below(3)), "port": 80}]}),
        Kind::Function => match rng.below(3) {
            0 => json!({"upstream": rng.pick(&["aws", "gcp", "u0"]),
                        "lambda": {"functionName": name, "arn": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}")}}),
            1 => json!({"upstream": rng.pick(&["gcp", "aws"]),
                        "gcf": {"name": name, "url": format!("https://{}.example/{name}", rng.pick(&["a", "b"]))}}),
            _ => json!({"upstream": rng.pick(&["u0", "u1"]),
                        "rest": {"method": "GET", "pathTemplate": format!("/{name}")}}),
        },
        Kind::UpstreamGroup => json!({"destinations": [
            {"destination": {"upstream": {"name": rng.pick(&TARGETS)}}, "weight": 1 + rng.below(3)},
            {"destination": {"upstream": {"name": rng.pick(&TARGETS)}}, "weight": rng.below(2)}]}),
        Kind::VirtualService => {
            let routes: Vec<Value> = (0..1 + rng.below(3))
                .map(|i| {
                    let action = match rng.below(5) {
                        0 => json!({"routeAction": {"upstreamGroup": {"name": rng.pick(&["g0", "g1"])}}}),
                        1 => json!({"routeAction": {"multi": {"destinations": [
                            {"destination": {"upstream": {"name": rng.pick(&TARGETS)}}, "weight": 1}]}}}),
                        2 => json!({"routeAction": {"single": {"upstream": {"name": rng.pick(&["aws", "gcp", "u0"])},
                                                               "function": rng.pick(&["f0", "f1", "f2"])}}}),
                        3 => json!({"directResponse": {"status": 200}}),
                        _ => json!({"routeAction": {"single": {"upstream": {"name": rng.pick(&TARGETS)}}}}),
                    };
                    let mut r = json!({"name": format!("r{i}"), "matchers": [{"prefix": format!("/{name}/{i}")}]});
                    r.as_object_mut().unwrap().extend(action.as_object().unwrap().clone());
                    if rng.below(4) == 0 {
                        r["options"] = json!({"shadowing": {"upstream": {"name": rng.pick(&TARGETS)}, "percentage": 10}});
                    }
                    r
                })
                .collect();
            json!({"domains": [rng.pick(&["a.example", "b.example", "c.example", "d.example", "*.example"])], "routes": routes})
        }
        Kind::Unspecified => unreachable!(),
        Kind::Gateway => {
            let mut g = json!({"bindAddress": "127.0.0.1", "bindPort": 8080 + rng.below(2)});
            match rng.below(4) {
                0 => {
                    g["virtualServices"] = json!([{"name": rng.pick(&["v0", "v1", "v2", "nope"])}])
                }
                1 => g["tcpUpstream"] = json!({"name": rng.pick(&TARGETS)}),
                2 => g["scopedRoutes"] = json!(true),
                _ => {}
            }
            g
        }
    }
}

fn slots() -> Vec<(Kind, &'static str)> {
    let mut s = vec![(Kind::Secret, "s0"), (Kind::Secret, "s1")];
    s.extend(UPSTREAMS.iter().map(|u| (Kind::Upstream, *u)));
    s.extend(["e0", "e1", "e2"].map(|e| (Kind::Endpoints, e)));
    s.extend(["f0", "f1", "f2"].map(|f| (Kind::Function, f)));
    s.extend(["g0", "g1"].map(|g| (Kind::UpstreamGroup, g)));
    s.extend(["v0", "v1", "v2", "v3"].map(|v| (Kind::VirtualService, v)));
    s.extend(["gw0", "gw1"].map(|g| (Kind::Gateway, g)));
    s
}

fn assert_same(got: &Translation, want: &Translation, step: usize) {
    assert_eq!(got.reports, want.reports, "reports after step {step}");
    assert_eq!(got.origins, want.origins, "origins after step {step}");
    for (url, resources) in &want.snapshot.resources {
        let mine = got.snapshot.of_type(url).cloned().unwrap_or_default();
        assert_eq!(
            mine.keys().collect::<Vec<_>>(),
            resources.keys().collect::<Vec<_>>(),
            "{url} names after step {step}"
        );
        assert_eq!(&mine, resources, "{url} after step {step}");
    }
    assert_eq!(got.snapshot, want.snapshot, "snapshot after step {step}");
}

#[test]
fn every_pass_of_a_random_sequence_of_changes_equals_a_fresh_translation() {
    // Passes that served scoped routes: the sequence must reach them too.
    let mut scoped_passes = 0;
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let slots = slots();
        let mut generations = vec![0u64; slots.len()];
        let mut cached = Translator::new();
        // Start with about half the objects there.
        let mut first = Vec::new();
        for (i, (kind, name)) in slots.iter().enumerate() {
            if rng.below(2) == 0 {
                generations[i] = 1;
                let r = object(*kind, name, i as u64 + 1, 1, variant(&mut rng, *kind, name));
                first.push((Key::of(&r).unwrap(), Some(Arc::new(r))));
            }
        }
        let mut before = cached.apply(first).clone();
        assert_same(&before, &translate(cached.input()), 0);
        for step in 1..=150 {
            // One to three changes at once, as a burst of events gives.
            let mut changes = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(slots.len());
                let (kind, name) = slots[i];
                let key = Key::new(kind, "default", name);
                let change = if rng.below(4) == 0 {
                    None
                } else {
                    generations[i] += 1;
                    // A re-created object gets a new uid, as the store gives it.
                    let uid = (step * 100 + i) as u64;
                    let r = object(
                        kind,
                        name,
                        uid,
                        generations[i],
                        variant(&mut rng, kind, name),
                    );
                    Some(Arc::new(r))
                };
                changes.push((key, change));
            }
            let got = cached.apply(changes).clone();
            let want = translate(cached.input());
            assert_same(&got, &want, step);
            scoped_passes += want
                .snapshot
                .of_type(crate::xds::SCOPED_ROUTE)
                .is_some_and(|s| !s.is_empty()) as usize;
            let differ: BTreeSet<Key> = want
                .reports
                .keys()
                .chain(before.reports.keys())
                .filter(|k| want.reports.get(*k) != before.reports.get(*k))
                .cloned()
                .collect();
            assert_eq!(
                got.changed_reports, differ,
                "changed reports at step {step}"
            );
            before = got;
        }
    }
    assert!(
        scoped_passes > 100,
        "only {scoped_passes} passes served scoped routes"
    );
}

#[test]
fn route_edits_under_one_scoped_gateway_equal_a_fresh_translation() {
    // VirtualServices on one scoped Gateway: mostly route edits that keep the domains (the
    // gateways step's short path), sometimes a domain edit, a conflicting or unusable domain, a
    // VirtualService deleted or an upstream gone (the whole step).
    const DOMAINS: [&str; 6] = [
        "a.example",
        "b.example",
        "c.example",
        "d.example",
        "a.example",
        "*.example",
    ];
    let mut fast = 0;
    for seed in 1..=6u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut domains: Vec<&str> = (0..6).map(|i| DOMAINS[i]).collect();
        let vs = |rng: &mut Rng, i: usize, domain: &str| {
            let routes: Vec<Value> = (0..1 + rng.below(3))
                .map(|r| {
                    let to = json!({"single": {"upstream": {"name": if rng.below(10) == 0 { "missing" } else { rng.pick(&["u0", "u1"]) }}}});
                    let mut route = json!({"matchers": [{"prefix": format!("/{i}/{r}/{}", rng.below(5))}], "routeAction": to});
                    if i == 0 || rng.below(20) == 0 {
                        route["options"] = json!({"cors": {"allowOrigin": [format!("https://{}.example", rng.below(2))]}});
                    }
                    route
                })
                .collect();
            json!({"domains": [domain], "routes": routes})
        };
        let mut uid = 1;
        let mut put = |kind: Kind, name: &str, spec: Value| {
            uid += 1;
            let r = object(kind, name, uid, 1, spec);
            (Key::of(&r).unwrap(), Some(Arc::new(r)))
        };
        let mut first = vec![
            put(
                Kind::Gateway,
                "gw",
                json!({"bindPort": 8080, "scopedRoutes": true}),
            ),
            put(
                Kind::Upstream,
                "u0",
                json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": 1}]}}),
            ),
            put(
                Kind::Upstream,
                "u1",
                json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": 2}]}}),
            ),
        ];
        for (i, d) in domains.iter().enumerate() {
            let spec = vs(&mut rng, i, d);
            first.push(put(Kind::VirtualService, &format!("v{i}"), spec));
        }
        let mut cached = Translator::new();
        cached.apply(first);
        for step in 1..=120 {
            let i = rng.below(6);
            let name = format!("v{i}");
            let change = match rng.below(20) {
                0 => (Key::new(Kind::VirtualService, "default", &name), None),
                1 => {
                    domains[i] = DOMAINS[rng.below(DOMAINS.len())];
                    let spec = vs(&mut rng, i, domains[i]);
                    put(Kind::VirtualService, &name, spec)
                }
                2 => (Key::new(Kind::Upstream, "default", "u1"), None),
                3 => put(
                    Kind::Upstream,
                    "u1",
                    json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": 3}]}}),
                ),
                _ => {
                    let spec = vs(&mut rng, i, domains[i]);
                    put(Kind::VirtualService, &name, spec)
                }
            };
            let got = cached.apply([change]).clone();
            assert_same(&got, &translate(cached.input()), step);
        }
        fast += cached.gateway_fast_passes;
    }
    assert!(fast > 100, "only {fast} passes took the route-only path");
}

#[test]
fn a_status_only_change_translates_nothing_and_shares_the_new_copy() {
    let u = object(
        Kind::Upstream,
        "u0",
        1,
        1,
        json!({"static": {"hosts": [{"addr": "127.0.0.1", "port": 80}]}}),
    );
    let key = Key::of(&u).unwrap();
    let mut t = Translator::new();
    let one = t.apply([(key.clone(), Some(Arc::new(u.clone())))]).clone();
    let mut with_status = u;
    with_status.status = Some(proto::v1::Status {
        state: State::Accepted as i32,
        ..Default::default()
    });
    with_status.metadata.as_mut().unwrap().resource_version = 7;
    let new = Arc::new(with_status);
    let two = t.apply([(key.clone(), Some(new.clone()))]);
    assert!(two.changed_reports.is_empty());
    assert_eq!(one.snapshot, two.snapshot);
    assert!(
        Arc::ptr_eq(&t.input().objects[&key], &new),
        "the translator kept its old copy"
    );
}

#[test]
fn into_an_empty_translator_the_last_change_of_a_key_wins_in_any_order() {
    let up = |port: u64, generation: u64| {
        let spec = json!({"static": {"hosts": [{"addr": "10.0.0.1", "port": port}]}});
        let r = object(Kind::Upstream, "u0", 1, generation, spec);
        (Key::of(&r).unwrap(), Some(Arc::new(r)))
    };
    let vs = object(
        Kind::VirtualService,
        "vs",
        2,
        1,
        json!({"routes": [{"routeAction": {"single": {"upstream": {"name": "u0"}}}}]}),
    );
    let vs = (Key::of(&vs).unwrap(), Some(Arc::new(vs)));
    // Not in key order, with the Upstream twice and the VirtualService removed then added.
    let changes = vec![
        vs.clone(),
        up(1000, 1),
        (vs.0.clone(), None),
        up(2000, 2),
        vs.clone(),
    ];
    let mut cached = Translator::new();
    let got = cached.apply(changes).clone();
    let want = translate(&Input {
        objects: [up(2000, 2), vs]
            .into_iter()
            .map(|(k, r)| (k, r.unwrap()))
            .collect(),
    });
    assert_same(&got, &want, 0);
    let kept = cached
        .input()
        .objects
        .values()
        .map(|r| r.metadata.as_ref().unwrap().generation);
    assert_eq!(kept.collect::<Vec<_>>(), [2, 1]);
}

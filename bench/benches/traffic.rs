//! What the traffic plugins cost the translator: a full pass and incremental passes over N
//! upstreams and N routes, plain versus with every traffic option on every object (health
//! checks, circuit breakers, outlier detection, ring hash; CORS, faults, rate limits,
//! shadowing, retries on every route; a TLS Gateway with 10 certificates over SDS), and a
//! certificate rotation (one Secret changed). Single-threaded, in process.
//!
//! `cargo bench -p bench --bench traffic` prints a markdown table.
use std::{sync::Arc, time::Instant};

use gloo_core::{
    resource::Key,
    translate::{Input, Translator},
};
use proto::v1::{resource::Spec, status::State, Kind, Metadata, Resource};
use serde_json::{json, Value};

fn object(kind: Kind, name: &str, uid: u64, generation: u64, spec: Value) -> Resource {
    let spec = match kind {
        Kind::Upstream => Spec::Upstream(serde_json::from_value(spec).unwrap()),
        Kind::VirtualService => Spec::VirtualService(serde_json::from_value(spec).unwrap()),
        Kind::Gateway => Spec::Gateway(serde_json::from_value(spec).unwrap()),
        Kind::Secret => Spec::Secret(serde_json::from_value(spec).unwrap()),
        _ => unreachable!(),
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

fn upstream(i: usize, options: bool) -> Resource {
    let mut spec = json!({"static": {"hosts": [{"addr": "10.0.0.1", "port": 1000 + i % 50000}]}});
    if options {
        let extra = json!({
            "healthChecks": [{"interval": "5s", "timeout": "1s", "http": {"path": "/healthz"}}],
            "circuitBreakers": {"maxConnections": 100, "retryBudgetPercent": 20},
            "outlierDetection": {"consecutive5xx": 5, "interval": "10s"},
            "loadBalancer": {"policy": "RING_HASH", "hashHeader": "x-user"}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
    }
    object(Kind::Upstream, &format!("us-{i}"), i as u64 + 1, 1, spec)
}

fn virtual_service(v: usize, n: usize, version: usize, options: bool) -> Resource {
    let routes: Vec<Value> = (0..10)
        .map(|r| {
            let u = (v * 10 + r) % n;
            let mut o = json!({"timeout": "5s"});
            if options {
                o = json!({"timeout": "5s",
                    "retries": {"retryOn": "5xx", "numRetries": 2, "perTryTimeout": "1s"},
                    "cors": {"allowOrigin": ["https://app.example"], "allowMethods": ["GET"]},
                    "faults": {"abort": {"httpStatus": 503, "percentage": 0.1}},
                    "rateLimit": {"maxTokens": 100, "fillInterval": "1s"},
                    "shadowing": {"upstream": {"name": format!("us-{}", (u + 1) % n)}, "percentage": 5}});
            }
            json!({"name": format!("r{r}"),
                   "matchers": [{"prefix": format!("/svc-{v}/v{version}/r{r}")}],
                   "routeAction": {"single": {"upstream": {"name": format!("us-{u}")}}},
                   "options": o})
        })
        .collect();
    let mut spec = json!({"domains": [format!("svc-{v}.example")], "routes": routes});
    if options {
        spec["options"] = json!({"rateLimit": {"maxTokens": 1000}, "cors": {"allowOrigin": ["*"]}});
    }
    object(
        Kind::VirtualService,
        &format!("vs-{v}"),
        1_000_000 + v as u64,
        1 + version as u64,
        spec,
    )
}

fn secret(c: usize, version: usize) -> Resource {
    let spec = json!({"tls": {"certChain": format!("-----CERT {c} v{version}-----"), "privateKey": "-----KEY-----"}});
    object(
        Kind::Secret,
        &format!("cert-{c}"),
        5_000_000 + c as u64,
        1 + version as u64,
        spec,
    )
}

fn input(n: usize, options: bool) -> Input {
    let mut objects: Vec<Resource> = (0..n).map(|i| upstream(i, options)).collect();
    objects.extend((0..n / 10).map(|v| virtual_service(v, n, 0, options)));
    let mut gw = json!({"bindAddress": "127.0.0.1", "bindPort": 8080});
    if options {
        objects.extend((0..10).map(|c| secret(c, 0)));
        let certs: Vec<Value> = (0..10)
            .map(|c| json!({"serverNames": [format!("host-{c}.example")], "secretRef": {"name": format!("cert-{c}")}}))
            .collect();
        gw["tls"] = json!({"certificates": certs});
        gw["accessLog"] = json!({"format": "%RESPONSE_CODE%"});
    }
    objects.push(object(Kind::Gateway, "gw", 9_000_000, 1, gw));
    Input {
        objects: objects
            .into_iter()
            .map(|r| (Key::of(&r).unwrap(), Arc::new(r)))
            .collect(),
    }
}

fn put(input: &mut Input, r: Resource) {
    input.objects.insert(Key::of(&r).unwrap(), Arc::new(r));
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn run(n: usize, options: bool) -> String {
    let mut inp = input(n, options);
    let mut full = Vec::new();
    let mut resources = 0;
    let mut bytes = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        let t = Translator::new().translate(&inp);
        full.push(ms(t0.elapsed()));
        resources = t
            .snapshot
            .resources
            .values()
            .map(|m| m.len())
            .sum::<usize>();
        bytes = t
            .snapshot
            .resources
            .values()
            .flat_map(|m| m.values())
            .map(|r| r.value.len())
            .sum::<usize>();
        let bad: Vec<_> = t
            .reports
            .iter()
            .filter(|(_, r)| r.state != State::Accepted)
            .take(3)
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
    }
    let mut tr = Translator::new();
    tr.translate(&inp);
    let mut vs_times = Vec::new();
    for i in 1..=50 {
        put(&mut inp, virtual_service((i * 7) % (n / 10), n, i, options));
        let t0 = Instant::now();
        std::hint::black_box(tr.translate(&inp));
        vs_times.push(ms(t0.elapsed()));
    }
    let rotation = if options {
        let mut times = Vec::new();
        for i in 1..=50 {
            put(&mut inp, secret(i % 10, i));
            let t0 = Instant::now();
            std::hint::black_box(tr.translate(&inp));
            times.push(ms(t0.elapsed()));
        }
        format!("{:.2} ms", percentile(&mut times, 0.5))
    } else {
        "–".into()
    };
    format!(
        "| {n} / {n} | {} | {resources} | {:.1} MB | {:.1} ms | {:.2} / {:.2} ms | {rotation} |",
        if options { "every option" } else { "plain" },
        bytes as f64 / 1e6,
        percentile(&mut full, 0.5),
        percentile(&mut vs_times.clone(), 0.5),
        percentile(&mut vs_times, 0.99),
    )
}

fn main() {
    let sizes: Vec<usize> = std::env::var("TRAFFIC_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    println!("| upstreams / routes | options | Envoy resources | encoded | full translation (median) | one VirtualService changed: p50 / p99 | one certificate rotated: p50 |");
    println!("|---|---|---|---|---|---|---|");
    for n in sizes {
        for options in [false, true] {
            println!("{}", run(n, options));
        }
    }
}

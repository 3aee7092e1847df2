//! Parse time and peak memory for large specs (about 5 MB), in each flavour: a generated
//! OpenAPI 3.0 document, the same as 3.1 and as Swagger 2.0, and the 3.0 one as YAML (all
//! read by the value walker). Times are the median of several runs of parse + Function building;
//! memory is the process's peak RSS growth during one parse (Linux `VmHWM`, reset through
//! `/proc/self/clear_refs`). Prints a markdown table.
//!
//! `cargo bench -p discovery-openapi --bench parse` (OPENAPI_BENCH_KEEP=1 keeps the generated
//! specs in the temp dir, to profile one case: OPENAPI_BENCH_CASE=<i> OPENAPI_BENCH_FILE=<file>).
use std::time::Instant;

use discovery_openapi::{functions::functions, spec};
use serde_json::{json, Map, Value};

/// A spec of `n` paths with two operations each, parameters, bodies and schemas with `$ref`s.
fn generate(n: usize, flavour: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for i in 0..n {
        let schema = json!({"type": "object", "description": "x".repeat(40), "properties": {
            "id": {"type": "integer", "format": "int64"},
            "name": {"type": "string", "maxLength": 200},
            "tags": {"type": "array", "items": {"type": "string"}},
            "owner": {"$ref": format!("#/components/schemas/Item{}", (i + 1) % n)}
        }});
        schemas.insert(format!("Item{i}"), schema);
        let get = json!({
            "operationId": format!("getItem{i}"),
            "summary": format!("Returns item {i} of the collection, with its owner and tags"),
            "parameters": [
                {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}},
                {"name": "fields", "in": "query", "schema": {"type": "string"}},
                {"name": "X-Request-Id", "in": "header", "schema": {"type": "string"}}
            ],
            "responses": {"200": {"description": "the item", "content": {"application/json":
                {"schema": {"$ref": format!("#/components/schemas/Item{i}")}}}}}
        });
        let put = json!({
            "operationId": format!("putItem{i}"),
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
            "requestBody": {"content": {"application/json":
                {"schema": {"$ref": format!("#/components/schemas/Item{i}")}}}},
            "responses": {"204": {"description": "stored"}}
        });
        paths.insert(
            format!("/collection{}/items/{{id}}", i),
            json!({"get": get, "put": put}),
        );
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {"title": "big", "version": "1"},
        "servers": [{"url": "/api"}],
        "paths": paths,
        "components": {"schemas": schemas}
    });
    match flavour {
        "3.1" => {
            doc["openapi"] = json!("3.1.0");
            doc
        }
        "2.0" => {
            // Close enough in shape and size: Swagger's body/definitions layout.
            let text = serde_json::to_string(&doc)
                .unwrap()
                .replace("#/components/schemas/", "#/definitions/");
            let mut v: Value = serde_json::from_str(&text).unwrap();
            let obj = v.as_object_mut().unwrap();
            obj.remove("openapi");
            obj.remove("servers");
            obj.insert("swagger".into(), json!("2.0"));
            obj.insert("basePath".into(), json!("/api"));
            let defs = obj.remove("components").unwrap()["schemas"].take();
            obj.insert("definitions".into(), defs);
            v
        }
        _ => doc,
    }
}

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn measure(label: &str, bytes: &[u8]) -> (String, f64, f64, usize) {
    // Peak memory of one parse, from a reset high-water mark.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kb("VmRSS:");
    let api = spec::parse(bytes).expect("the generated spec parses");
    let fs = functions(&api, "default", "big");
    let peak = status_kb("VmHWM:").saturating_sub(before);
    let count = fs.len();
    drop((api, fs));
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let api = spec::parse(bytes).unwrap();
        let fs = functions(&api, "default", "big");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        drop((api, fs));
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        label.to_string(),
        times[times.len() / 2],
        peak as f64 / 1024.0,
        count,
    )
}

const CASES: [(&str, &str, bool); 4] = [
    ("OpenAPI 3.0 JSON", "3.0", false),
    ("OpenAPI 3.1 JSON", "3.1", false),
    ("Swagger 2.0 JSON", "2.0", false),
    ("OpenAPI 3.0 YAML", "3.0", true),
];

fn main() {
    // Each case runs in its own process, so one case's freed memory does not hide the next
    // one's peak.
    let Ok(case) = std::env::var("OPENAPI_BENCH_CASE") else {
        println!(
            "| spec | size | functions | parse + build (median of 7) | peak RSS growth | target |"
        );
        println!("|---|---|---|---|---|---|");
        let dir = std::env::temp_dir();
        for (i, (_, flavour, yaml)) in CASES.iter().enumerate() {
            // About 5 MB of JSON, generated here so the measuring process holds only the bytes.
            let doc = generate(5000, flavour);
            let bytes = if *yaml {
                serde_yaml::to_string(&doc).unwrap().into_bytes()
            } else {
                serde_json::to_vec(&doc).unwrap()
            };
            let file = dir.join(format!("openapi-bench-{}-{i}", std::process::id()));
            std::fs::write(&file, bytes).unwrap();
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .env("OPENAPI_BENCH_CASE", i.to_string())
                .env("OPENAPI_BENCH_FILE", &file)
                .output()
                .expect("running a bench case");
            if std::env::var_os("OPENAPI_BENCH_KEEP").is_some() {
                eprintln!("kept {}", file.display());
            } else {
                let _ = std::fs::remove_file(&file);
            }
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        return;
    };
    let (label, _, _) = CASES[case.parse::<usize>().unwrap()];
    let bytes = std::fs::read(std::env::var("OPENAPI_BENCH_FILE").unwrap()).unwrap();
    let (l, ms, mb, count) = measure(label, &bytes);
    let ok = if ms < 200.0 {
        "< 200 ms: met"
    } else {
        "< 200 ms: MISSED"
    };
    println!(
        "| {l} | {:.1} MB | {count} | {ms:.0} ms | {mb:.0} MiB | {ok} |",
        bytes.len() as f64 / 1e6
    );
}

//! The real `glooctl` binary against a real gloo-core: what a person at a terminal sees, from
//! applying files to reading objects back, and how refusals are shown.
//!
//! Needs both binaries built: `cargo build -p gloo-core -p glooctl` (or `cargo test --workspace`).
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use e2e::{Core, ADMIN_TOKEN, EDITOR_TOKEN, VIEWER_TOKEN};
use proto::v1::{resource::Spec, Kind, ListRequest, Resource};

/// One run of glooctl: exit status and what it printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "glooctl failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn fails(self) -> Run {
        assert_eq!(
            self.code,
            Some(1),
            "glooctl should have failed with exit code 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

fn glooctl_in(core: &Core, token: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(e2e::bin("glooctl"))
        .arg("--server")
        .arg(core.url())
        .arg("--token")
        .arg(token)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting glooctl");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("writing glooctl's stdin");
    drop(pipe);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("running glooctl");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

fn glooctl(core: &Core, token: &str, args: &[&str]) -> Run {
    glooctl_in(core, token, args, None)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test file");
    path
}

/// Reads glooctl documents (`get -o yaml` output or an input file) into resources.
fn read_docs(text: &str) -> Vec<Resource> {
    glooctl::docs::parse("output", text)
        .unwrap_or_else(|e| panic!("unreadable documents {e:?}:\n{text}"))
        .into_iter()
        .map(|p| p.resource)
        .collect()
}

async fn stored(core: &Core, kind: Kind) -> Vec<Resource> {
    let mut c = core.client(ADMIN_TOKEN).await;
    c.list(ListRequest {
        kind: kind as i32,
        ..Default::default()
    })
    .await
    .expect("listing")
    .into_inner()
    .items
}

const OBJECTS: &str = "\
# A static upstream with a health check, a virtual service routing to it, a secret.
apiVersion: gloo.solo.io/v1
kind: Upstream
metadata:
  name: petstore
  namespace: default
  labels: {app: petstore, tier: web}
spec:
  static:
    hosts:
      - addr: 127.0.0.1
        port: 8080
  connectTimeout: 2.500s
  healthChecks:
    - timeout: 1s
      interval: 10s
      unhealthyThreshold: 3
      healthyThreshold: 2
      http:
        path: /healthz
        expectedStatuses: [200, 204]
---
apiVersion: gloo.solo.io/v1
kind: VirtualService
metadata:
  name: pets
spec:
  domains: [pets.example.com]
  routes:
    - name: api
      matchers:
        - prefix: /api
          methods: [GET, POST]
      routeAction:
        single:
          upstream: {name: petstore}
      options:
        timeout: 15s
        prefixRewrite: /
---
apiVersion: gloo.solo.io/v1
kind: Secret
metadata:
  name: petstore-aws
  namespace: default
spec:
  aws:
    accessKeyId: AKIDEXAMPLE
    secretAccessKey: wJalrXUtnFEMI
";

#[tokio::test]
async fn apply_get_status_delete_round_trip() {
    let core = Core::start();
    let file = write(core.dir.path(), "objects.yaml", OBJECTS);
    let file = file.to_str().unwrap();

    let run = glooctl(&core, ADMIN_TOKEN, &["apply", "-f", file]).ok();
    assert_eq!(
        run.stdout,
        "upstream default/petstore created\n\
         virtualservice default/pets created\n\
         secret default/petstore-aws created\n"
    );

    // gloo-core's translator reports on every object.
    let mut accepted = false;
    for _ in 0..200 {
        let run = glooctl(&core, ADMIN_TOKEN, &["status"]).ok();
        if run.stdout.contains("all 3 objects accepted") {
            accepted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(accepted, "statuses never became Accepted");

    // The spec read back is the spec applied, compared as values.
    let applied = read_docs(OBJECTS);
    let run = glooctl(
        &core,
        ADMIN_TOKEN,
        &["get", "upstream", "petstore", "-o", "yaml"],
    )
    .ok();
    let got = read_docs(&run.stdout);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].spec, applied[0].spec, "yaml:\n{}", run.stdout);
    assert!(matches!(&got[0].spec, Some(Spec::Upstream(u)) if u.health_checks.len() == 1));
    let doc: serde_yaml::Value = serde_yaml::from_str(&run.stdout).unwrap();
    assert_eq!(doc["kind"], "Upstream");
    assert_eq!(doc["metadata"]["labels"]["tier"], "web");
    assert_eq!(doc["metadata"]["generation"], 1);
    assert!(
        doc["metadata"]["resourceVersion"].as_u64().unwrap() > 0,
        "{}",
        run.stdout
    );
    assert_eq!(doc["status"]["state"], "ACCEPTED");
    assert_eq!(doc["spec"]["connectTimeout"], "2.500s");

    // JSON: one object for a name, {"items": [...]} for a list.
    let run = glooctl(&core, ADMIN_TOKEN, &["get", "vs", "pets", "-o", "json"]).ok();
    let vs: serde_json::Value = serde_json::from_str(&run.stdout).expect("get -o json is JSON");
    assert_eq!(vs["kind"], "VirtualService");
    assert_eq!(vs["metadata"]["namespace"], "default");
    assert_eq!(
        vs["spec"]["routes"][0]["routeAction"]["single"]["upstream"]["name"],
        "petstore"
    );
    assert_eq!(vs["spec"]["routes"][0]["options"]["timeout"], "15s");
    let run = glooctl(&core, ADMIN_TOKEN, &["get", "upstreams", "-o", "json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("list is JSON");
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        run.stdout
    );
    assert_eq!(list["items"][0]["metadata"]["name"], "petstore");

    // The table, with a label selector.
    let run = glooctl(&core, ADMIN_TOKEN, &["get", "us", "-l", "app=petstore"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with("NAMESPACE") && lines[0].contains("STATUS"),
        "{}",
        run.stdout
    );
    assert!(
        lines[1].starts_with("default")
            && lines[1].contains("petstore")
            && lines[1].contains("ACCEPTED")
    );
    let run = glooctl(&core, ADMIN_TOKEN, &["get", "us", "-l", "app=other"]).ok();
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("No upstreams found"), "{}", run.stderr);

    // Nothing changed, nothing written.
    let run = glooctl(&core, ADMIN_TOKEN, &["apply", "-f", file]).ok();
    assert_eq!(
        run.stdout,
        "upstream default/petstore unchanged\n\
         virtualservice default/pets unchanged\n\
         secret default/petstore-aws unchanged\n"
    );

    // What get prints applies again (status and store-set fields included).
    let yaml = glooctl(
        &core,
        ADMIN_TOKEN,
        &["get", "upstream", "petstore", "-o", "yaml"],
    )
    .ok()
    .stdout;
    let run = glooctl_in(&core, ADMIN_TOKEN, &["apply", "-f", "-"], Some(&yaml)).ok();
    assert_eq!(run.stdout, "upstream default/petstore unchanged\n");

    // `check`: the whole configuration is healthy.
    let run = glooctl(&core, ADMIN_TOKEN, &["check"]).ok();
    assert!(
        run.stdout.contains("configuration OK: 3 objects"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("upstream         1 accepted"),
        "{}",
        run.stdout
    );

    // A VirtualService to a missing upstream: refused, unless a draft; then status names it.
    let broken = write(
        core.dir.path(),
        "broken.yaml",
        "apiVersion: gloo.solo.io/v1\nkind: VirtualService\nmetadata: {name: broken}\n\
         spec: {domains: [broken.example], routes: [{name: r1, routeAction: {single: {upstream: {name: nowhere}}}}]}\n",
    );
    let broken = broken.to_str().unwrap();
    let run = glooctl(&core, ADMIN_TOKEN, &["apply", "-f", broken]).fails();
    assert!(run.stderr.contains("default/nowhere"), "{}", run.stderr);
    glooctl(&core, ADMIN_TOKEN, &["apply", "--draft", "-f", broken]).ok();
    let mut listed = None;
    for _ in 0..200 {
        let run = glooctl(&core, ADMIN_TOKEN, &["status"]).ok();
        if run.stdout.contains("REJECTED") {
            listed = Some(run.stdout);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let listed = listed.expect("the draft is reported Rejected");
    let line = listed
        .lines()
        .find(|l| l.contains("broken"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        line.contains("REJECTED") && line.contains("default/nowhere"),
        "{listed}"
    );
    assert!(
        !listed.contains("petstore"),
        "only objects not Accepted are listed:\n{listed}"
    );
    // `check` now fails, listing the problem.
    let run = glooctl(&core, ADMIN_TOKEN, &["check"]).fails();
    assert!(
        run.stdout.contains("problems:") && run.stdout.contains("broken"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("check failed: 1 rejected"),
        "{}",
        run.stderr
    );

    // Deleting an upstream a working route uses is refused; delete the route first.
    let run = glooctl(&core, ADMIN_TOKEN, &["delete", "upstream", "petstore"]).fails();
    assert!(
        run.stderr
            .contains("would break VirtualService default/pets"),
        "{}",
        run.stderr
    );
    glooctl(&core, ADMIN_TOKEN, &["delete", "vs", "pets"]).ok();
    let run = glooctl(&core, ADMIN_TOKEN, &["delete", "upstream", "petstore"]).ok();
    assert_eq!(run.stdout, "upstream default/petstore deleted\n");
    let run = glooctl(&core, ADMIN_TOKEN, &["get", "upstream", "petstore"]).fails();
    assert!(run.stderr.starts_with("glooctl: "), "{}", run.stderr);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    let run = glooctl(&core, ADMIN_TOKEN, &["delete", "upstream", "petstore"]).fails();
    assert!(run.stderr.contains("NOT_FOUND"), "{}", run.stderr);
}

#[tokio::test]
async fn malformed_yaml_is_located_and_nothing_is_stored() {
    let core = Core::start();
    let good = write(
        core.dir.path(),
        "good.yaml",
        "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: fine}\n\
         spec: {static: {hosts: [{addr: 127.0.0.1, port: 80}]}}\n",
    );
    // Document 2 misspells a field on line 10, column 3.
    let misspelt = write(
        core.dir.path(),
        "misspelt.yaml",
        "apiVersion: gloo.solo.io/v1\n\
         kind: Upstream\n\
         metadata: {name: a}\n\
         spec: {static: {hosts: [{addr: 127.0.0.1, port: 80}]}}\n\
         ---\n\
         apiVersion: gloo.solo.io/v1\n\
         kind: Upstream\n\
         metadata: {name: b}\n\
         spec:\n  connectTimout: 1s\n",
    );
    // A mapping value where none may be: line 3, column 9.
    let broken = write(
        core.dir.path(),
        "broken.yaml",
        "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: name: x\n",
    );
    let unknown = write(
        core.dir.path(),
        "unknown.yaml",
        "apiVersion: gloo.solo.io/v1\nkind: Foo\nmetadata: {name: x}\nspec: {}\n",
    );
    let [good, misspelt, broken, unknown] =
        [&good, &misspelt, &broken, &unknown].map(|p| p.to_str().unwrap().to_string());

    let run = glooctl(
        &core,
        ADMIN_TOKEN,
        &[
            "apply", "-f", &good, "-f", &misspelt, "-f", &broken, "-f", &unknown,
        ],
    )
    .fails();
    assert_eq!(run.stdout, "", "nothing is applied");
    let expect = [
        format!("glooctl: {misspelt}:10:3: document 2: spec: unknown field `connectTimout`"),
        format!("glooctl: {broken}:3:15: document 1: mapping values are not allowed"),
        format!(
            "glooctl: {unknown}:2:7: document 1: kind: unknown kind \"Foo\" \
             (known: Upstream, Function, Endpoints, VirtualService, UpstreamGroup, Gateway, Secret)"
        ),
    ];
    for e in &expect {
        assert!(
            run.stderr.lines().any(|l| l.starts_with(e.as_str())),
            "missing {e:?} in:\n{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("nothing was applied"), "{}", run.stderr);
    assert!(
        stored(&core, Kind::Upstream).await.is_empty(),
        "the good documents were not sent either"
    );
}

#[tokio::test]
async fn stale_resource_version_is_refused_with_the_current_version() {
    let core = Core::start();
    let v1 = "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: pets}\n\
              spec: {static: {hosts: [{addr: 127.0.0.1, port: 8080}]}}\n";
    glooctl_in(&core, EDITOR_TOKEN, &["apply", "-f", "-"], Some(v1)).ok();
    let read = glooctl(&core, EDITOR_TOKEN, &["get", "us", "pets", "-o", "yaml"])
        .ok()
        .stdout;
    let seen = read_docs(&read)[0]
        .metadata
        .clone()
        .unwrap()
        .resource_version;

    // Someone else changes it...
    let v2 = v1.replace("8080", "9090");
    let run = glooctl_in(&core, ADMIN_TOKEN, &["apply", "-f", "-"], Some(&v2)).ok();
    assert_eq!(run.stdout, "upstream default/pets configured\n");
    // The reporter's status write also moves the version; let it land first.
    e2e::settle(&mut core.client(ADMIN_TOKEN).await).await;
    let current = stored(&core, Kind::Upstream).await[0]
        .metadata
        .clone()
        .unwrap()
        .resource_version;
    assert!(current > seen);

    // ...so the edit of what was read is refused, naming both versions.
    let edited = read.replace("8080", "7070");
    let run = glooctl_in(&core, EDITOR_TOKEN, &["apply", "-f", "-"], Some(&edited)).fails();
    assert!(run.stderr.contains("ABORTED"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("resource_version {current}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&seen.to_string()), "{}", run.stderr);
    assert!(run.stderr.contains("<stdin> document 1"), "{}", run.stderr);
    let port = match &stored(&core, Kind::Upstream).await[0].spec {
        Some(Spec::Upstream(u)) => format!("{u:?}"),
        other => panic!("{other:?}"),
    };
    assert!(port.contains("9090"), "the newer write stays: {port}");
}

#[tokio::test]
async fn secrets_are_shown_to_admins_only() {
    let core = Core::start();
    let file = write(core.dir.path(), "objects.yaml", OBJECTS);
    glooctl(&core, ADMIN_TOKEN, &["apply", "-f", file.to_str().unwrap()]).ok();

    let run = glooctl(&core, VIEWER_TOKEN, &["get", "secrets"]).fails();
    assert!(run.stderr.contains("PERMISSION_DENIED"), "{}", run.stderr);
    assert!(!run.stdout.contains("AKIDEXAMPLE") && !run.stderr.contains("AKIDEXAMPLE"));
    let run = glooctl(
        &core,
        VIEWER_TOKEN,
        &["get", "secret", "petstore-aws", "-o", "yaml"],
    )
    .fails();
    assert!(run.stderr.contains("PERMISSION_DENIED"), "{}", run.stderr);
    // The viewer still reads everything else, and its status leaves secrets out.
    glooctl(&core, VIEWER_TOKEN, &["get", "upstreams"]).ok();
    let run = glooctl(&core, VIEWER_TOKEN, &["status"]).ok();
    assert!(!run.stdout.contains("petstore-aws"), "{}", run.stdout);

    let run = glooctl(&core, ADMIN_TOKEN, &["get", "secrets"]).ok();
    assert!(run.stdout.contains("petstore-aws"), "{}", run.stdout);
    let run = glooctl(
        &core,
        ADMIN_TOKEN,
        &["get", "secret", "petstore-aws", "-o", "yaml"],
    )
    .ok();
    assert_eq!(read_docs(&run.stdout)[0].spec, read_docs(OBJECTS)[2].spec);

    // Writing one is refused to an editor, one object at a time.
    let secret = OBJECTS
        .split("---\n")
        .nth(2)
        .unwrap()
        .replace("petstore-aws", "other");
    let run = glooctl_in(&core, EDITOR_TOKEN, &["apply", "-f", "-"], Some(&secret)).fails();
    assert!(run.stderr.contains("PERMISSION_DENIED"), "{}", run.stderr);
    assert!(
        run.stderr.contains("1 of 1 objects failed"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn refusals_say_what_to_fix() {
    let core = Core::start();

    let run = glooctl(&core, "not-a-token", &["get", "upstreams"]).fails();
    assert!(run.stderr.contains("UNAUTHENTICATED"), "{}", run.stderr);
    assert!(
        run.stderr.contains("--token / GLOO_TOKEN"),
        "{}",
        run.stderr
    );

    // The server's validation, with the field at fault; the valid object still applies.
    let text = "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: zero}\n\
                spec: {static: {hosts: [{addr: 127.0.0.1, port: 0}]}}\n---\n\
                apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: ok, namespace: team-a}\n\
                spec: {static: {hosts: [{addr: 127.0.0.1, port: 80}]}}\n";
    let run = glooctl_in(&core, ADMIN_TOKEN, &["apply", "-f", "-"], Some(text)).fails();
    assert!(run.stderr.contains("INVALID_ARGUMENT"), "{}", run.stderr);
    assert!(
        run.stderr.contains("spec.static.hosts[0].port"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "upstream team-a/ok created\n");

    // A dry run validates without storing.
    let run = glooctl_in(
        &core,
        ADMIN_TOKEN,
        &["apply", "--dry-run", "-n", "team-b", "-f", "-"],
        Some(&text.replace("port: 0", "port: 81")),
    )
    .ok();
    assert_eq!(
        run.stdout,
        "upstream team-b/zero created (dry run)\nupstream team-a/ok unchanged (dry run)\n"
    );
    let names: Vec<String> = stored(&core, Kind::Upstream)
        .await
        .into_iter()
        .map(|r| r.metadata.unwrap().name)
        .collect();
    assert_eq!(names, ["ok"]);

    // -n narrows a list; a name is looked up in `default` unless told otherwise.
    assert!(glooctl(&core, ADMIN_TOKEN, &["get", "us", "-n", "team-a"])
        .ok()
        .stdout
        .contains("ok"));
    glooctl(&core, ADMIN_TOKEN, &["get", "us", "ok"]).fails();
    glooctl(&core, ADMIN_TOKEN, &["get", "us", "ok", "-n", "team-a"]).ok();
}

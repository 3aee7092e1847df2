//! The commands: each turns its arguments into storage API calls and prints the outcome.
//! Output goes to `out`; per-object failures that do not stop a command go to `err`.
use std::{
    collections::HashMap,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use discovery_runtime::client::Client;
use proto::v1::{
    status::State, ApplyRequest, DeleteRequest, GetRequest, Kind, ListRequest, ObjectKey, Resource,
};
use tonic::Code;

use crate::{
    args::{ApplyArgs, Args, Command, Connection, DeleteArgs, GetArgs, StatusArgs},
    docs::{self, ParseError, Parsed},
    error::Error,
    kinds, output,
};

pub async fn run(args: Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Error> {
    let conn = &args.connection;
    match args.command {
        Command::Apply(a) => apply(conn, a, out, err).await,
        Command::Get(a) => get(conn, a, out, err).await,
        Command::Delete(a) => delete(conn, a, out).await,
        Command::Status(a) => status(conn, a, out).await,
        Command::Check(a) => check(conn, a, out).await,
    }
}

async fn connect(conn: &Connection) -> Result<Client, Error> {
    Ok(conn.options().connect().await?)
}

/// `upstream default/petstore`.
fn describe(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{} {namespace}/{name}", kinds::singular(kind))
}

fn describe_resource(r: &Resource) -> String {
    let meta = r.metadata.clone().unwrap_or_default();
    let kind = r.spec.as_ref().map_or(Kind::Unspecified, kinds::of_spec);
    describe(kind, &meta.namespace, &meta.name)
}

// ---------------------------------------------------------------------------------------------
// apply

async fn apply(
    conn: &Connection,
    args: ApplyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let objects = read_objects(&args.files, &args.namespace)?;
    if objects.is_empty() {
        return Err(Error::Usage(format!(
            "no objects in {}",
            args.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut client = connect(conn).await?;
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    let total = objects.len();
    let mut failed = 0;
    for p in objects {
        let what = describe_resource(&p.resource);
        let mut resource = p.resource;
        let meta = resource.metadata.get_or_insert_with(Default::default);
        // The store sets these; a resourceVersion read back from it makes the write conditional.
        let expected_resource_version = std::mem::take(&mut meta.resource_version);
        meta.generation = 0;
        meta.field_managers.clear();
        let req = ApplyRequest {
            resource: Some(resource),
            expected_resource_version,
            dry_run: args.dry_run,
            draft: args.draft,
        };
        match client.apply(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                let shown = resp.resource.as_ref().map_or(what, describe_resource);
                let verb = if resp.unchanged {
                    "unchanged"
                } else if resp.created {
                    "created"
                } else {
                    "configured"
                };
                writeln!(out, "{shown} {verb}{suffix}")?;
            }
            // Every further call would fail the same way.
            Err(status) if matches!(status.code(), Code::Unauthenticated | Code::Unavailable) => {
                return Err(Error::rpc(what, status));
            }
            Err(status) => {
                failed += 1;
                let at = format!("{what} ({} document {})", p.file, p.document);
                writeln!(err, "glooctl: {}", Error::rpc(at, status))?;
            }
        }
    }
    if failed > 0 {
        return Err(Error::Partial { failed, total });
    }
    Ok(())
}

/// Every object of every file, namespaces defaulted; or every mistake in them.
pub fn read_objects(files: &[PathBuf], namespace: &str) -> Result<Vec<Parsed>, Error> {
    let mut sources = Vec::new();
    for f in files {
        read_source(f, &mut sources)?;
    }
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in &sources {
        match docs::parse(name, text) {
            Ok(parsed) => objects.extend(parsed),
            Err(e) => errors.extend(e),
        }
    }
    // The same object twice would be applied twice, the second silently winning.
    let mut seen: HashMap<(Kind, String, String), (String, usize)> = HashMap::new();
    for p in &mut objects {
        let kind = p
            .resource
            .spec
            .as_ref()
            .map_or(Kind::Unspecified, kinds::of_spec);
        let meta = p.resource.metadata.get_or_insert_with(Default::default);
        if meta.namespace.is_empty() {
            meta.namespace = namespace.to_string();
        }
        let key = (kind, meta.namespace.clone(), meta.name.clone());
        if let Some((file, doc)) = seen.get(&key) {
            errors.push(ParseError {
                file: p.file.clone(),
                document: Some(p.document),
                line: None,
                column: None,
                message: format!(
                    "{} is also document {doc} of {file}",
                    describe(kind, &key.1, &key.2)
                ),
            });
        } else {
            seen.insert(key, (p.file.clone(), p.document));
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(Error::Parse(errors))
    }
}

/// Reads a file, stdin (`-`) or a directory's YAML and JSON files (sorted by name).
fn read_source(path: &Path, sources: &mut Vec<(String, String)>) -> Result<(), Error> {
    let shown = path.display().to_string();
    let read_err = |source| Error::Read {
        path: shown.clone(),
        source,
    };
    if path == Path::new("-") {
        if sources.iter().any(|(n, _)| n == "<stdin>") {
            return Err(Error::Usage("-f - can be given only once".into()));
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_err)?;
        sources.push(("<stdin>".into(), text));
    } else if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            })
            .collect();
        entries.sort();
        for e in entries {
            read_source(&e, sources)?;
        }
    } else {
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        sources.push((shown, text));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// get

async fn get(
    conn: &Connection,
    args: GetArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let info = kinds::info(args.kind).expect("the kind parser yields known kinds");
    if let Some(name) = &args.name {
        if args.all_namespaces {
            return Err(Error::Usage(
                "a NAME is looked up in one namespace: use -n, not -A".into(),
            ));
        }
        if args.selector.is_some() {
            return Err(Error::Usage(
                "give a NAME or a selector (-l), not both".into(),
            ));
        }
        let namespace = args.namespace.as_deref().unwrap_or("default");
        let mut client = connect(conn).await?;
        let resp = client
            .get(GetRequest {
                key: Some(ObjectKey {
                    kind: args.kind as i32,
                    namespace: namespace.into(),
                    name: name.clone(),
                }),
            })
            .await
            .map_err(|s| Error::rpc(format!("get {}", describe(args.kind, namespace, name)), s))?
            .into_inner();
        let resource = resp.resource.unwrap_or_default();
        return output::one(&resource, args.output, out);
    }

    let namespace = args.namespace.clone().unwrap_or_default();
    let mut client = connect(conn).await?;
    let resp = client
        .list(ListRequest {
            kind: args.kind as i32,
            namespace: namespace.clone(),
            label_selector: args.selector.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| Error::rpc(format!("list {}", info.plural), s))?
        .into_inner();
    if resp.items.is_empty() && args.output == output::Format::Table {
        let scope = if namespace.is_empty() {
            String::new()
        } else {
            format!(" in namespace {namespace}")
        };
        writeln!(err, "No {} found{scope}.", info.plural)?;
        return Ok(());
    }
    output::list(&resp.items, args.output, out)
}

// ---------------------------------------------------------------------------------------------
// delete

async fn delete(conn: &Connection, args: DeleteArgs, out: &mut dyn Write) -> Result<(), Error> {
    let mut client = connect(conn).await?;
    for name in &args.names {
        let what = describe(args.kind, &args.namespace, name);
        client
            .delete(DeleteRequest {
                key: Some(ObjectKey {
                    kind: args.kind as i32,
                    namespace: args.namespace.clone(),
                    name: name.clone(),
                }),
                expected_resource_version: 0,
            })
            .await
            .map_err(|s| Error::rpc(format!("delete {what}"), s))?;
        writeln!(out, "{what} deleted")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// status

/// Every object the caller may read, in one namespace or all.
async fn list_all(conn: &Connection, args: StatusArgs) -> Result<Vec<Resource>, Error> {
    let mut client = connect(conn).await?;
    Ok(client
        .list(ListRequest {
            kind: Kind::Unspecified as i32,
            namespace: args.namespace.unwrap_or_default(),
            label_selector: String::new(),
        })
        .await
        .map_err(|s| Error::rpc("list objects", s))?
        .into_inner()
        .items)
}

async fn status(conn: &Connection, args: StatusArgs, out: &mut dyn Write) -> Result<(), Error> {
    let items = list_all(conn, args).await?;
    let accepted = State::Accepted.as_str_name();
    let troubled: Vec<&Resource> = items
        .iter()
        .filter(|r| output::state(r) != accepted)
        .collect();
    match (items.len(), troubled.is_empty()) {
        (0, _) => writeln!(out, "no objects found")?,
        (n, true) => writeln!(out, "all {n} objects accepted")?,
        (_, false) => output::status_table(&troubled, out)?,
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// check

async fn check(conn: &Connection, args: StatusArgs, out: &mut dyn Write) -> Result<(), Error> {
    let items = list_all(conn, args).await?;
    let text = check_report(&items);
    out.write_all(text.report.as_bytes())?;
    if text.rejected > 0 {
        return Err(Error::Unhealthy {
            rejected: text.rejected,
        });
    }
    Ok(())
}

struct CheckReport {
    report: String,
    rejected: usize,
}

/// Counts by kind and state, then each object that is not Accepted or whose status describes
/// an older generation than its spec.
fn check_report(items: &[Resource]) -> CheckReport {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    let mut counts: BTreeMap<&'static str, BTreeMap<&'static str, usize>> = BTreeMap::new();
    let mut problems: Vec<&Resource> = Vec::new();
    let mut stale = Vec::new();
    let mut rejected = 0;
    for r in items {
        let kind = r
            .spec
            .as_ref()
            .map_or("unknown", |s| kinds::singular(kinds::of_spec(s)));
        let state = output::state(r);
        *counts.entry(kind).or_default().entry(state).or_default() += 1;
        if state != State::Accepted.as_str_name() {
            problems.push(r);
        }
        if state == State::Rejected.as_str_name() {
            rejected += 1;
        }
        let generation = r.metadata.as_ref().map_or(0, |m| m.generation);
        if r.status.as_ref().map_or(0, |s| s.observed_generation) < generation {
            stale.push(describe_resource(r));
        }
    }
    let mut s = String::new();
    for (kind, states) in &counts {
        let parts: Vec<String> = states
            .iter()
            .map(|(state, n)| format!("{n} {}", state.to_ascii_lowercase()))
            .collect();
        let _ = writeln!(s, "{kind:<16} {}", parts.join(", "));
    }
    if !problems.is_empty() {
        let mut table = Vec::new();
        let _ = output::status_table(&problems, &mut table);
        let _ = writeln!(s, "\nproblems:");
        s.push_str(&String::from_utf8_lossy(&table));
    }
    if !stale.is_empty() {
        let _ = writeln!(
            s,
            "\nnot yet reported on since their last change: {}",
            stale.join(", ")
        );
    }
    if items.is_empty() {
        let _ = writeln!(s, "no objects found");
    } else if rejected == 0 {
        let _ = writeln!(
            s,
            "\nconfiguration OK: {} objects, none rejected",
            items.len()
        );
    }
    CheckReport {
        report: s,
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: a}\n\
                            spec: {static: {hosts: [{addr: x, port: 80}]}}\n";

    #[test]
    fn a_directory_is_read_in_name_order_and_namespaces_are_defaulted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("2.yaml"),
            UPSTREAM.replace("name: a", "name: b"),
        )
        .unwrap();
        std::fs::write(dir.path().join("1.yml"), UPSTREAM).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        let objects = read_objects(&[dir.path().to_path_buf()], "team").unwrap();
        let keys: Vec<String> = objects
            .iter()
            .map(|p| describe_resource(&p.resource))
            .collect();
        assert_eq!(keys, ["upstream team/a", "upstream team/b"]);
    }

    #[test]
    fn the_same_object_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one.yaml"), dir.path().join("two.yaml"));
        std::fs::write(&one, UPSTREAM).unwrap();
        // Same object once the namespace is defaulted.
        std::fs::write(
            &two,
            UPSTREAM.replace("name: a", "name: a, namespace: default"),
        )
        .unwrap();
        let Err(Error::Parse(errors)) = read_objects(&[one.clone(), two.clone()], "default") else {
            panic!("duplicates should be refused");
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        let shown = errors[0].to_string();
        assert!(
            shown.starts_with(&format!(
                "{}: document 1: upstream default/a is also document 1 of {}",
                two.display(),
                one.display()
            )),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = read_objects(&[PathBuf::from("/nonexistent/x.yaml")], "default").unwrap_err();
        assert!(
            e.to_string().starts_with("reading /nonexistent/x.yaml: "),
            "{e}"
        );
    }
}

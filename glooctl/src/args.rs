//! The command line, and the process around a command: parse, run on a small runtime, print
//! the error, choose the exit code (0 ok, 1 failure).
use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use discovery_runtime::client::ConnectOptions;
use proto::v1::Kind;

use crate::{commands, error, kinds, output::Format};

/// glooctl: the command-line client of gloo-core's storage API.
///
/// Objects are written as Kubernetes-style YAML documents:
///
///   apiVersion: gloo.solo.io/v1
///   kind: Upstream
///   metadata: {name: petstore, namespace: default}
///   spec: {static: {hosts: [{addr: 127.0.0.1, port: 8080}]}}
#[derive(Debug, Parser)]
#[command(name = "glooctl", version, verbatim_doc_comment)]
pub struct Args {
    #[command(flatten)]
    pub connection: Connection,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct Connection {
    /// gloo-core's storage API.
    #[arg(
        long,
        env = "GLOO_SERVER",
        default_value = "http://127.0.0.1:9980",
        global = true,
        help_heading = "Connection"
    )]
    pub server: String,

    /// Bearer token to call the storage API with.
    #[arg(
        long,
        env = "GLOO_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "Connection"
    )]
    pub token: Option<String>,

    /// PEM CA bundle to verify an https:// server with.
    #[arg(long, env = "GLOO_CA_FILE", global = true, help_heading = "Connection")]
    pub ca_file: Option<PathBuf>,
}

impl Connection {
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            server: self.server.clone(),
            token: self.token.clone().unwrap_or_default(),
            ca_file: self.ca_file.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the objects of YAML files.
    Apply(ApplyArgs),
    /// Show objects of one kind.
    Get(GetArgs),
    /// Delete objects.
    Delete(DeleteArgs),
    /// List every object that is not Accepted, with the reason.
    Status(StatusArgs),
    /// Check the whole configuration's health: counts by kind and state, every problem, and
    /// objects whose status is out of date. Exits 1 when anything is Rejected.
    Check(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A YAML file of one or more documents, a directory of them (*.yaml, *.yml, *.json), or
    /// `-` for stdin. Repeatable. Nothing is sent unless every document reads cleanly.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Validate and show what would change, without storing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Store objects even if validation would reject them (they are reported Rejected).
    #[arg(long)]
    pub draft: bool,

    /// Namespace of the documents that name none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// upstream(s)/us, function(s)/fn, endpoints/ep, virtualservice(s)/vs,
    /// upstreamgroup(s)/ug, gateway(s)/gw, secret(s).
    #[arg(value_parser = parse_kind)]
    pub kind: Kind,

    /// One object, instead of a list.
    pub name: Option<String>,

    /// Namespace: `default` for NAME, every namespace for a list.
    #[arg(short, long)]
    pub namespace: Option<String>,

    /// List across every namespace (the default for lists).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,

    /// Label selector, e.g. `app=pets,tier!=db,team`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,

    /// Output format: yaml and json print documents that `apply` accepts again.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[arg(value_parser = parse_kind)]
    pub kind: Kind,

    #[arg(required = true)]
    pub names: Vec<String>,

    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this namespace (default: every namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    kinds::from_cli_name(s)
        .ok_or_else(|| format!("unknown kind {s:?} (known: {})", kinds::known_cli_names()))
}

impl Args {
    /// `main`: parse the command line, run the command, exit 0 or 1.
    pub fn parse_and_run() -> ExitCode {
        let args = match Args::try_parse() {
            Ok(a) => a,
            Err(e) => {
                // clap prints help and version to stdout and mistakes to stderr.
                let code = if e.use_stderr() { 1 } else { 0 };
                let _ = e.print();
                return ExitCode::from(code);
            }
        };
        args.run(&mut std::io::stdout().lock(), &mut std::io::stderr().lock())
    }

    pub fn run(self, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "glooctl: starting the async runtime: {e}");
                return ExitCode::from(1);
            }
        };
        match runtime.block_on(commands::run(self, out, err)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
            Err(e) => {
                for line in error::chain(&e).lines() {
                    let _ = writeln!(err, "glooctl: {line}");
                }
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_parse_before_and_after_the_command() {
        let a = Args::try_parse_from([
            "glooctl",
            "get",
            "vs",
            "pets",
            "-o",
            "yaml",
            "--server",
            "http://x:1",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(a.connection.server, "http://x:1");
        assert_eq!(a.connection.token.as_deref(), Some("t"));
        let Command::Get(g) = a.command else { panic!() };
        assert_eq!(
            (g.kind, g.name.as_deref(), g.output),
            (Kind::VirtualService, Some("pets"), Format::Yaml)
        );

        let a = Args::try_parse_from([
            "glooctl", "--token", "t", "apply", "-f", "a.yaml", "-f", "-",
        ])
        .unwrap();
        let Command::Apply(ap) = a.command else {
            panic!()
        };
        assert_eq!(ap.files, [PathBuf::from("a.yaml"), PathBuf::from("-")]);
    }

    #[test]
    fn unknown_kinds_list_the_known_names() {
        let e = Args::try_parse_from(["glooctl", "get", "pods"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"unknown kind "pods""#) && e.contains("virtualservices/vs"),
            "{e}"
        );
    }
}

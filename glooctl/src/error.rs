//! Why a glooctl command failed, worded for the person at the terminal. Every error ends the
//! process with exit code 1 after `glooctl: <error>` on stderr.
use std::io;

use discovery_runtime::client::ConnectError;
use tonic::Code;

use crate::docs::{ParseError, RenderError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Arguments that clap accepted but that make no sense together.
    #[error("{0}")]
    Usage(String),
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    /// Every mistake in the input files; nothing was sent.
    #[error("{}\nnothing was applied: fix the {} above", lines(.0), plural(.0.len(), "error"))]
    Parse(Vec<ParseError>),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A call the server refused or that could not reach it.
    #[error("{what}: {}", describe(.status))]
    Rpc { what: String, status: tonic::Status },
    /// Some objects of an apply failed (each was reported as it happened).
    #[error("{failed} of {total} objects failed")]
    Partial { failed: usize, total: usize },
    /// `check` found Rejected objects (each was reported).
    #[error("check failed: {rejected} rejected")]
    Unhealthy { rejected: usize },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
}

impl From<io::Error> for Error {
    /// Commands write only to their output; reading files maps to [`Error::Read`] explicitly.
    fn from(e: io::Error) -> Self {
        Error::Output(e)
    }
}

impl Error {
    pub fn rpc(what: impl Into<String>, status: tonic::Status) -> Self {
        Error::Rpc {
            what: what.into(),
            status,
        }
    }

    /// True when stdout was closed early (`glooctl get us | head -1`): not worth a complaint.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

fn lines(errors: &[ParseError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{n} {word}s")
    }
}

/// `PERMISSION_DENIED: viewer may not read Secret objects`, with a hint where one helps.
pub fn describe(status: &tonic::Status) -> String {
    let hint = match status.code() {
        Code::Unauthenticated => " (check --token / GLOO_TOKEN)",
        Code::Unavailable => " (is gloo-core running and reachable at --server / GLOO_SERVER?)",
        _ => "",
    };
    format!("{}: {}{hint}", code_name(status.code()), status.message())
}

/// The canonical gRPC name of a code, as in the gRPC docs and other tools' output.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The error and its causes on one line, each cause said once
/// (`connecting to http://...: transport error: tcp connect error: Connection refused`).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_says_where_the_token_comes_from() {
        let e = Error::rpc(
            "list upstreams",
            tonic::Status::unauthenticated("unknown bearer token"),
        );
        assert_eq!(
            e.to_string(),
            "list upstreams: UNAUTHENTICATED: unknown bearer token (check --token / GLOO_TOKEN)"
        );
    }

    #[test]
    fn parse_errors_are_one_per_line() {
        let e = |line| ParseError {
            file: "a.yaml".into(),
            document: Some(1),
            line: Some(line),
            column: Some(3),
            message: "bad".into(),
        };
        let shown = Error::Parse(vec![e(1), e(9)]).to_string();
        assert_eq!(
            shown,
            "a.yaml:1:3: document 1: bad\na.yaml:9:3: document 1: bad\n\
             nothing was applied: fix the 2 errors above"
        );
    }
}

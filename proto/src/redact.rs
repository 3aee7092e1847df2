//! Debug impls for secret payloads: they say which fields are set, never their values, so a
//! secret that reaches a log line through `{:?}` stays secret.
use std::fmt;

use crate::v1::{AwsSecret, GcpSecret, OpaqueSecret, TlsSecret};

fn redacted(s: &str) -> &'static str {
    if s.is_empty() {
        "\"\""
    } else {
        "<redacted>"
    }
}

impl fmt::Debug for TlsSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSecret")
            .field(
                "cert_chain",
                &format_args!("{}", redacted(&self.cert_chain)),
            )
            .field(
                "private_key",
                &format_args!("{}", redacted(&self.private_key)),
            )
            .field("root_ca", &format_args!("{}", redacted(&self.root_ca)))
            .finish()
    }
}

impl fmt::Debug for AwsSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSecret")
            .field(
                "access_key_id",
                &format_args!("{}", redacted(&self.access_key_id)),
            )
            .field(
                "secret_access_key",
                &format_args!("{}", redacted(&self.secret_access_key)),
            )
            .field(
                "session_token",
                &format_args!("{}", redacted(&self.session_token)),
            )
            .finish()
    }
}

impl fmt::Debug for GcpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpSecret")
            .field(
                "service_account_json",
                &format_args!("{}", redacted(&self.service_account_json)),
            )
            .finish()
    }
}

impl fmt::Debug for OpaqueSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&String> = self.data.keys().collect();
        f.debug_struct("OpaqueSecret")
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_never_shows_values() {
        let s = AwsSecret {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: String::new(),
        };
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("AKIDEXAMPLE") && !shown.contains("wJalrXUtnFEMI"),
            "{shown}"
        );
        let o = OpaqueSecret {
            data: [("password".to_string(), "hunter2".to_string())].into(),
        };
        let shown = format!("{o:?}");
        assert!(
            shown.contains("password") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}

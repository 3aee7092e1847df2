//! glooctl's table of resource kinds: the name a kind has in documents (`kind: Upstream`), the
//! names people type on the command line (`upstreams`, `us`), and which spec of a `Resource`
//! belongs to it. Kept here rather than borrowed from gloo-core so the client depends only on
//! the API crate.
use proto::v1::{resource::Spec, Kind};

pub struct KindInfo {
    pub kind: Kind,
    /// As written in documents and messages: `VirtualService`.
    pub name: &'static str,
    /// As printed by glooctl (`virtualservice default/pets created`) and typed after `get`.
    pub singular: &'static str,
    pub plural: &'static str,
    pub short: Option<&'static str>,
}

/// Every kind, in the order of the `Kind` enum.
pub const KINDS: [KindInfo; 7] = [
    KindInfo {
        kind: Kind::Upstream,
        name: "Upstream",
        singular: "upstream",
        plural: "upstreams",
        short: Some("us"),
    },
    KindInfo {
        kind: Kind::Function,
        name: "Function",
        singular: "function",
        plural: "functions",
        short: Some("fn"),
    },
    KindInfo {
        kind: Kind::Endpoints,
        name: "Endpoints",
        singular: "endpoints",
        plural: "endpoints",
        short: Some("ep"),
    },
    KindInfo {
        kind: Kind::VirtualService,
        name: "VirtualService",
        singular: "virtualservice",
        plural: "virtualservices",
        short: Some("vs"),
    },
    KindInfo {
        kind: Kind::UpstreamGroup,
        name: "UpstreamGroup",
        singular: "upstreamgroup",
        plural: "upstreamgroups",
        short: Some("ug"),
    },
    KindInfo {
        kind: Kind::Gateway,
        name: "Gateway",
        singular: "gateway",
        plural: "gateways",
        short: Some("gw"),
    },
    KindInfo {
        kind: Kind::Secret,
        name: "Secret",
        singular: "secret",
        plural: "secrets",
        short: None,
    },
];

/// The table entry of a kind; `None` only for `Kind::Unspecified`.
pub fn info(kind: Kind) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The document name of a kind, or `"Unknown"` for one this glooctl does not know (a newer
/// server may list kinds an older glooctl has never heard of).
pub fn name(kind: Kind) -> &'static str {
    info(kind).map_or("Unknown", |k| k.name)
}

pub fn singular(kind: Kind) -> &'static str {
    info(kind).map_or("unknown", |k| k.singular)
}

/// The kind a document names; exact, as in Kubernetes (`Upstream`, not `upstream`).
pub fn from_doc_name(s: &str) -> Option<Kind> {
    KINDS.iter().find(|k| k.name == s).map(|k| k.kind)
}

/// The kind a command line names: singular, plural or short, in any case.
pub fn from_cli_name(s: &str) -> Option<Kind> {
    let lower = s.to_ascii_lowercase();
    KINDS
        .iter()
        .find(|k| {
            lower == k.singular
                || lower == k.plural
                || k.short == Some(lower.as_str())
                // `endpoint` is the natural singular people type.
                || (k.kind == Kind::Endpoints && lower == "endpoint")
        })
        .map(|k| k.kind)
}

/// `Upstream, Function, ...` for error messages.
pub fn known_doc_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// `upstream(s)/us, function(s)/fn, ...` for error messages.
pub fn known_cli_names() -> String {
    KINDS
        .iter()
        .map(|k| match k.short {
            Some(s) => format!("{}/{s}", k.plural),
            None => k.plural.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kind of a resource is the spec it carries.
pub fn of_spec(spec: &Spec) -> Kind {
    match spec {
        Spec::Upstream(_) => Kind::Upstream,
        Spec::Function(_) => Kind::Function,
        Spec::Endpoints(_) => Kind::Endpoints,
        Spec::VirtualService(_) => Kind::VirtualService,
        Spec::UpstreamGroup(_) => Kind::UpstreamGroup,
        Spec::Gateway(_) => Kind::Gateway,
        Spec::Secret(_) => Kind::Secret,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_names_in_every_spelling() {
        for (s, k) in [
            ("upstream", Kind::Upstream),
            ("Upstreams", Kind::Upstream),
            ("us", Kind::Upstream),
            ("fn", Kind::Function),
            ("ep", Kind::Endpoints),
            ("endpoint", Kind::Endpoints),
            ("vs", Kind::VirtualService),
            ("VirtualService", Kind::VirtualService),
            ("ug", Kind::UpstreamGroup),
            ("gw", Kind::Gateway),
            ("secrets", Kind::Secret),
        ] {
            assert_eq!(from_cli_name(s), Some(k), "{s}");
        }
        assert_eq!(from_cli_name("pods"), None);
    }

    #[test]
    fn every_kind_of_the_api_is_in_the_table() {
        for i in 1..=7 {
            let kind = Kind::try_from(i).unwrap();
            let k = info(kind).expect("in the table");
            assert_eq!(from_doc_name(k.name), Some(kind));
            assert_eq!(from_cli_name(k.singular), Some(kind));
            assert_eq!(from_cli_name(k.plural), Some(kind));
        }
        assert!(
            Kind::try_from(8).is_err(),
            "a new kind needs a row in KINDS"
        );
        assert_eq!(from_doc_name("upstream"), None, "document kinds are exact");
    }
}

//! What discovery-k8s keeps of the cluster: for each Service and EndpointSlice only the fields
//! the desired set is built from, in small structs keyed by namespace and name.
//!
//! ```text
//!  watcher event (k8s-openapi object, dropped at once)
//!      │ ServiceInfo::from / SliceInfo::from: labels, opt-out, TCP ports; ready addresses
//!      ▼
//!  Objects<T>: live map ◄── swapped in whole at InitDone ── relist map (while a (re)list runs)
//! ```
//!
//! A decoded k8s-openapi object with its metadata (uid, timestamps, managedFields, annotations,
//! status) takes several KiB; these take a few hundred bytes. Events are applied the way
//! kube-runtime's reflector store applies them: the objects of a (re)list are collected apart
//! and replace the live map only once the list is complete, so the index always holds a whole
//! state, and objects deleted while the watch was down disappear with the relist.
use std::collections::BTreeMap;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{runtime::watcher::Event, ResourceExt};

use crate::desired::{wants_http2, DISABLE_ANNOTATION, SERVICE_NAME_LABEL};

/// `(namespace, name)`.
pub type Key = (String, String);

/// What the desired set needs of a Service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceInfo {
    /// Its labels, sorted by key.
    pub labels: Vec<(String, String)>,
    /// Annotated [`DISABLE_ANNOTATION`]`: "true"`.
    pub disabled: bool,
    pub ports: Vec<PortInfo>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortInfo {
    /// Empty when the port is unnamed.
    pub name: String,
    pub port: i32,
    /// Protocol TCP (the default); UDP and SCTP ports are not Upstreams.
    pub tcp: bool,
    pub http2: bool,
}

impl From<&Service> for ServiceInfo {
    fn from(svc: &Service) -> ServiceInfo {
        let meta = &svc.metadata;
        let labels = meta
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let disabled = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(DISABLE_ANNOTATION))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .map(|p| PortInfo {
                name: p.name.clone().unwrap_or_default(),
                port: p.port,
                tcp: p.protocol.as_deref().is_none_or(|p| p == "TCP"),
                http2: wants_http2(p),
            })
            .collect();
        ServiceInfo {
            labels,
            disabled,
            ports,
        }
    }
}

/// What the desired set needs of an EndpointSlice: its Service, its ports, and the addresses
/// of its ready endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceInfo {
    /// The [`SERVICE_NAME_LABEL`] label; a slice without it belongs to no Service.
    pub service: Option<String>,
    /// `(name, number)`, the name empty when unnamed; the number `None` when missing or out of
    /// range.
    pub ports: Vec<(String, Option<u32>)>,
    /// `(address, hostname)` of every endpoint whose `ready` condition is not false (unknown
    /// counts as ready, as kube-proxy does). Empty for FQDN slices: Envoy's EDS wants IPs.
    pub addresses: Vec<(String, String)>,
}

impl From<&EndpointSlice> for SliceInfo {
    fn from(slice: &EndpointSlice) -> SliceInfo {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let number = p
                    .port
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=65535).contains(n));
                (p.name.clone().unwrap_or_default(), number)
            })
            .collect();
        let addresses = if slice.address_type == "FQDN" {
            Vec::new()
        } else {
            slice
                .endpoints
                .iter()
                .flatten()
                .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .flat_map(|ep| {
                    let hostname = ep.hostname.clone().unwrap_or_default();
                    ep.addresses
                        .iter()
                        .map(move |a| (a.clone(), hostname.clone()))
                })
                .collect()
        };
        SliceInfo {
            service,
            ports,
            addresses,
        }
    }
}

/// The `(namespace, name)` of a Kubernetes object (namespace `default` when unset).
pub fn key_of<K: ResourceExt>(obj: &K) -> Key {
    (
        obj.namespace().unwrap_or_else(|| "default".into()),
        obj.name_any(),
    )
}

/// A watcher event with its object reduced to what the index keeps.
pub fn reduce<K, T>(ev: Event<K>) -> Event<(Key, T)>
where
    K: ResourceExt,
    T: for<'a> From<&'a K>,
{
    let pair = |obj: K| (key_of(&obj), T::from(&obj));
    match ev {
        Event::Apply(obj) => Event::Apply(pair(obj)),
        Event::Delete(obj) => Event::Delete(pair(obj)),
        Event::InitApply(obj) => Event::InitApply(pair(obj)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

/// The objects of one kind, by `(namespace, name)`.
#[derive(Debug)]
pub struct Objects<T> {
    live: BTreeMap<Key, T>,
    /// Filled while a (re)list runs.
    relist: Option<BTreeMap<Key, T>>,
}

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Objects {
            live: BTreeMap::new(),
            relist: None,
        }
    }
}

impl<T> Objects<T> {
    /// Applies one watcher event. Returns true when it completed a (re)list.
    pub fn apply(&mut self, ev: Event<(Key, T)>) -> bool {
        match ev {
            Event::Apply((key, obj)) => {
                self.live.insert(key, obj);
            }
            Event::Delete((key, _)) => {
                self.live.remove(&key);
            }
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply((key, obj)) => {
                self.relist.get_or_insert_default().insert(key, obj);
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                return true;
            }
        }
        false
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The objects, ordered by namespace and name.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &T)> {
        self.live.iter()
    }
}

impl<T> FromIterator<(Key, T)> for Objects<T> {
    fn from_iter<I: IntoIterator<Item = (Key, T)>>(iter: I) -> Self {
        Objects {
            live: iter.into_iter().collect(),
            relist: None,
        }
    }
}

/// Everything discovery knows of the cluster.
#[derive(Debug, Default)]
pub struct Index {
    pub services: Objects<ServiceInfo>,
    pub slices: Objects<SliceInfo>,
}

impl Index {
    /// An index of these objects (for tests and tools).
    pub fn of<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Index {
        Index {
            services: services
                .into_iter()
                .map(|s| (key_of(s), s.into()))
                .collect(),
            slices: slices.into_iter().map(|s| (key_of(s), s.into())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, app: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(o: &Objects<ServiceInfo>) -> Vec<String> {
        o.iter().map(|((_, n), _)| n.clone()).collect()
    }

    #[test]
    fn a_relist_replaces_the_objects_only_when_complete() {
        let mut o: Objects<ServiceInfo> = Objects::default();
        assert!(!o.apply(reduce(Event::<Service>::Init)));
        assert!(!o.apply(reduce(Event::InitApply(svc("a", "a")))));
        assert!(o.is_empty(), "a list in progress is not visible");
        assert!(o.apply(reduce(Event::<Service>::InitDone)));
        o.apply(reduce(Event::Apply(svc("b", "b"))));
        o.apply(reduce(Event::Apply(svc("a", "changed"))));
        assert_eq!(names(&o), ["a", "b"]);
        assert_eq!(o.iter().next().unwrap().1.labels[0].1, "changed");

        // The watch broke and expired; "b" was deleted meanwhile.
        o.apply(reduce(Event::<Service>::Init));
        o.apply(reduce(Event::InitApply(svc("a", "a"))));
        o.apply(reduce(Event::InitApply(svc("c", "c"))));
        assert_eq!(
            names(&o),
            ["a", "b"],
            "the old state until the relist is done"
        );
        assert!(o.apply(reduce(Event::<Service>::InitDone)));
        assert_eq!(names(&o), ["a", "c"]);

        o.apply(reduce(Event::Delete(svc("a", "a"))));
        assert_eq!(names(&o), ["c"]);
    }
}

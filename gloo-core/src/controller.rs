//! The controller: keeps Envoy's configuration and every object's status in step with the
//! store.
//!
//! ```text
//!   store events ──► coalesce ──► translate (blocking pool) ──► publish snapshot (xDS cache)
//!                                        │
//!   Envoy NACKs ────────────────────────►└──► statuses (one batched store write)
//! ```
//!
//! A single change is translated at once; changes that arrive while a pass runs are taken
//! together by the next pass, so a burst costs a few passes, not one per change. A pass is
//! given the keys the store's events named, as they are now, and the translator re-translates
//! only what they touch; only when events were missed does it look at the whole store. Writes
//! that only change statuses (the reporter's own) publish nothing: the translator just takes
//! the store's new copies, so it shares every object with the store.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Instant,
};

use prometheus_client::{
    metrics::{counter::Counter, histogram::Histogram},
    registry::Registry,
};
use proto::v1::{status::State, Resource, Status};
use tokio::sync::{
    broadcast::error::{RecvError, TryRecvError},
    mpsc,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    auth::Identity,
    memory,
    resource::Key,
    storage::Storage,
    store::{Event, Store},
    translate::{Input, Translation, Translator},
    xds::{cache::SnapshotPublisher, rejections::Rejected, Rejections, Snapshot, Verdict},
};

pub const REPORTER: &str = "gloo-core";

/// Statuses written per transaction, at least (see [`Controller::report`]).
const STATUS_SLICE: usize = 1000;

#[derive(Clone)]
pub struct ControllerMetrics {
    passes: Counter,
    duration: Histogram,
    statuses: Counter,
}

impl ControllerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ControllerMetrics {
            passes: Counter::default(),
            duration: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            statuses: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("gloo_translator");
        r.register("passes", "Translation passes", m.passes.clone());
        r.register(
            "pass_duration_seconds",
            "Time of one translation pass",
            m.duration.clone(),
        );
        r.register(
            "status_writes",
            "Object statuses written",
            m.statuses.clone(),
        );
        m
    }
}

pub struct Controller {
    pub store: Arc<Store>,
    pub storage: Arc<Storage>,
    pub publisher: SnapshotPublisher,
    /// Envoy's NACKs, and ACKs of nodes that NACKed before (a later ACK of the refused
    /// version clears the rejection).
    pub nacks: mpsc::UnboundedReceiver<Verdict>,
    pub metrics: ControllerMetrics,
}

/// What a pass translates: the whole store (the first pass, or after missed events), or the
/// objects that changed, as they are now.
enum Work {
    Whole(Input),
    Changes(Vec<(Key, Option<Arc<Resource>>)>),
}

impl Controller {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let identity = Identity::internal(REPORTER);
        let mut events = self.store.subscribe();
        let mut rejections = Rejections::default();
        // Kept across passes: it re-translates only what the changed objects touch.
        let mut translator: Option<Translator> = Some(Translator::new());
        let mut whole = true;
        // The keys events named since the last pass, and whether any changed more than a
        // status (only statuses: the translator just takes the store's new copies).
        let mut pending: BTreeSet<Key> = BTreeSet::new();
        let mut real = true;
        // The objects the last report blamed on Envoy (their statuses change when it stops).
        let mut blamed: BTreeSet<Key> = BTreeSet::new();
        let mut snapshot = Arc::new(Snapshot::default());
        loop {
            let started = Instant::now();
            let work = {
                let state = self.store.read();
                if whole {
                    Work::Whole(Input::from_state(&state))
                } else {
                    Work::Changes(
                        pending
                            .iter()
                            .map(|k| (k.clone(), state.get(k).cloned()))
                            .collect(),
                    )
                }
            };
            let changed_keys = std::mem::take(&mut pending);
            let was_whole = std::mem::replace(&mut whole, false);
            let large = was_whole || changed_keys.len() >= memory::LARGE_CHANGE;
            let publish = std::mem::replace(&mut real, false);
            let mut tr = translator.take().unwrap_or_default();
            let pass = tokio::task::spawn_blocking(move || {
                let t = match work {
                    Work::Whole(input) => tr.replace(&input),
                    Work::Changes(changes) => tr.apply(changes),
                };
                let out =
                    publish.then(|| (Arc::new(t.snapshot.clone()), t.changed_reports.clone()));
                (tr, out)
            })
            .await;
            let Ok((tr, out)) = pass else {
                warn!("translation pass panicked; starting again from scratch");
                whole = true;
                real = true;
                continue;
            };
            translator = Some(tr);
            if let Some((snap, changed_reports)) = out {
                self.metrics.passes.inc();
                self.metrics
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                debug!(took_ms = started.elapsed().as_millis() as u64, "translated");
                // Published as the only reference, so it is sealed in place, not copied.
                self.publisher.publish(snap);
                snapshot = self
                    .publisher
                    .current()
                    .expect("a snapshot was just published");
                rejections.retain_current(&snapshot);
                let tr = translator.as_mut().expect("kept");
                let candidates: BTreeSet<Key> = if was_whole {
                    tr.current().reports.keys().cloned().collect()
                } else {
                    changed_reports.into_iter().chain(changed_keys).collect()
                };
                blamed = self
                    .report(&identity, tr, &rejections, candidates, &blamed)
                    .await;
            }
            if large {
                // The copies this pass replaced are freed: give their pages back.
                let _ = tokio::task::spawn_blocking(memory::release).await;
            }

            // Wait for a change, or a NACK to report.
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    nack = self.nacks.recv() => {
                        let Some(verdict) = nack else { continue };
                        if let Verdict::Nack(nack) = &verdict {
                            warn!(node = %nack.node, type_url = %nack.type_url, version = %nack.version,
                                  resources = ?nack.resource_names, message = %nack.message,
                                  "Envoy rejected configuration");
                        }
                        if !rejections.on_verdict(&verdict, &snapshot) {
                            continue;
                        }
                        let tr = translator.as_mut().expect("kept");
                        blamed = self
                            .report(&identity, tr, &rejections, BTreeSet::new(), &blamed)
                            .await;
                    }
                    ev = events.recv() => {
                        let mut take = |batch: &[Event]| {
                            for e in batch {
                                real |= !e.status_only;
                                pending.extend(Key::of(&e.resource));
                            }
                        };
                        match ev {
                            Ok(batch) => take(&batch),
                            Err(RecvError::Lagged(_)) => whole = true,
                            Err(RecvError::Closed) => return,
                        }
                        // Take whatever else is already queued into the same pass.
                        loop {
                            match events.try_recv() {
                                Ok(batch) => take(&batch),
                                Err(TryRecvError::Lagged(_)) => whole = true,
                                Err(_) => break,
                            }
                        }
                        if whole {
                            real = true;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Writes, in one transaction, every status that differs from what is stored, among the
    /// `candidates` (objects whose report or spec changed) and the objects Envoy's rejections
    /// name now or named last time. Returns the objects blamed on Envoy now.
    async fn report(
        &self,
        identity: &Arc<Identity>,
        translator: &mut Translator,
        rejections: &Rejections,
        candidates: BTreeSet<Key>,
        blamed_before: &BTreeSet<Key>,
    ) -> BTreeSet<Key> {
        let (items, blamed) =
            self.statuses(translator.current(), rejections, candidates, blamed_before);
        if items.is_empty() {
            return blamed;
        }
        // In slices, each followed by the translator taking the copies just written: else
        // every object whose status changed would be held twice at once (the store's new copy,
        // the translator's old one), which after a big Sync is most of gloo-core's memory.
        // Few enough slices that their events fit in the store's broadcast channel.
        let n = items.len();
        let per_slice = STATUS_SLICE.max(n.div_ceil(8));
        let mut written = 0;
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let slice: Vec<_> = items.by_ref().take(per_slice).collect();
            let storage = self.storage.clone();
            let identity = identity.clone();
            match tokio::task::spawn_blocking(move || storage.update_statuses(&identity, slice))
                .await
            {
                Ok(Ok(objects)) => {
                    written += objects.len();
                    translator.share(objects);
                }
                Ok(Err(e)) => warn!(%e, "writing statuses"),
                Err(e) => warn!(%e, "writing statuses"),
            }
        }
        self.metrics.statuses.inc_by(written as u64);
        info!(written, considered = n, "statuses reported");
        blamed
    }

    /// The statuses that differ from what is stored, among the `candidates` and the objects
    /// Envoy's rejections name now or named last time; and the objects blamed on Envoy now.
    #[allow(clippy::type_complexity)]
    fn statuses(
        &self,
        t: &Translation,
        rejections: &Rejections,
        mut candidates: BTreeSet<Key>,
        blamed_before: &BTreeSet<Key>,
    ) -> (Vec<(Key, u64, Status)>, BTreeSet<Key>) {
        let mut envoy: BTreeMap<&Key, Vec<String>> = BTreeMap::new();
        for Rejected {
            name,
            message,
            node,
        } in rejections.iter()
        {
            let keys = t.origins.get(name).map(Vec::as_slice).unwrap_or(&[]);
            // Blame the objects the message names, if it names any; else all of them.
            let named: Vec<&Key> = keys
                .iter()
                .filter(|k| {
                    message.contains(&format!("{}_{}", k.name, k.namespace))
                        || message.contains(&format!("{}-{}", k.namespace, k.name))
                })
                .collect();
            let blamed = if named.is_empty() {
                keys.iter().collect()
            } else {
                named
            };
            for k in blamed {
                envoy
                    .entry(k)
                    .or_default()
                    .push(format!("Envoy ({node}) rejected {name}: {message}"));
            }
        }
        let blamed: BTreeSet<Key> = envoy.keys().map(|k| (*k).clone()).collect();
        candidates.extend(blamed.iter().cloned());
        candidates.extend(blamed_before.iter().cloned());
        let mut items = Vec::new();
        {
            let state = self.store.read();
            for key in &candidates {
                let Some(report) = t.reports.get(key) else {
                    continue;
                };
                let Some(current) = state.get(key) else {
                    continue;
                };
                let generation = current.metadata.as_ref().map_or(0, |m| m.generation);
                let (state_, reason) = match envoy.get(key) {
                    Some(msgs) => (State::Rejected, msgs.join("; ")),
                    None => (report.state, report.reason.clone()),
                };
                let status = Status {
                    state: state_ as i32,
                    reason,
                    reported_by: REPORTER.into(),
                    observed_generation: generation,
                };
                if current.status.as_ref() != Some(&status) {
                    items.push((key.clone(), generation, status));
                }
            }
        }
        (items, blamed)
    }
}

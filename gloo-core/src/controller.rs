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
//! together by the next pass, so a burst costs a few passes, not one per change. Writes that
//! only change statuses (the reporter's own) do not start a pass.
use std::{collections::BTreeMap, sync::Arc, time::Instant};

use prometheus_client::{
    metrics::{counter::Counter, histogram::Histogram},
    registry::Registry,
};
use proto::v1::{status::State, Status};
use tokio::sync::{broadcast::error::TryRecvError, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    auth::Identity,
    resource::Key,
    storage::Storage,
    store::Store,
    translate::{Input, Translation, Translator},
    xds::{cache::SnapshotPublisher, nodes::Nack, Snapshot},
};

pub const REPORTER: &str = "gloo-core";

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

/// What Envoy said no to, by resource name: still reported until that resource changes.
#[derive(Default)]
struct Rejections {
    /// Resource name → (version rejected, message, node).
    by_name: BTreeMap<String, (String, String, String)>,
}

impl Rejections {
    fn record(&mut self, nack: &Nack, snapshot: &Snapshot) {
        for name in &nack.resource_names {
            let version = snapshot
                .of_type(&nack.type_url)
                .and_then(|r| r.get(name))
                .map(|r| r.version.clone())
                .unwrap_or_default();
            self.by_name.insert(
                name.clone(),
                (version, nack.message.clone(), nack.node.clone()),
            );
        }
    }

    /// Forgets rejections of resources that changed since (a new version may be fine).
    fn retain_current(&mut self, snapshot: &Snapshot) {
        self.by_name.retain(|name, (version, _, _)| {
            snapshot
                .resources
                .values()
                .any(|m| m.get(name).is_some_and(|r| &r.version == version))
        });
    }
}

pub struct Controller {
    pub store: Arc<Store>,
    pub storage: Arc<Storage>,
    pub publisher: SnapshotPublisher,
    pub nacks: mpsc::UnboundedReceiver<Nack>,
    pub metrics: ControllerMetrics,
}

impl Controller {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let identity = Identity::internal(REPORTER);
        let mut events = self.store.subscribe();
        let mut rejections = Rejections::default();
        // Kept across passes: it reuses what did not change.
        let mut translator: Option<Translator> = None;
        loop {
            let started = Instant::now();
            let input = Input::from_state(&self.store.read());
            let mut tr = translator.take().unwrap_or_default();
            let pass = tokio::task::spawn_blocking(move || {
                let t = tr.translate(&input);
                (tr, t)
            })
            .await;
            let Ok((tr, t)) = pass else {
                warn!("translation pass panicked; starting again from scratch");
                continue;
            };
            translator = Some(tr);
            self.metrics.passes.inc();
            self.metrics
                .duration
                .observe(started.elapsed().as_secs_f64());
            debug!(took_ms = started.elapsed().as_millis() as u64, "translated");
            self.publisher.publish(t.snapshot.clone());
            rejections.retain_current(&t.snapshot);
            self.report(&identity, &t, &rejections).await;

            // Wait for a change that matters, or a NACK to report.
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    nack = self.nacks.recv() => {
                        let Some(nack) = nack else { continue };
                        warn!(node = %nack.node, type_url = %nack.type_url, version = %nack.version,
                              resources = ?nack.resource_names, message = %nack.message,
                              "Envoy rejected configuration");
                        rejections.record(&nack, &t.snapshot);
                        self.report(&identity, &t, &rejections).await;
                    }
                    ev = events.recv() => match ev {
                        Ok(batch) if batch.iter().all(|e| e.status_only) => continue,
                        Ok(_) | Err(_) => {
                            // Take whatever else is already queued into the same pass.
                            while let Ok(_) | Err(TryRecvError::Lagged(_)) = events.try_recv() {}
                            break;
                        }
                    },
                }
            }
        }
    }

    /// Writes every status that differs from what is stored, in one transaction.
    async fn report(&self, identity: &Arc<Identity>, t: &Translation, rejections: &Rejections) {
        let mut envoy: BTreeMap<&Key, Vec<String>> = BTreeMap::new();
        for (name, (_, message, node)) in &rejections.by_name {
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
        let mut items = Vec::new();
        {
            let state = self.store.read();
            for (key, report) in &t.reports {
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
        if items.is_empty() {
            return;
        }
        let storage = self.storage.clone();
        let identity = identity.clone();
        let n = items.len();
        match tokio::task::spawn_blocking(move || storage.update_statuses(&identity, items)).await {
            Ok(Ok(written)) => {
                self.metrics.statuses.inc_by(written as u64);
                info!(written, considered = n, "statuses reported");
            }
            Ok(Err(e)) => warn!(%e, "writing statuses"),
            Err(e) => warn!(%e, "writing statuses"),
        }
    }
}

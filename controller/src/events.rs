//! Events (events.k8s.io/v1) about Functions, told apart as client-go's recorder (and so Kyma's
//! controller) tells them apart: by object, type, reason *and message*. A repeat of the same
//! event within a few minutes counts up its series; a new message is an event of its own, so
//! `kubectl describe function` shows every failure, not the first one with a count.
//! (kube-runtime's Recorder keys by reason alone: a second JobFailed would keep the first's note.)

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::Client;
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a repeat counts up the same event (client-go: 10 minutes; kube-runtime: 6).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// One event, before it is written.
pub struct Note<'a> {
    pub type_: EventType,
    pub reason: &'a str,
    pub note: String,
    pub regarding: ObjectReference,
    pub related: Option<ObjectReference>,
}

type Key = (String, String, String, String, String, Option<String>);

/// Writes events as `controller` (`instance`: this replica).
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    /// Events written recently: their name, series count and when last seen.
    recent: Mutex<HashMap<Key, (String, i32, Timestamp)>>,
}

fn key(n: &Note) -> Key {
    let r = &n.regarding;
    (
        r.uid.clone().unwrap_or_default(),
        format!("{:?}", n.type_),
        n.reason.to_string(),
        n.note.clone(),
        r.namespace.clone().unwrap_or_default(),
        n.related.as_ref().and_then(|o| o.name.clone()),
    )
}

impl Recorder {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Recorder {
        Recorder {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            recent: Mutex::default(),
        }
    }

    pub async fn publish(&self, n: Note<'_>) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let ns = n.regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let k = key(&n);
        let repeat = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.retain(|_, (_, _, seen)| *seen + SERIES_TTL > now);
            recent.get(&k).cloned()
        };
        let (name, count) = match repeat {
            Some((name, count, _)) => {
                let series = EventSeries {
                    count: count + 1,
                    last_observed_time: MicroTime(now),
                };
                let patch = serde_json::json!({ "series": series });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                (name, count + 1)
            }
            None => {
                let name = format!(
                    "{}.{:x}",
                    n.regarding.name.clone().unwrap_or_else(|| self.controller.clone()),
                    now.as_nanosecond()
                );
                let ev = Event {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        ..Default::default()
                    },
                    action: Some("Reconcile".into()),
                    reason: Some(n.reason.to_string()),
                    note: Some(n.note),
                    type_: Some(format!("{:?}", n.type_)),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(n.regarding),
                    related: n.related,
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &ev).await?;
                (name, 1)
            }
        };
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k, (name, count, now));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(reason: &'static str, text: &str) -> Note<'static> {
        Note {
            type_: EventType::Warning,
            reason,
            note: text.into(),
            regarding: ObjectReference {
                uid: Some("u1".into()),
                namespace: Some("ns".into()),
                name: Some("f".into()),
                ..Default::default()
            },
            related: None,
        }
    }

    #[test]
    fn a_new_message_is_a_new_event() {
        assert_eq!(key(&note("JobFailed", "a")), key(&note("JobFailed", "a")));
        assert_ne!(key(&note("JobFailed", "a")), key(&note("JobFailed", "b")));
        assert_ne!(key(&note("JobFailed", "a")), key(&note("JobFinished", "a")));
        assert_eq!(format!("{:?}", EventType::Warning), "Warning");
    }
}

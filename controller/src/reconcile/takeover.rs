//! Taking a Function over from Kyma's controller in place. Kyma names a Function's Deployment,
//! HorizontalPodAutoscaler and ConfigMap `<function>-xxxxx` (generateName) and its build Jobs
//! `<function>-build-xxxxx`; fnbuild names them `<function>`. Both label them the same way
//! (`serverless.kyma-project.io/uuid`, managed-by `function-controller`) and make the Function
//! their controlling owner, so the watch caches already hold Kyma's objects. The Service is
//! `<function>` in both, and is adopted by the server-side apply.
//!
//! Kyma's ConfigMap and HorizontalPodAutoscaler go at once (two HPAs on one Function's scale
//! subresource would fight; the ConfigMap serves nothing). Kyma's Deployment keeps serving until
//! fnbuild's is ready, then goes: exactly one Deployment serves the Service afterwards, and
//! Kyma's Pods stop once, never restarted. (Kyma's build Jobs carry no image tag, so the image
//! step deletes them as Jobs of old inputs.)

use super::super::desired::LABEL_UUID;
use super::super::types::Function;
use super::objects::{delete, owned_by};
use super::{Context, Error};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// The reason of the event that says what was deleted.
pub const PREVIOUS_OBJECTS_DELETED: &str = "PreviousObjectsDeleted";

/// The names of `f`'s objects in `store` that are not fnbuild's `<function>`: another
/// controller's (Kyma's) for the same Function.
fn others<K>(store: &Store<K>, f: &Function) -> Vec<String>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let (ns, name, uid) = (f.namespace(), f.name_any(), f.uid().unwrap_or_default());
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace == ns && o.meta().name.as_deref() != Some(name.as_str()))
        .filter(|o| o.meta().labels.as_ref().and_then(|l| l.get(LABEL_UUID)) == Some(&uid))
        .filter(|o| owned_by(o.meta(), f))
        .map(|o| o.name_any())
        .collect()
}

/// Deletes `f`'s objects in `store` that another controller made, with an event for each.
async fn retire<K>(ctx: &Context, f: &Function, store: &Store<K>) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let ns = f.namespace().unwrap_or_default();
    for n in others(store, f) {
        let kind = K::kind(&());
        tracing::info!(function = %f.name_any(), namespace = %ns, %kind, name = %n, "deleting another controller's object of this Function");
        delete::<K>(ctx, &ns, &n).await?;
        let related = ObjectReference {
            api_version: Some(K::api_version(&()).into()),
            kind: Some(kind.to_string()),
            name: Some(n.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        };
        let msg = format!("deleted {kind}/{n}, which another controller (Kyma's) made for this Function");
        ctx.event_related(f, EventType::Normal, PREVIOUS_OBJECTS_DELETED, msg, Some(related))
            .await;
    }
    Ok(())
}

/// Deletes the Function's objects another controller made: the ConfigMaps and HPAs now, the
/// Deployments once `ours_ready`.
pub(super) async fn retire_others(ctx: &Context, f: &Function, ours_ready: bool) -> Result<(), Error> {
    let st = &ctx.stores;
    retire::<ConfigMap>(ctx, f, &st.config_maps).await?;
    retire::<HorizontalPodAutoscaler>(ctx, f, &st.hpas).await?;
    if ours_ready {
        retire::<Deployment>(ctx, f, &st.deployments).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    #[test]
    fn others_are_the_functions_objects_under_other_names() {
        let f: Function = serde_json::from_value(serde_json::json!({
            "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
            "metadata": {"name": "hello", "namespace": "ns", "uid": "u1"},
            "spec": {"runtime": "nodejs24", "source": {"inline": {"source": "x"}}}}))
        .unwrap();
        let owner = serde_json::json!([{"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
            "name": "hello", "uid": "u1", "controller": true}]);
        let dep = |name: &str, ns: &str, uuid: &str, owners: &serde_json::Value| -> Deployment {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": ns,
                "labels": {LABEL_UUID: uuid}, "ownerReferences": owners}, "spec": {"selector": {}, "template": {}}}))
            .unwrap()
        };
        let (reader, mut writer) = reflector::store::<Deployment>();
        for d in [
            dep("hello", "ns", "u1", &owner),                        // fnbuild's own
            dep("hello-7xk2q", "ns", "u1", &owner),                  // Kyma's
            dep("hello-other", "ns", "u2", &owner),                  // another Function's label
            dep("hello-nobody", "ns", "u1", &serde_json::json!([])), // not owned
            dep("hello-abcde", "ns2", "u1", &owner),                 // another namespace
        ] {
            writer.apply_watcher_event(&Event::Apply(d));
        }
        assert_eq!(others(&reader, &f), ["hello-7xk2q"]);
    }
}

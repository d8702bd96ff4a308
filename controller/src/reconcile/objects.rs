//! Owned objects: made to contain what is desired with one server-side apply when they differ
//! (nothing at all when they do not), and deleted; never one the Function does not own.

use super::super::compare;
use super::super::types::Function;
use super::{Context, Error, FIELD_MANAGER};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Created,
    Updated,
}

/// Whether `meta` names `f` as its controlling owner.
pub(crate) fn owned_by(meta: &kube::core::ObjectMeta, f: &Function) -> bool {
    let uid = f.uid().unwrap_or_default();
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// Make the live object contain `want`: nothing when it already does, else a server-side apply
/// (which also creates it). An object of that name not owned by the Function is left alone.
pub(crate) async fn ensure<K>(ctx: &Context, f: &Function, store: &Store<K>, want: &K) -> Result<(Outcome, K), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let ns = f.namespace().unwrap_or_default();
    let name = want.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let live = match store.get(&ObjectRef::new(&name).within(&ns)) {
        Some(o) => Some((*o).clone()),
        // Not in the cache (not ours, or the cache lags): ask the API server.
        None => api.get_opt(&name).await?,
    };
    let outcome = match &live {
        Some(l) if !owned_by(l.meta(), f) => {
            return Err(Error::NotOwned {
                kind: K::kind(&()).to_string(),
                namespace: ns,
                name,
                function: f.name_any(),
            })
        }
        Some(l) => match compare::contains(l, want) {
            Ok(()) => return Ok((Outcome::Unchanged, l.clone())),
            Err(path) => {
                tracing::debug!(function = %f.name_any(), kind = %K::kind(&()), %name, differs = %path, "updating");
                Outcome::Updated
            }
        },
        None => Outcome::Created,
    };
    ctx.wrote();
    let applied = api
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(want))
        .await?;
    Ok((outcome, applied))
}

/// Deletes `name` (its dependents in the background); one already gone is fine.
pub(crate) async fn delete<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    ctx.wrote();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

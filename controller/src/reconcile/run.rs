//! The workload step: the Deployment of the image, its Service and HorizontalPodAutoscaler, and
//! the Running condition from the Deployment's state.

use super::super::desired;
use super::super::types::{condition, reason, Status};
use super::objects::{self, Outcome};
use super::{takeover, Error, Reconciling};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

/// Deployment, Service and HPA for `image`, and the Running condition.
impl Reconciling<'_> {
    pub(super) async fn run(&mut self, image: &str) -> Result<(), Error> {
        let (f, ctx) = (self.f, self.ctx);
        let (name, ns) = (self.name.clone(), self.ns.clone());
        let s = self.settings;
        let (d_outcome, dep) =
            objects::ensure(ctx, f, &ctx.stores.deployments, &desired::deployment(f, s, image)).await?;
        match d_outcome {
            Outcome::Created => {
                self.event(
                    EventType::Normal,
                    reason::DEPLOYMENT_CREATED,
                    format!("Deployment {name} runs {image}"),
                )
                .await
            }
            Outcome::Updated => {
                self.event(
                    EventType::Normal,
                    reason::DEPLOYMENT_UPDATED,
                    format!("Deployment {name} updated"),
                )
                .await
            }
            Outcome::Unchanged => {}
        }
        let (svc_outcome, _) = objects::ensure(ctx, f, &ctx.stores.services, &desired::service(f)).await?;
        match svc_outcome {
            Outcome::Created => {
                self.event(
                    EventType::Normal,
                    reason::SERVICE_CREATED,
                    format!("Service {name} serves port 80"),
                )
                .await
            }
            Outcome::Updated => {
                self.event(
                    EventType::Normal,
                    reason::SERVICE_UPDATED,
                    format!("Service {name} updated"),
                )
                .await
            }
            Outcome::Unchanged => {}
        }
        match desired::hpa(f, s) {
            Some(h) => {
                let (o, _) = objects::ensure(ctx, f, &ctx.stores.hpas, &h).await?;
                let (r, msg) = match o {
                    Outcome::Created => (reason::HPA_CREATED, "scales the Function"),
                    Outcome::Updated => (reason::HPA_UPDATED, "updated"),
                    Outcome::Unchanged => ("", ""),
                };
                if o != Outcome::Unchanged {
                    self.event(EventType::Normal, r, format!("HorizontalPodAutoscaler {name} {msg}"))
                        .await;
                }
            }
            None => {
                if ctx
                    .stores
                    .hpas
                    .get(&ObjectRef::new(&name).within(&ns))
                    .is_some_and(|h| objects::owned_by(h.meta(), f))
                {
                    objects::delete::<HorizontalPodAutoscaler>(ctx, &ns, &name).await?;
                }
            }
        }
        self.status.pod_selector = Some(desired::pod_selector(f));
        self.status.replicas = Some(dep.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        let (st, r, msg) = deployment_state(&dep);
        let ready = st == Status::True;
        self.set(condition::RUNNING, st, r, msg);
        // Kyma's objects for this Function, on a cluster taken over in place.
        takeover::retire_others(ctx, f, ready).await?;
        Ok(())
    }
}

/// Running's status, reason and message from a Deployment.
pub fn deployment_state(d: &Deployment) -> (Status, &'static str, String) {
    let name = d.name_any();
    let Some(st) = &d.status else {
        return (
            Status::Unknown,
            reason::DEPLOYMENT_WAITING,
            format!("Deployment {name} has no status yet"),
        );
    };
    if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return (
            Status::Unknown,
            reason::DEPLOYMENT_WAITING,
            format!("Deployment {name}: waiting for the rollout to start"),
        );
    }
    let cond = |t: &str| st.conditions.iter().flatten().find(|c| c.type_.as_deref() == Some(t));
    if let Some(p) = cond("Progressing") {
        if p.status.as_deref() == Some(Status::False.as_str()) {
            let why = p.message.clone().unwrap_or_default();
            return (
                Status::False,
                reason::DEPLOYMENT_FAILED,
                format!("Deployment {name} is not progressing: {why}"),
            );
        }
    }
    let want = d.spec.replicas.unwrap_or(1);
    let available = st.available_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    if cond("Available").is_some_and(|c| c.status.as_deref() == Some(Status::True.as_str()))
        && updated >= want
        && available >= want
    {
        return (
            Status::True,
            reason::DEPLOYMENT_READY,
            format!("Deployment {name} is ready ({available} of {want} replicas available)"),
        );
    }
    // Kyma's "unhealthy": Pods that ran went away (crashes, evictions), below the minimum.
    if cond("Available").is_some_and(|c| {
        c.status.as_deref() == Some(Status::False.as_str()) && c.reason.as_deref() == Some("MinimumReplicasUnavailable")
    }) {
        return (
            Status::Unknown,
            reason::MIN_REPLICAS_NOT_AVAILABLE,
            format!("Minimum replicas not available for deployment {name} ({available} of {want} available)"),
        );
    }
    (
        Status::Unknown,
        reason::DEPLOYMENT_WAITING,
        format!("Deployment {name}: {available} of {want} replicas available, {updated} updated"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};

    #[test]
    fn running_from_deployment() {
        let mut d = Deployment {
            spec: DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        d.metadata.name = Some("f".into());
        d.metadata.generation = Some(2);
        assert_eq!(deployment_state(&d).0, Status::Unknown);
        let avail = DeploymentCondition {
            type_: Some("Available".into()),
            status: Some("True".into()),
            ..Default::default()
        };
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            available_replicas: Some(2),
            updated_replicas: Some(2),
            conditions: Some(vec![avail.clone()]),
            ..Default::default()
        });
        assert_eq!(deployment_state(&d).1, reason::DEPLOYMENT_WAITING, "old generation");
        d.status.as_mut().unwrap().observed_generation = Some(2);
        let (st, r, msg) = deployment_state(&d);
        assert_eq!((st, r), (Status::True, reason::DEPLOYMENT_READY));
        assert_eq!(msg, "Deployment f is ready (2 of 2 replicas available)");
        d.status.as_mut().unwrap().available_replicas = Some(1);
        assert_eq!(deployment_state(&d).0, Status::Unknown);
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: Some("Available".into()),
            status: Some("False".into()),
            reason: Some("MinimumReplicasUnavailable".into()),
            ..Default::default()
        }]);
        assert_eq!(
            deployment_state(&d),
            (
                Status::Unknown,
                reason::MIN_REPLICAS_NOT_AVAILABLE,
                "Minimum replicas not available for deployment f (1 of 2 available)".into()
            )
        );
        d.status.as_mut().unwrap().conditions = Some(vec![
            avail,
            DeploymentCondition {
                type_: Some("Progressing".into()),
                status: Some("False".into()),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("too slow".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(
            deployment_state(&d),
            (
                Status::False,
                reason::DEPLOYMENT_FAILED,
                "Deployment f is not progressing: too slow".into()
            )
        );
    }
}

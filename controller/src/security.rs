//! The security contexts of a Function's Pods, as Kyma's controller makes them: restricted
//! defaults, and each field of `spec.podSecurityContext` / `spec.containerSecurityContext` in
//! place of the default for it. The results are echoed in the Function's status.
//! (Build Pods keep their own, fixed, contexts: `desired::restricted_*`.)

use super::desired::RUN_AS_USER;
use super::types::Function;
use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};
use serde::{de::DeserializeOwned, Serialize};

/// The Pod's: uid, gid, fsGroup and supplementalGroups 1000 (the runtimes' user), non-root, the
/// runtime's default seccomp profile.
pub fn function_pod(f: &Function) -> PodSecurityContext {
    let base = PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        supplemental_groups: Some(vec![RUN_AS_USER]),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    };
    overlay(base, f.spec.pod_security_context.as_ref())
}

/// The container's: not privileged, no capabilities, a read-only root filesystem, no privilege
/// escalation, non-root. No uid here: the Pod's (or the user's) applies.
pub fn function_container(f: &Function) -> SecurityContext {
    let base = SecurityContext {
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        ..Default::default()
    };
    overlay(base, f.spec.container_security_context.as_ref())
}

/// `base` with every top-level field `custom` sets taken from `custom` (a whole field, as
/// Kyma's: `capabilities: {add: [NET_ADMIN]}` replaces the default's `drop: [ALL]`).
fn overlay<T: Serialize + DeserializeOwned + Clone>(base: T, custom: Option<&T>) -> T {
    let Some(custom) = custom else { return base };
    let (Ok(serde_json::Value::Object(mut b)), Ok(serde_json::Value::Object(c))) =
        (serde_json::to_value(&base), serde_json::to_value(custom))
    else {
        return base;
    };
    b.extend(c);
    serde_json::from_value(serde_json::Value::Object(b)).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn function(spec: serde_json::Value) -> Function {
        let mut s = json!({"runtime": "nodejs24", "source": {"inline": {"source": "x"}}});
        s.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        serde_json::from_value(
            json!({"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
            "metadata": {"name": "f"}, "spec": s}),
        )
        .unwrap()
    }

    #[test]
    fn defaults_are_kymas_restricted_ones() {
        let f = function(json!({}));
        assert_eq!(
            serde_json::to_value(function_pod(&f)).unwrap(),
            json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                   "supplementalGroups": [1000], "seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            serde_json::to_value(function_container(&f)).unwrap(),
            json!({"privileged": false, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true,
                   "allowPrivilegeEscalation": false, "runAsNonRoot": true})
        );
    }

    #[test]
    fn the_users_fields_replace_the_defaults_for_them_and_only_them() {
        let f = function(json!({
            "podSecurityContext": {"runAsUser": 2000, "fsGroupChangePolicy": "OnRootMismatch"},
            "containerSecurityContext": {"readOnlyRootFilesystem": false, "capabilities": {"add": ["NET_BIND_SERVICE"]}}
        }));
        let pod = function_pod(&f);
        assert_eq!(pod.run_as_user, Some(2000));
        assert_eq!(pod.run_as_group, Some(1000));
        assert_eq!(pod.fs_group_change_policy.as_deref(), Some("OnRootMismatch"));
        assert_eq!(pod.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = function_container(&f);
        assert_eq!(c.read_only_root_filesystem, Some(false));
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(
            c.capabilities,
            Some(Capabilities {
                add: Some(vec!["NET_BIND_SERVICE".into()]),
                drop: None
            })
        );
        assert_eq!(c.run_as_user, None, "the Pod's uid (2000) applies to the container");
    }
}

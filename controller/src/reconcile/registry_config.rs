//! Kyma's registry configuration: the Secret `serverless-registry-config-default` in the
//! controller's namespace (`--registry-config-namespace`) is copied into each namespace that has
//! Functions, and the keys of the namespace's copy decide where its builds push and its Pods
//! pull, over the flags (as Kyma's `readDockerConfig`: `isInternal: "true"` → `pushRegAddr` /
//! `pullRegAddr`, otherwise `registryAddress` for both).
//!
//! A namespace's own Secret of that name (one that is neither a copy of ours nor of Kyma's, or
//! one labelled `serverless.kyma-project.io/managed-by: user`) is left as it is, and used.

use super::super::desired::{LABEL_MANAGED_BY, MANAGED_BY};
use super::super::settings::Settings;
use super::Context;
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Kyma's label on the registry Secret it copies (and on its copies).
pub const LABEL_CONFIG: &str = "serverless.kyma-project.io/config";
pub const CONFIG_CREDENTIALS: &str = "credentials";
/// The managed-by value that keeps a namespace's Secret out of the copying (Kyma's).
pub const MANAGED_BY_USER: &str = "user";

/// Where a namespace's builds push and its Pods pull, from its registry Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub push: String,
    pub pull: String,
    /// Kyma's in-cluster registry (`isInternal: "true"`) is plain HTTP.
    pub internal: bool,
}

fn value(s: &Secret, key: &str) -> Option<String> {
    let v = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key)).cloned())?;
    Some(v.trim().to_string()).filter(|v| !v.is_empty())
}

impl RegistryConfig {
    /// The addresses a registry Secret names; `None` when it names none (the flags apply).
    pub fn of(s: &Secret) -> Option<RegistryConfig> {
        if value(s, "isInternal").as_deref() == Some("true") {
            let push = value(s, "pushRegAddr")?;
            let pull = value(s, "pullRegAddr").unwrap_or_else(|| push.clone());
            return Some(RegistryConfig {
                push,
                pull,
                internal: true,
            });
        }
        let addr = value(s, "registryAddress")?;
        Some(RegistryConfig {
            push: addr.clone(),
            pull: addr,
            internal: false,
        })
    }

    /// The settings with these addresses in place of the flags'.
    pub fn apply(&self, s: &mut Settings) {
        s.registry_push_address = self.push.clone();
        s.registry_pull_address = self.pull.clone();
        if self.internal {
            let host = s.push_registry_host().to_string();
            if !s.insecure_registries.contains(&host) {
                s.insecure_registries.push(host);
            }
        }
    }
}

/// The copy of `base` for another namespace: its type, data, labels and annotations. A base
/// with `username` and `password` but no `.dockerconfigjson` (how Kyma's external-registry
/// configuration is written) gets one made from them, for `serverAddress` (or
/// `registryAddress`), so the build and the kubelet can log in.
pub fn copy_of(base: &Secret, ns: &str) -> Secret {
    let mut data: BTreeMap<String, ByteString> = base.data.clone().unwrap_or_default();
    for (k, v) in base.string_data.clone().unwrap_or_default() {
        data.insert(k, ByteString(v.into_bytes()));
    }
    let mut type_ = base.type_.clone();
    if !data.contains_key(".dockerconfigjson") {
        let server = value(base, "serverAddress").or_else(|| value(base, "registryAddress"));
        if let (Some(user), Some(password), Some(server)) = (value(base, "username"), value(base, "password"), server) {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let config = serde_json::json!({"auths": {server: {"username": user, "password": password, "auth": auth}}});
            data.insert(".dockerconfigjson".into(), ByteString(config.to_string().into_bytes()));
            type_ = Some("kubernetes.io/dockerconfigjson".into());
        }
    }
    let mut labels = base.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    Secret {
        metadata: kube::api::ObjectMeta {
            name: base.metadata.name.clone(),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            annotations: base.metadata.annotations.clone(),
            ..Default::default()
        },
        data: Some(data),
        type_,
        ..Default::default()
    }
}

/// Whether a namespace's Secret is a copy (ours, or Kyma's) that follows the base.
pub fn follows_base(s: &Secret) -> bool {
    let labels = s.labels();
    let managed_by = labels.get(LABEL_MANAGED_BY).map(String::as_str);
    managed_by != Some(MANAGED_BY_USER)
        && (managed_by == Some(MANAGED_BY) || labels.get(LABEL_CONFIG).map(String::as_str) == Some(CONFIG_CREDENTIALS))
}

/// Whether `copy` already is what `want` would write.
fn same(copy: &Secret, want: &Secret) -> bool {
    copy.data == want.data
        && copy.type_ == want.type_
        && copy.metadata.labels == want.metadata.labels
        && copy.metadata.annotations == want.metadata.annotations
}

/// The settings for a reconcile in namespace `ns`: the namespace's registry Secret, copied from
/// the base when there is one, and the addresses it names in place of the flags'.
/// When the namespace's Secret cannot be read, the flags apply (and a warning says why).
pub(super) async fn settings_for(ctx: &Context, ns: &str) -> Settings {
    let mut settings = ctx.settings.clone();
    let name = &ctx.settings.registry_secret;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut own = match secrets.get_opt(name).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(namespace = %ns, secret = %name, error = %e, "cannot read the registry configuration; using the flags");
            return settings;
        }
    };
    let base = ctx.registry_base.as_ref().and_then(|store| {
        store
            .state()
            .into_iter()
            .find(|s| s.metadata.name.as_ref() == Some(name))
    });
    let base_ns = &ctx.settings.registry_config_namespace;
    if let Some(base) = base.filter(|_| ns != base_ns) {
        let want = copy_of(&base, ns);
        let write = match &own {
            None => Some(secrets.create(&PostParams::default(), &want).await),
            Some(s) if follows_base(s) && !same(s, &want) => {
                let mut updated = want.clone();
                updated.metadata.resource_version = s.metadata.resource_version.clone();
                Some(secrets.replace(name, &PostParams::default(), &updated).await)
            }
            Some(_) => None,
        };
        match write {
            Some(Ok(s)) => {
                ctx.wrote();
                tracing::info!(namespace = %ns, secret = %name, from = %base_ns, "copied the registry configuration");
                own = Some(s);
            }
            Some(Err(e)) => {
                // An older ClusterRole, or a race with another reconcile: what the namespace has
                // (or the flags) applies this time, and the next reconcile tries again.
                tracing::warn!(namespace = %ns, secret = %name, error = %e, "cannot copy the registry configuration");
            }
            None => {}
        }
    }
    if let Some(config) = own.as_ref().and_then(RegistryConfig::of) {
        config.apply(&mut settings);
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(labels: &[(&str, &str)], data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("serverless-registry-config-default".into()),
                namespace: Some("serverless-system".into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn kymas_keys_decide_the_addresses() {
        let internal = secret(
            &[],
            &[
                ("isInternal", "true"),
                ("pushRegAddr", "10.1.2.3:5000"),
                ("pullRegAddr", "localhost:32137"),
                ("registryAddress", "ignored"),
            ],
        );
        assert_eq!(
            RegistryConfig::of(&internal),
            Some(RegistryConfig {
                push: "10.1.2.3:5000".into(),
                pull: "localhost:32137".into(),
                internal: true
            })
        );
        let external = secret(
            &[],
            &[
                ("isInternal", "false"),
                ("registryAddress", "registry.example.com/team"),
            ],
        );
        let c = RegistryConfig::of(&external).unwrap();
        assert_eq!(
            (c.push.as_str(), c.pull.as_str(), c.internal),
            ("registry.example.com/team", "registry.example.com/team", false)
        );
        assert_eq!(
            RegistryConfig::of(&secret(&[], &[(".dockerconfigjson", "{}")])),
            None,
            "no keys: the flags"
        );

        let mut s = Settings::default();
        RegistryConfig::of(&internal).unwrap().apply(&mut s);
        assert_eq!(s.registry_push_address, "10.1.2.3:5000");
        assert_eq!(s.registry_pull_address, "localhost:32137");
        assert_eq!(
            s.insecure_registries,
            ["10.1.2.3:5000"],
            "Kyma's internal registry is plain HTTP"
        );
    }

    #[test]
    fn a_copy_carries_the_data_and_logs_in_with_username_and_password() {
        let base = secret(
            &[(LABEL_CONFIG, CONFIG_CREDENTIALS)],
            &[
                ("username", "u"),
                ("password", "p"),
                ("serverAddress", "reg.example.com"),
                ("registryAddress", "reg.example.com/x"),
            ],
        );
        let copy = copy_of(&base, "team-a");
        assert_eq!(copy.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(copy.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        let data = copy.data.as_ref().unwrap();
        assert_eq!(data["username"].0, b"u");
        let config: serde_json::Value = serde_json::from_slice(&data[".dockerconfigjson"].0).unwrap();
        assert_eq!(config["auths"]["reg.example.com"]["auth"], "dTpw");
        assert!(follows_base(&copy));
        assert!(same(&copy, &copy_of(&base, "team-a")));

        // One that has .dockerconfigjson keeps it and its type.
        let mut with_config = secret(
            &[],
            &[
                (".dockerconfigjson", "{\"auths\":{}}"),
                ("username", "u"),
                ("password", "p"),
            ],
        );
        with_config.type_ = Some("kubernetes.io/dockerconfigjson".into());
        let copy = copy_of(&with_config, "b");
        assert_eq!(copy.data.unwrap()[".dockerconfigjson"].0, b"{\"auths\":{}}");
    }

    #[test]
    fn a_namespaces_own_secret_is_left_alone() {
        assert!(
            follows_base(&secret(&[(LABEL_CONFIG, CONFIG_CREDENTIALS)], &[])),
            "Kyma's copy"
        );
        assert!(follows_base(&secret(&[(LABEL_MANAGED_BY, MANAGED_BY)], &[])), "ours");
        assert!(!follows_base(&secret(&[], &[])), "the namespace's own");
        assert!(!follows_base(&secret(
            &[(LABEL_CONFIG, CONFIG_CREDENTIALS), (LABEL_MANAGED_BY, MANAGED_BY_USER)],
            &[]
        )));
    }
}

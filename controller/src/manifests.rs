//! `fnbuild-controller manifests`: everything the controller needs on a cluster, as one YAML stream for
//! `kubectl apply -f -`: Namespace, the Function CRD, least-privilege RBAC, the webhook's TLS
//! Secret (when a certificate is given), Service, the controller's Deployment, and the validating
//! webhook configuration (there is no mutating one: defaults are never written into a Function).
//! Only APIs Kubernetes 1.20 serves are used.

use super::settings::Settings;
use super::types::{GROUP, VERSION};
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, LocalObjectReference, Namespace, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext,
    Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use std::collections::BTreeMap;

pub const NAME: &str = "fnbuild-controller";
pub const WEBHOOK_PORT: i32 = 8443;
pub const METRICS_PORT: i32 = 8080;
/// Push events from git hosts (`fnbuild-controller run --git-webhook-addr`).
pub const GIT_WEBHOOK_PORT: i32 = 8082;
pub const MUTATE_PATH: &str = "/mutate-function";
pub const VALIDATE_PATH: &str = "/validate-function";
const CERT_DIR: &str = "/etc/fnbuild/webhook";

/// What the manifests are made from.
#[derive(Debug, Clone)]
pub struct ManifestOptions {
    /// The controller's namespace.
    pub namespace: String,
    /// The controller's image (with the fnbuild binary).
    pub image: String,
    /// The controller's flags.
    pub settings: Settings,
    /// The webhook server's certificate and key (PEM): put into a Secret, and the certificate
    /// is the webhooks' CA bundle unless `ca_bundle` is given. Without them, the Secret
    /// `fnbuild-controller-webhook-tls` must be made by other means (e.g. cert-manager).
    pub tls_cert: Option<Vec<u8>>,
    pub tls_key: Option<Vec<u8>>,
    /// The CA bundle (PEM) the API server verifies the webhook server with.
    pub ca_bundle: Option<Vec<u8>>,
    /// Call the webhooks at this base URL (`https://HOST:PORT`) instead of through the Service
    /// (a controller running outside the cluster, as in tests).
    pub webhook_url: Option<String>,
    /// The cluster's Kubernetes minor version (1.x): from 1.25 on, the CRD carries Kyma's CEL
    /// rules, which older API servers do not know.
    pub kubernetes_minor: u32,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        ManifestOptions {
            namespace: "serverless-system".into(),
            image: "fnbuild:latest".into(),
            settings: Settings::default(),
            tls_cert: None,
            tls_key: None,
            ca_bundle: None,
            webhook_url: None,
            kubernetes_minor: super::validation::cel::FIRST_MINOR,
        }
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), NAME.to_string()),
        ("app.kubernetes.io/part-of".to_string(), "fnbuild".to_string()),
    ])
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(String::from),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// What the controller may do, and nothing more.
pub fn cluster_role(settings: &Settings) -> ClusterRole {
    let rw = ["get", "list", "watch", "create", "update", "patch", "delete"];
    ClusterRole {
        metadata: meta(NAME, None),
        rules: Some(vec![
            rule(&[GROUP], &["functions"], &["get", "list", "watch", "update", "patch"]),
            rule(&[GROUP], &["functions/status"], &["get", "update", "patch"]),
            // Owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
            rule(&[GROUP], &["functions/finalizers"], &["update"]),
            rule(&[""], &["configmaps", "services"], &rw),
            rule(&["apps"], &["deployments"], &rw),
            rule(&["autoscaling"], &["horizontalpodautoscalers"], &rw),
            rule(&["batch"], &["jobs"], &["get", "list", "watch", "create", "delete"]),
            // The build's digest is in its Pod's termination message; the log tail when it is not.
            rule(&[""], &["pods"], &["get", "list"]),
            rule(&[""], &["pods/log"], &["get"]),
            // The nodes' architectures: what build Jobs build for (without --build-platforms).
            rule(&[""], &["nodes"], &["list"]),
            // Any Secret by name (never a list or a watch): a Function from git names its auth
            // Secret (Kyma's `auth.secretName`), read for `git ls-remote`; besides the
            // package-registry and cache key Secrets, asked whether they are there.
            rule(&[""], &["secrets"], &["get"]),
            // The registry Secret: watched in the controller's namespace (a watch of that one
            // name), copied into and kept up to date in the namespaces with Functions.
            PolicyRule {
                resource_names: strings(&[&settings.registry_secret]),
                ..rule(&[""], &["secrets"], &["get", "list", "watch", "update"])
            },
            // The git webhook's Secrets (one name, in every namespace): watched, so that a push
            // event is checked against the cache, and no request makes the controller read one.
            PolicyRule {
                resource_names: strings(&[crate::git_webhook::SECRET_NAME]),
                ..rule(&[""], &["secrets"], &["list", "watch"])
            },
            // The dependency cache's signing key and the registry Secret's copies, made once per
            // namespace (create cannot be limited to a name; the controller never reads or
            // updates other Secrets).
            rule(&[""], &["secrets"], &["create"]),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            rule(&[""], &["events"], &["create", "patch"]),
        ]),
        ..Default::default()
    }
}

fn webhook_client(o: &ManifestOptions, path: &str) -> WebhookClientConfig {
    let ca = o.ca_bundle.clone().or_else(|| o.tls_cert.clone()).map(ByteString);
    match &o.webhook_url {
        Some(base) => WebhookClientConfig {
            url: Some(format!("{}{path}", base.trim_end_matches('/'))),
            ca_bundle: ca,
            service: None,
        },
        None => WebhookClientConfig {
            service: Some(ServiceReference {
                name: NAME.into(),
                namespace: o.namespace.clone(),
                path: Some(path.into()),
                port: Some(443),
            }),
            ca_bundle: ca,
            url: None,
        },
    }
}

fn function_rules() -> Option<Vec<RuleWithOperations>> {
    Some(vec![RuleWithOperations {
        api_groups: strings(&[GROUP]),
        api_versions: strings(&[VERSION]),
        operations: strings(&["CREATE", "UPDATE"]),
        resources: strings(&["functions"]),
        scope: Some("Namespaced".into()),
    }])
}

pub fn validating_webhook(o: &ManifestOptions) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: meta(NAME, None),
        webhooks: Some(vec![ValidatingWebhook {
            name: "validation.functions.serverless.kyma-project.io".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: webhook_client(o, VALIDATE_PATH),
            // Ignore: an outage of the controller does not stop `kubectl apply` or a GitOps sync
            // (Kyma's rules need no webhook either); the reconciler validates every Function
            // again before it builds, so one admitted meanwhile is reported, never built.
            failure_policy: Some("Ignore".into()),
            match_policy: Some("Equivalent".into()),
            rules: function_rules(),
            side_effects: "None".into(),
            timeout_seconds: Some(10),
            ..Default::default()
        }]),
    }
}

fn deployment(o: &ManifestOptions) -> Deployment {
    let mut args = vec![
        "run".to_string(),
        "--log-format".into(),
        "json".into(),
        format!("--webhook-addr=0.0.0.0:{WEBHOOK_PORT}"),
        format!("--metrics-addr=0.0.0.0:{METRICS_PORT}"),
        format!("--git-webhook-addr=0.0.0.0:{GIT_WEBHOOK_PORT}"),
        format!("--tls-cert={CERT_DIR}/tls.crt"),
        format!("--tls-key={CERT_DIR}/tls.key"),
    ];
    args.extend(o.settings.to_args());
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        ..Default::default()
    };
    let q = |cpu: &str, mem: &str| {
        Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
        ]))
    };
    let container = Container {
        name: "controller".into(),
        image: Some(o.image.clone()),
        command: Some(vec!["fnbuild-controller".into()]),
        args: Some(args),
        // HOME and TMPDIR in the emptyDir at /tmp: `git ls-remote` of a Function from git
        // writes its credentials' private files there (the root filesystem is read-only).
        env: Some(vec![
            super::desired::env("DOCKER_CONFIG", "/docker-config"),
            super::desired::env("HOME", "/tmp"),
            super::desired::env("TMPDIR", "/tmp"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("webhook".into()),
                container_port: WEBHOOK_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("git-webhook".into()),
                container_port: GIT_WEBHOOK_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        readiness_probe: Some(probe("/healthz")),
        liveness_probe: Some(probe("/healthz")),
        resources: Some(ResourceRequirements {
            requests: q("50m", "64Mi"),
            limits: q("500m", "256Mi"),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: strings(&["ALL"]),
                add: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "webhook-tls".into(),
                mount_path: CERT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "registry-config".into(),
                mount_path: "/docker-config".into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    Deployment {
        metadata: meta(NAME, Some(&o.namespace)),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    // The controller's image is the builder's, maybe in the same private registry.
                    image_pull_secrets: Some(vec![LocalObjectReference {
                        name: o.settings.registry_secret.clone(),
                    }]),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "webhook-tls".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(format!("{NAME}-webhook-tls")),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        super::desired::docker_config_volume("registry-config", &o.settings.registry_secret),
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(Default::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn service(o: &ManifestOptions) -> Service {
    let port = |name: &str, port: i32, target: &str| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(target.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: meta(NAME, Some(&o.namespace)),
        spec: Some(ServiceSpec {
            selector: Some(labels()),
            ports: Some(vec![
                port("webhook", 443, "webhook"),
                port("metrics", METRICS_PORT, "metrics"),
                // What an Ingress for the git hosts' push events points at.
                port("git-webhook", GIT_WEBHOOK_PORT, "git-webhook"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// All objects, in the order `kubectl apply` needs them, as JSON values.
pub fn objects(o: &ManifestOptions) -> Vec<serde_json::Value> {
    let v = |x: serde_json::Result<serde_json::Value>| x.expect("Kubernetes objects serialise");
    let mut out = vec![
        v(serde_json::to_value(Namespace {
            metadata: meta(&o.namespace, None),
            ..Default::default()
        })),
        crd(o),
        v(serde_json::to_value(ServiceAccount {
            metadata: meta(NAME, Some(&o.namespace)),
            ..Default::default()
        })),
        v(serde_json::to_value(cluster_role(&o.settings))),
        v(serde_json::to_value(ClusterRoleBinding {
            metadata: meta(NAME, None),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: NAME.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: NAME.into(),
                namespace: Some(o.namespace.clone()),
                api_group: None,
            }]),
        })),
    ];
    if let (Some(cert), Some(key)) = (&o.tls_cert, &o.tls_key) {
        out.push(v(serde_json::to_value(Secret {
            metadata: meta(&format!("{NAME}-webhook-tls"), Some(&o.namespace)),
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), ByteString(cert.clone())),
                ("tls.key".to_string(), ByteString(key.clone())),
            ])),
            ..Default::default()
        })));
    }
    out.push(v(serde_json::to_value(service(o))));
    out.push(v(serde_json::to_value(deployment(o))));
    out.push(v(serde_json::to_value(validating_webhook(o))));
    out
}

/// The Function CRD, with Kyma's CEL rules where the API server evaluates them.
fn crd(o: &ManifestOptions) -> serde_json::Value {
    let mut crd = serde_json::to_value(super::types::crd()).expect("the CRD serialises");
    if o.kubernetes_minor >= super::validation::cel::FIRST_MINOR {
        super::validation::cel::add_to_crd(&mut crd);
    }
    crd
}

/// The YAML stream (`---` between documents).
pub fn render(o: &ManifestOptions) -> Result<String, String> {
    let mut out = String::new();
    for obj in objects(o) {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&obj).map_err(|e| e.to_string())?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_in_apply_order() {
        let o = ManifestOptions {
            tls_cert: Some(b"CERT".to_vec()),
            tls_key: Some(b"KEY".to_vec()),
            ..Default::default()
        };
        let kinds: Vec<String> = objects(&o)
            .iter()
            .map(|v| v["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "CustomResourceDefinition",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Secret",
                "Service",
                "Deployment",
                "ValidatingWebhookConfiguration"
            ]
        );
        let all = objects(&o);
        let api: Vec<&str> = all.iter().map(|v| v["apiVersion"].as_str().unwrap()).collect();
        for a in &api {
            assert!(
                [
                    "v1",
                    "apiextensions.k8s.io/v1",
                    "rbac.authorization.k8s.io/v1",
                    "apps/v1",
                    "admissionregistration.k8s.io/v1"
                ]
                .contains(a),
                "{a} is not served by Kubernetes 1.20"
            );
        }
        assert_eq!(
            all.len(),
            9,
            "no MutatingWebhookConfiguration: defaults are not written into Functions"
        );
        let mwh = &all[8]["webhooks"][0];
        assert_eq!(mwh["clientConfig"]["service"]["path"], VALIDATE_PATH);
        assert_eq!(mwh["clientConfig"]["caBundle"], "Q0VSVA==");
        assert_eq!(mwh["admissionReviewVersions"], serde_json::json!(["v1"]));
        assert_eq!(mwh["sideEffects"], "None");
        assert_eq!(mwh["failurePolicy"], "Ignore");
        let secret = &all[5];
        assert_eq!(secret["data"]["tls.key"], "S0VZ");
        let pod = &all[7]["spec"]["template"]["spec"];
        // A read-only root with an emptyDir at /tmp (HOME, TMPDIR: git ls-remote's files).
        assert_eq!(pod["volumes"][2], serde_json::json!({"name": "tmp", "emptyDir": {}}));
        assert_eq!(pod["containers"][0]["volumeMounts"][2]["mountPath"], "/tmp");
        assert_eq!(
            pod["imagePullSecrets"],
            serde_json::json!([{"name": "serverless-registry-config-default"}])
        );
    }

    #[test]
    fn the_crd_carries_kymas_cel_rules_from_kubernetes_1_25() {
        let crd_of = |minor| {
            let all = objects(&ManifestOptions {
                kubernetes_minor: minor,
                ..Default::default()
            });
            let crd = all
                .into_iter()
                .find(|o| o["kind"] == "CustomResourceDefinition")
                .unwrap();
            crd.to_string()
        };
        assert!(crd_of(25).contains("x-kubernetes-validations"));
        assert!(crd_of(30).contains("Following envs are reserved"));
        assert!(!crd_of(24).contains("x-kubernetes-validations"));
        assert!(!crd_of(20).contains("x-kubernetes-validations"));
    }

    #[test]
    fn url_webhooks_for_out_of_cluster_controllers() {
        let o = ManifestOptions {
            webhook_url: Some("https://127.0.0.1:9443/".into()),
            ..Default::default()
        };
        let v = serde_json::to_value(validating_webhook(&o)).unwrap();
        assert_eq!(
            v["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:9443/validate-function"
        );
        assert!(v["webhooks"][0]["clientConfig"].get("service").is_none());
        assert!(v["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    }

    #[test]
    fn rbac_is_least_privilege() {
        let role = serde_json::to_value(cluster_role(&Settings::default())).unwrap();
        let rules = role["rules"].as_array().unwrap();
        for r in rules {
            let verbs: Vec<&str> = r["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert!(!verbs.contains(&"*"), "no wildcards");
            let res: Vec<&str> = r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            if res.contains(&"secrets") {
                // Getting Secrets by name (git auth Secrets are named by Functions), listing and
                // watching one, updating one (the registry Secret's copies), listing and watching
                // the git webhook's; creating (the cache key, the copies); never deleting any,
                // nor listing or watching others.
                if verbs == ["create"] || verbs == ["get"] {
                    assert!(r["resourceNames"].is_null());
                } else if verbs == ["list", "watch"] {
                    assert_eq!(r["resourceNames"], serde_json::json!(["fnbuild-git-webhook"]));
                } else {
                    assert_eq!(verbs, ["get", "list", "watch", "update"]);
                    assert_eq!(
                        r["resourceNames"],
                        serde_json::json!(["serverless-registry-config-default"])
                    );
                }
            }
            if res.contains(&"pods") {
                assert!(!verbs.contains(&"create") && !verbs.contains(&"delete"));
            }
        }
    }

    #[test]
    fn yaml_stream() {
        let y = render(&ManifestOptions::default()).unwrap();
        assert!(y.starts_with("---\n"));
        assert_eq!(y.matches("\n---\n").count() + 1, 8);
        assert!(y.contains("kind: CustomResourceDefinition"));
        assert!(y.contains("name: functions.serverless.kyma-project.io"));
    }
}

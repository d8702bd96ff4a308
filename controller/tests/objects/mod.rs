//! The controller's desired objects, for the schema checks of tests/manifests_schema.rs and
//! tests/controller_cluster.rs.

/// Every kind of object the controller creates for a Function, for schema checks: a Node
/// Function with every optional part switched on (Secret mounts, Pod labels and annotations,
/// `.npmrc`, a HorizontalPodAutoscaler) and a Python one with explicit resources, a `pip.conf`
/// and fixed replicas.
#[allow(dead_code)] // not every test that includes this module uses it
pub fn desired_objects() -> Vec<serde_json::Value> {
    use fnbuild_controller::defaults::apply_defaults;
    use fnbuild_controller::desired;
    use fnbuild_controller::settings::Settings;
    use fnbuild_controller::types::Function;
    use serde_json::json;

    let node = json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": "dry", "namespace": "default", "uid": "6b3f0e39-1111-2222-3333-444455556666"},
        "spec": {
            "runtime": "nodejs20",
            "source": {"inline": {
                "source": "module.exports = { main: (event, context) => 'hello' }",
                "dependencies": "{\"name\": \"hello\", \"version\": \"1.0.0\", \"dependencies\": {}}"
            }},
            "env": [{"name": "GREETING", "value": "hi"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
            "scaleConfig": {"minReplicas": 1, "maxReplicas": 3},
            "secretMounts": [{"secretName": "creds", "mountPath": "/etc/creds"}],
            "labels": {"team": "a"},
            "annotations": {"example.com/a": "b"}
        }
    });
    let python = json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": "py", "namespace": "default", "uid": "0d6e1c7a-5555-6666-7777-888899990000"},
        "spec": {
            "runtime": "python312",
            "source": {"inline": {"source": "def main(event, context):\n    return 'hi'\n", "dependencies": "six==1.16.0\n"}},
            "replicas": 2,
            "resourceConfiguration": {
                "build": {"profile": "fast"},
                "function": {"resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                           "limits": {"cpu": "100m", "memory": "128Mi"}}}
            }
        }
    });
    let s = Settings {
        insecure_registries: vec![Settings::default().push_registry_host().to_string()],
        base_images: [("nodejs20".to_string(), "reg:5000/node:20".to_string())].into(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for (value, npmrc, pip_conf) in [(node, true, false), (python, false, true)] {
        let mut f: Function = serde_json::from_value(value).expect("a valid Function");
        apply_defaults(&mut f.spec);
        let (base, base_flag) = desired::base_image(&f, &s);
        let b = desired::BuildInputs {
            tag: desired::image_tag(&f, &base, None, &[]),
            attempt: 1,
            base: base_flag,
            npmrc,
            pip_conf,
            cache_key: true,
            git: None,
            install_step: desired::names_packages(&f),
            platforms: Vec::new(),
        };
        let image = desired::pull_image(&f, &s, &format!("sha256:{}", "cd".repeat(32)));
        let mut objects = vec![
            serde_json::to_value(desired::config_map(&f)).unwrap(),
            serde_json::to_value(desired::build_job(&f, &s, &b)).unwrap(),
            serde_json::to_value(desired::deployment(&f, &s, &image)).unwrap(),
            serde_json::to_value(desired::service(&f)).unwrap(),
        ];
        objects.extend(desired::hpa(&f, &s).map(|h| serde_json::to_value(h).unwrap()));
        out.extend(objects);
    }
    out
}

//! Scenarios of issue 19 (Kyma Functions move over unchanged) against the real API server, run
//! by `controller_against_a_real_api_server` in controller_cluster.rs: what Kyma users' manifests
//! and tools (kubectl diff, Argo CD, Flux) see.

use super::*;
use k8s_openapi::api::core::v1::Secret;

/// Kyma's docs sample (docs/user/technical-reference/07-10-sample-functions.md, CommonJS), with
/// only the namespace added: runtime nodejs24, no replicas, no resources.
fn kyma_docs_sample(ns: &str) -> serde_json::Value {
    json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": "test-function-nodejs-cjs", "namespace": ns},
        "spec": {
            "runtime": "nodejs24",
            "source": {"inline": {
                "dependencies": "{\n  \"name\": \"test-function-nodejs\",\n  \"version\": \"1.0.0\",\n  \"dependencies\": {\n    \"lodash\":\"^4.17.20\"\n  }\n}\n",
                "source": "const _ = require('lodash')\nmodule.exports = {\n  main: function(event, context) {\n    return _.kebabCase('Hello World from Node.js Function');\n  }\n}\n"
            }}
        }
    })
}

/// No spec drift: a manifest applied twice, as Argo CD or Flux do, changes nothing; the
/// controller never writes into `spec`, and reports the profiles in use in status instead.
pub async fn no_spec_drift(cluster: &Cluster, client: &Client) {
    let ns = &run_ns("ctl-d");
    namespace(client, ns).await;
    let sample = kyma_docs_sample(ns);
    let name = "test-function-nodejs-cjs";
    let out = cluster.kubectl_ok(&["apply", "-f", "-"], Some(&sample.to_string()));
    assert!(out.contains("created"), "{out}");

    // Explicit build resources: status says `custom`, as Kyma's does.
    // And Kyma's security-context fields (today's Kyma), merged over the defaults.
    let mut custom = hello(ns, "custom");
    custom["spec"]["resourceConfiguration"] = json!({"build": {"resources": {
        "requests": {"cpu": "300m", "memory": "300Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}});
    custom["spec"]["podSecurityContext"] = json!({"runAsUser": 2000, "runAsGroup": 3000});
    custom["spec"]["containerSecurityContext"] = json!({"readOnlyRootFilesystem": false});
    custom["spec"]["annotations"] = json!({"team.example.com/owner": "a"});
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&custom.to_string()));

    // The controller has done its part: ConfigMap, Job, status.
    for (fname, function_profile, build_profile) in [(name, "L", "normal"), ("custom", "L", "custom")] {
        let f = wait_for(&format!("{fname}: BuildReady and the profiles in status"), || async {
            let f = function(client, ns, fname).await;
            (condition(&f, "BuildReady").is_some() && f.status.as_ref()?.build_resource_profile.is_some()).then_some(f)
        })
        .await;
        let st = f.status.as_ref().unwrap();
        assert_eq!(condition(&f, "ConfigurationReady").unwrap().0, "True", "{fname}");
        assert_eq!(
            st.function_resource_profile.as_deref(),
            Some(function_profile),
            "{fname}"
        );
        assert_eq!(st.build_resource_profile.as_deref(), Some(build_profile), "{fname}");
        // Nothing but the CRD's default (replicas: 1, as Kyma's) was added to the spec, and
        // nobody wrote it after the user: the generation is still 1.
        assert_eq!(
            f.metadata.generation,
            Some(1),
            "{fname}: the spec was written after create"
        );
    }
    let job = wait_for("the docs sample's build Job", || async {
        jobs_of(client, ns).await.into_iter().find(|j| {
            j.labels()
                .get("serverless.kyma-project.io/function-name")
                .map(String::as_str)
                == Some(name)
        })
    })
    .await;
    assert!(
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
            .args
            .as_ref()
            .unwrap()
            .windows(2)
            .any(|w| w == ["--runtime", "nodejs24"]),
        "the nodejs24 sample builds with the nodejs24 runtime"
    );
    let stored: serde_json::Value =
        serde_json::from_str(&cluster.kubectl_ok(&["get", "function", name, "-n", ns, "-o", "json"], None)).unwrap();
    let mut want = sample["spec"].clone();
    want["replicas"] = json!(1);
    assert_eq!(
        stored["spec"], want,
        "the stored spec is the manifest's, plus the CRD's default"
    );

    // `kubectl diff`: empty, exit 0 (1 would mean a difference).
    for manifest in [&sample, &custom] {
        let out = cluster.kubectl(&["diff", "-f", "-"], Some(&manifest.to_string()));
        assert_eq!(
            out.status.code(),
            Some(0),
            "kubectl diff shows a difference:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    // Applying again: unchanged. A server-side apply dry run changes nothing either.
    let again = cluster.kubectl_ok(&["apply", "-f", "-"], Some(&sample.to_string()));
    eprintln!("kubectl apply, the same manifest again: {}", again.trim_end());
    assert!(again.contains("unchanged"), "{again}");
    let dry: serde_json::Value = serde_json::from_str(&cluster.kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=argocd-controller",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(&sample.to_string()),
    ))
    .unwrap();
    assert_eq!(dry["spec"], stored["spec"]);
    assert_eq!(dry["metadata"]["generation"], 1);

    // Free the build slots for the scenarios after this one.
    for j in jobs_of(client, ns).await {
        finish_job(client, ns, &j.name_any(), true, &format!("sha256:{}", "cd".repeat(32))).await;
    }

    // The security contexts: the user's fields over the defaults, in the Deployment and in status.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let dep = wait_for("custom's Deployment", || async {
        deployments.get_opt("custom").await.unwrap()
    })
    .await;
    let pod = dep.spec.template.spec.unwrap();
    let (psc, csc) = (
        pod.security_context.unwrap(),
        pod.containers[0].security_context.clone().unwrap(),
    );
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(2000), Some(3000), Some(1000))
    );
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(csc.read_only_root_filesystem, Some(false));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    let st = function(client, ns, "custom").await.status.unwrap();
    assert_eq!(st.pod_security_context.unwrap().run_as_user, Some(2000));
    assert_eq!(
        st.container_security_context.unwrap().read_only_root_filesystem,
        Some(false)
    );

    // Kyma's functionAnnotations: the spec's annotations as last put on the Pods. One that
    // leaves the spec leaves the Pods; one `kubectl rollout restart` put there stays.
    assert_eq!(
        st.function_annotations,
        Some([("team.example.com/owner".to_string(), "a".to_string())].into())
    );
    cluster.kubectl_ok(&["rollout", "restart", "deployment/custom", "-n", ns], None);
    custom["spec"]["annotations"] = json!({"team.example.com/tier": "gold"});
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&custom.to_string()));
    let annotations = wait_for("custom's Pods with the new annotation", || async {
        let dep = deployments.get_opt("custom").await.unwrap()?;
        let a = dep.spec.template.metadata?.annotations?;
        a.contains_key("team.example.com/tier").then_some(a)
    })
    .await;
    assert!(!annotations.contains_key("team.example.com/owner"), "{annotations:?}");
    assert!(
        annotations.contains_key("kubectl.kubernetes.io/restartedAt"),
        "{annotations:?}"
    );
    let st = wait_for("functionAnnotations updated", || async {
        let st = function(client, ns, "custom").await.status?;
        st.function_annotations
            .as_ref()?
            .contains_key("team.example.com/tier")
            .then_some(st)
    })
    .await;
    assert_eq!(st.function_annotations.unwrap().len(), 1);
}

/// Kyma's registry configuration: the Secret in the controller's namespace is copied into each
/// namespace with Functions and follows it there; its keys decide where builds push and Pods
/// pull. A namespace's own Secret of that name is left alone, and used. Runs last of the
/// scenarios that build: the copies it spreads stay.
pub async fn registry_config_copied(client: &Client, registry: &str) {
    const NAME: &str = "serverless-registry-config-default";
    let base_ns = "serverless-system";
    let secret = |ns: &str, labels: serde_json::Value, data: serde_json::Value| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": NAME, "namespace": ns, "labels": labels},
            "type": "Opaque", "stringData": data}))
        .unwrap()
    };
    let base_api: Api<Secret> = Api::namespaced(client.clone(), base_ns);
    let _ = base_api.delete(NAME, &Default::default()).await;
    let kyma_label = json!({"serverless.kyma-project.io/config": "credentials"});
    let base = secret(
        base_ns,
        kyma_label.clone(),
        json!({"isInternal": "true", "pushRegAddr": format!("{registry}/kyma"), "pullRegAddr": "pull.example:5000/kyma"}),
    );
    base_api.create(&PostParams::default(), &base).await.unwrap();

    // A namespace whose own Secret (no labels) names another registry: left alone, and used.
    let own_ns = &run_ns("ctl-r-own");
    namespace(client, own_ns).await;
    let own = secret(
        own_ns,
        json!({}),
        json!({"isInternal": "false", "registryAddress": format!("{registry}/own")}),
    );
    Api::<Secret>::namespaced(client.clone(), own_ns)
        .create(&PostParams::default(), &own)
        .await
        .unwrap();
    let ns = &run_ns("ctl-r");
    namespace(client, ns).await;
    for n in [ns, own_ns] {
        let f: Function = serde_json::from_value(hello(n, "hello")).unwrap();
        Api::<Function>::namespaced(client.clone(), n)
            .create(&PostParams::default(), &f)
            .await
            .unwrap();
    }
    let copies: Api<Secret> = Api::namespaced(client.clone(), ns);
    let decoded = |s: &Secret, k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let copy = wait_for("the registry Secret copied into the Function's namespace", || async {
        copies.get_opt(NAME).await.unwrap()
    })
    .await;
    assert_eq!(decoded(&copy, "pushRegAddr"), Some(format!("{registry}/kyma")));
    assert_eq!(copy.labels()["serverless.kyma-project.io/config"], "credentials");
    assert_eq!(
        copy.labels()["serverless.kyma-project.io/managed-by"],
        "function-controller"
    );

    // Where the builds push: the copy's pushRegAddr; the namespace's own registryAddress.
    for (n, push) in [
        (ns, format!("{registry}/kyma/{ns}.hello:")),
        (own_ns, format!("{registry}/own/{own_ns}.hello:")),
    ] {
        let job = wait_for(&format!("the build Job in {n}"), || async {
            jobs_of(client, n).await.into_iter().next()
        })
        .await;
        let args = job.spec.clone().unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert!(args.iter().any(|a| a.starts_with(&push)), "{push} in {args:?}");
        if n == ns {
            // Kyma's in-cluster registry is plain HTTP.
            assert!(
                args.windows(2)
                    .any(|w| w[0] == "--insecure-registry" && w[1] == registry),
                "{args:?}"
            );
        }
        finish_job(client, n, &job.name_any(), true, &format!("sha256:{}", "ef".repeat(32))).await;
    }
    // Where the Pods pull: the copy's pullRegAddr.
    let dep = wait_for("the Deployment", || async {
        Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt("hello")
            .await
            .unwrap()
    })
    .await;
    let image = dep.spec.template.spec.unwrap().containers[0].image.clone().unwrap();
    assert!(
        image.starts_with(&format!("pull.example:5000/kyma/{ns}.hello@sha256:")),
        "{image}"
    );
    let own_now = Api::<Secret>::namespaced(client.clone(), own_ns)
        .get(NAME)
        .await
        .unwrap();
    assert_eq!(decoded(&own_now, "registryAddress"), Some(format!("{registry}/own")));
    assert_eq!(
        decoded(&own_now, "pushRegAddr"),
        None,
        "the namespace's own Secret is not overwritten"
    );

    // The copy follows the base.
    let mut changed = base_api.get(NAME).await.unwrap();
    changed.string_data = Some(
        [("pullRegAddr".to_string(), "pull.example:5000/moved".to_string())]
            .into_iter()
            .collect(),
    );
    base_api.replace(NAME, &PostParams::default(), &changed).await.unwrap();
    wait_for("the copy to follow the base", || async {
        let c = copies.get(NAME).await.unwrap();
        (decoded(&c, "pullRegAddr").as_deref() == Some("pull.example:5000/moved")).then_some(())
    })
    .await;
    base_api.delete(NAME, &Default::default()).await.unwrap();
}

/// In-place takeover: a Function as Kyma's controller left it (its generateName'd Deployment,
/// HPA, ConfigMap and build Job, and its Service `<function>`, all owned by the Function, made
/// here as Kyma makes them) ends with exactly one Deployment, fnbuild's; Kyma's ConfigMap, HPA
/// and Job go at once, its Deployment only once fnbuild's is ready (so something serves the
/// Service throughout) and is never changed meanwhile (its Pods are not restarted: with no
/// kubelet here, an unchanged Pod template and generation stand for that); the Service is adopted.
pub async fn takeover_from_kyma(client: &Client) {
    let ns = &run_ns("ctl-k");
    namespace(client, ns).await;
    let fns: Api<Function> = Api::namespaced(client.clone(), ns);
    let f: Function = serde_json::from_value(hello(ns, "hello")).unwrap();
    let f = fns.create(&PostParams::default(), &f).await.unwrap();
    let uid = f.uid().unwrap();
    let labels = json!({"serverless.kyma-project.io/function-name": "hello",
        "serverless.kyma-project.io/managed-by": "function-controller", "serverless.kyma-project.io/uuid": uid});
    let selector = json!({"serverless.kyma-project.io/function-name": "hello",
        "serverless.kyma-project.io/managed-by": "function-controller", "serverless.kyma-project.io/uuid": uid,
        "serverless.kyma-project.io/resource": "deployment"});
    let meta = |generate: &str| {
        json!({"generateName": generate, "namespace": ns, "labels": labels,
        "ownerReferences": [{"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
            "name": "hello", "uid": uid, "controller": true, "blockOwnerDeletion": true}]})
    };
    let pp = PostParams::default();
    let kyma_dep: Deployment = serde_json::from_value(json!({"metadata": meta("hello-"), "spec": {
        "replicas": 1, "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": selector}, "spec": {"containers": [{"name": "function",
            "image": "localhost:5000/kyma-hello:old", "ports": [{"containerPort": 8080}]}]}}}}))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let kyma_dep = deployments.create(&pp, &kyma_dep).await.unwrap();
    make_available(client, ns, &kyma_dep.name_any()).await;
    let kyma_hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({"metadata": meta("hello-"), "spec": {
        "scaleTargetRef": {"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function", "name": "hello"},
        "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}}))
    .unwrap();
    let kyma_hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .create(&pp, &kyma_hpa)
        .await
        .unwrap();
    let kyma_cm: ConfigMap =
        serde_json::from_value(json!({"metadata": meta("hello-"), "data": {"source": "old", "dependencies": "{}"}}))
            .unwrap();
    let kyma_cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&pp, &kyma_cm)
        .await
        .unwrap();
    let kyma_job: Job = serde_json::from_value(json!({"metadata": meta("hello-build-"), "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "executor", "image": "kaniko"}]}}}}))
    .unwrap();
    let kyma_job = Api::<Job>::namespaced(client.clone(), ns)
        .create(&pp, &kyma_job)
        .await
        .unwrap();
    let kyma_svc: Service = serde_json::from_value(json!({"metadata": {"name": "hello", "namespace": ns,
        "labels": labels, "ownerReferences": meta("x")["ownerReferences"]},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}], "selector": selector}}))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&pp, &kyma_svc)
        .await
        .unwrap();

    // Kyma's ConfigMap, HPA and build Job go once fnbuild's build runs; its Deployment stays.
    let job = wait_for("fnbuild's build Job", || async {
        jobs_of(client, ns)
            .await
            .into_iter()
            .find(|j| j.labels().contains_key(LABEL_IMAGE_TAG))
    })
    .await;
    finish_job(
        client,
        ns,
        &job.name_any(),
        true,
        &format!("sha256:{}", "12".repeat(32)),
    )
    .await;
    wait_for("fnbuild's Deployment", || async {
        deployments.get_opt("hello").await.unwrap()
    })
    .await;
    wait_for("Kyma's ConfigMap, HPA and Job gone", || async {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(&kyma_cm.name_any())
            .await
            .unwrap();
        let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
            .get_opt(&kyma_hpa.name_any())
            .await
            .unwrap();
        let job = Api::<Job>::namespaced(client.clone(), ns)
            .get_opt(&kyma_job.name_any())
            .await
            .unwrap();
        // (Deleted in the background: gone, or going.)
        let going = |m: Option<&kube::api::ObjectMeta>| m.is_none_or(|m| m.deletion_timestamp.is_some());
        (going(cm.as_ref().map(|o| &o.metadata))
            && going(hpa.as_ref().map(|o| &o.metadata))
            && going(job.as_ref().map(|o| &o.metadata)))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = deployments.get(&kyma_dep.name_any()).await.unwrap();
    assert!(
        still.metadata.deletion_timestamp.is_none(),
        "Kyma's Deployment serves until fnbuild's is ready"
    );
    assert_eq!(
        still.metadata.generation, kyma_dep.metadata.generation,
        "Kyma's Deployment is not changed"
    );
    assert_eq!(still.spec.template, kyma_dep.spec.template);

    // fnbuild's Deployment is ready: Kyma's goes; one Deployment, fnbuild's, serves the Service.
    make_available(client, ns, "hello").await;
    wait_for("Kyma's Deployment gone", || async {
        deployments
            .get_opt(&kyma_dep.name_any())
            .await
            .unwrap()
            .is_none_or(|d| d.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    let left: Vec<String> = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .map(|d| d.name_any())
        .collect();
    assert_eq!(left, ["hello"]);
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get("hello")
        .await
        .unwrap();
    assert_eq!(svc.owner_references()[0].uid, uid);
    assert_eq!(
        svc.annotations().get("prometheus.io/scrape").map(String::as_str),
        Some("true"),
        "the Service is adopted (fnbuild's annotations on it)"
    );
    let f = function(client, ns, "hello").await;
    assert_eq!(condition(&f, "Running").unwrap().0, "True");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let wanted = [
        format!("deleted ConfigMap/{}", kyma_cm.name_any()),
        format!("deleted HorizontalPodAutoscaler/{}", kyma_hpa.name_any()),
        format!("deleted Deployment/{}", kyma_dep.name_any()),
    ];
    wait_for("events naming each of Kyma's objects deleted", || async {
        let all: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("PreviousObjectsDeleted"))
            .filter_map(|e| e.note)
            .collect();
        let all = all.join("\n");
        wanted.iter().all(|w| all.contains(w.as_str())).then_some(())
    })
    .await;
}

/// Kyma's validation cases (tests/fixtures/kyma-validation.json, also run by the unit test
/// validation::kyma_cases) against the real API server and the webhook: a refused case is
/// denied at `kubectl apply` naming Kyma's field, an admitted one is admitted (server-side dry
/// run: admission runs, nothing is stored or built), a reported one is stored and its status
/// says ConfigurationReady=False, InvalidFunctionSpec, naming the field. This Debian-built
/// 1.20.2 API server refuses `""` in any field of a custom resource
/// (../shared/k8s-test-cluster.md), so the cases that hold one are left to the unit test.
pub async fn kyma_validation_cases(cluster: &Cluster, client: &Client) {
    let ns = &run_ns("ctl-v");
    namespace(client, ns).await;
    let doc: serde_json::Value = serde_json::from_str(include_str!("../fixtures/kyma-validation.json")).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let mut reported = Vec::new();
    let mut skipped = 0;
    for (i, c) in cases.iter().enumerate() {
        let (case, outcome) = (c["name"].as_str().unwrap(), c["outcome"].as_str().unwrap());
        if c["spec"].to_string().contains("\"\"") {
            skipped += 1;
            continue;
        }
        let name = format!("v{i}");
        let f = json!({"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
            "metadata": {"name": name, "namespace": ns}, "spec": c["spec"]});
        let dry_run = outcome != "reported";
        let mut args = vec!["apply", "-f", "-"];
        if dry_run {
            args.push("--dry-run=server");
        }
        let out = cluster.kubectl(&args, Some(&f.to_string()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        match outcome {
            "refused" => {
                assert!(!out.status.success(), "{case}: admitted, Kyma refuses it");
                let field = c["field"].as_str().unwrap();
                assert!(
                    stderr.contains(&format!(": {field}")),
                    "{case}: the denial names no {field}: {stderr}"
                );
            }
            _ => {
                assert!(out.status.success(), "{case}: refused, Kyma admits it: {stderr}");
                let warned = stderr.contains("ConfigurationReady");
                assert_eq!(warned, outcome == "reported", "{case}: {stderr}");
                if outcome == "reported" {
                    reported.push((name, case, c["field"].as_str().unwrap().to_string()));
                }
            }
        }
    }
    assert!(
        skipped < 10 && reported.len() >= 15,
        "{skipped} skipped, {} reported",
        reported.len()
    );
    for (name, case, field) in &reported {
        let f = wait_for(&format!("{case}: ConfigurationReady=False"), || async {
            let f = function(client, ns, name).await;
            condition(&f, "ConfigurationReady")
                .filter(|c| c.0 == "False")
                .map(|_| f)
        })
        .await;
        let (_, reason, msg) = condition(&f, "ConfigurationReady").unwrap();
        assert_eq!(reason, "InvalidFunctionSpec", "{case}: {msg}");
        assert!(
            msg.contains(field.as_str()),
            "{case}: the status names no {field}: {msg}"
        );
    }
    assert!(jobs_of(client, ns).await.is_empty(), "no invalid Function is built");
}

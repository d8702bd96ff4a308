//! The admission webhook (AdmissionReview v1): `/validate-function` denies invalid Functions
//! with the field paths in the message; `/mutate-function` only admits (see `mutate`). Pure
//! functions of the request; `serve` puts them behind HTTPS.

use super::http::{Req, Resp};
use super::manifests::{MUTATE_PATH, VALIDATE_PATH};
use super::metrics::Metrics;
use super::types::{runtime_deprecation, Function};
use super::validation::validate;
use hyper::StatusCode;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use std::sync::Arc;

/// The defaulting answer: always allowed, never a patch. Defaults are not written into a
/// Function (no spec drift, as in Kyma, which has no defaulting webhook); the path still
/// answers so a cluster that keeps an older fnbuild's MutatingWebhookConfiguration goes on
/// admitting Functions.
pub fn mutate(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    AdmissionResponse::from(req)
}

/// The validation answer: denied with every field error, or allowed.
pub fn validate_request(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    let Some(obj) = &req.object else { return resp };
    let value = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(e) => return resp.deny(format!("cannot read the Function: {e}")),
    };
    let f: Function = match serde_json::from_value(value) {
        Ok(f) => f,
        Err(e) => return resp.deny(format!("invalid Function: {e}")),
    };
    let name = f
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| Some(req.name.clone()).filter(|n| !n.is_empty()));
    let result = validate(name.as_deref(), &f.spec);
    match result {
        // Every problem is named when one of them is refused here.
        Err(e) if e.refused_at_admission() => resp.deny(e.to_string()),
        // kubectl prints each warning as `Warning: ...`. What Kyma's controller reports in
        // status is admitted, as there, and the controller reports it; kubectl says so now.
        result => {
            let mut resp = resp;
            let mut warnings: Vec<String> = runtime_deprecation(&f.spec.runtime).into_iter().collect();
            if let Err(e) = result {
                warnings
                    .extend(e.0.iter().map(|p| {
                        format!("{p} (the Function will not be built: see its ConfigurationReady condition)")
                    }));
            }
            resp.warnings = Some(warnings).filter(|w| !w.is_empty());
            resp
        }
    }
}

/// Answer one HTTP request.
pub fn handle(req: &Req, metrics: &Metrics) -> Resp {
    if req.method != hyper::Method::POST {
        return Resp::text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview");
    }
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&req.body) {
        Ok(r) => r,
        Err(e) => {
            Metrics::inc(&metrics.webhook_errors);
            return Resp::text(StatusCode::BAD_REQUEST, format!("not an AdmissionReview: {e}"));
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            Metrics::inc(&metrics.webhook_errors);
            let resp = AdmissionResponse::invalid(e.to_string()).into_review();
            return Resp::json(serde_json::to_vec(&resp).unwrap_or_default());
        }
    };
    let resp = match req.path.as_str() {
        MUTATE_PATH => mutate(&request),
        VALIDATE_PATH => validate_request(&request),
        other => return Resp::text(StatusCode::NOT_FOUND, format!("no webhook at {other}")),
    };
    Metrics::inc(if resp.allowed {
        &metrics.webhook_allowed
    } else {
        &metrics.webhook_denied
    });
    if !resp.allowed {
        tracing::info!(function = %request.name, namespace = ?request.namespace, denied = %resp.result.message, "admission denied");
    }
    Resp::json(serde_json::to_vec(&resp.into_review()).unwrap_or_default())
}

/// Serve the webhooks over HTTPS.
pub async fn serve(listener: tokio::net::TcpListener, tls: tokio_rustls::TlsAcceptor, metrics: Arc<Metrics>) {
    super::http::serve(listener, Some(tls), move |req| {
        let metrics = metrics.clone();
        async move { handle(&req, &metrics) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(op: &str, object: serde_json::Value) -> Req {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "serverless.kyma-project.io", "version": "v1alpha2", "kind": "Function"},
                "resource": {"group": "serverless.kyma-project.io", "version": "v1alpha2", "resource": "functions"},
                "requestKind": {"group": "serverless.kyma-project.io", "version": "v1alpha2", "kind": "Function"},
                "requestResource": {"group": "serverless.kyma-project.io", "version": "v1alpha2", "resource": "functions"},
                "name": object["metadata"]["name"],
                "namespace": "default",
                "operation": op,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        });
        Req {
            method: hyper::Method::POST,
            path: String::new(),
            headers: Default::default(),
            body: serde_json::to_vec(&body).unwrap().into(),
        }
    }

    fn function(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
               "metadata": {"name": "hello", "namespace": "default"}, "spec": spec})
    }

    fn call(path: &str, mut req: Req) -> serde_json::Value {
        req.path = path.into();
        let m = Metrics::default();
        let r = handle(&req, &m);
        assert_eq!(r.status, StatusCode::OK);
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn mutate_admits_without_a_patch() {
        // A Function with nothing but the required fields: no default is written into it.
        let f = function(json!({"runtime": "nodejs24", "source": {"inline": {"source": "x"}}}));
        let out = call(MUTATE_PATH, review("CREATE", f));
        let resp = &out["response"];
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(resp["allowed"], true);
        assert!(resp.get("patch").is_none_or(|p| p.is_null()), "{resp}");
        assert!(resp.get("patchType").is_none_or(|p| p.is_null()), "{resp}");
    }

    #[test]
    fn validate_denies_with_field_paths() {
        let f = function(json!({"runtime": "nodejs20", "source": {"inline": {"source": "x"}},
            "env": [{"name": "FUNC_PORT", "value": "1"}]}));
        let out = call(VALIDATE_PATH, review("CREATE", f));
        let resp = &out["response"];
        assert_eq!(resp["allowed"], false);
        let msg = resp["status"]["message"].as_str().unwrap();
        assert!(msg.contains("spec.env[0].name: FUNC_PORT is reserved"), "{msg}");
        let ok = function(json!({"runtime": "nodejs20", "source": {"inline": {"source": "x"}}}));
        let resp = &call(VALIDATE_PATH, review("CREATE", ok))["response"];
        assert_eq!(resp["allowed"], true);
        // Kyma deprecates nodejs20: admitted, with a warning kubectl prints.
        assert_eq!(
            resp["warnings"],
            json!(["runtime nodejs20 is deprecated and will be removed in the future"])
        );
        for runtime in ["nodejs22", "nodejs24", "python312"] {
            let f = function(json!({"runtime": runtime, "source": {"inline": {"source": "x"}}}));
            let resp = &call(VALIDATE_PATH, review("CREATE", f))["response"];
            assert_eq!(resp["allowed"], true, "{runtime}");
            assert!(resp.get("warnings").is_none_or(|w| w.is_null()), "{runtime}: {resp}");
        }
        // What Kyma's controller reports in status (not its API server) is admitted, as there,
        // with a warning naming the field.
        let f = function(json!({"runtime": "python312", "source": {"inline": {"source": "x"}},
            "secretMounts": [{"secretName": "s", "mountPath": "/a"}, {"secretName": "s", "mountPath": "/b"}]}));
        let resp = &call(VALIDATE_PATH, review("CREATE", f))["response"];
        assert_eq!(resp["allowed"], true, "{resp}");
        let w = resp["warnings"][0].as_str().unwrap();
        assert!(
            w.starts_with("spec.secretMounts[1].secretName: secretNames should be unique"),
            "{w}"
        );
        assert!(w.contains("ConfigurationReady"), "{w}");
    }

    #[test]
    fn bad_requests() {
        let m = Metrics::default();
        let r = handle(
            &Req {
                method: hyper::Method::POST,
                path: VALIDATE_PATH.into(),
                headers: Default::default(),
                body: "nope".into(),
            },
            &m,
        );
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = handle(
            &Req {
                method: hyper::Method::GET,
                path: VALIDATE_PATH.into(),
                headers: Default::default(),
                body: "".into(),
            },
            &m,
        );
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        let f = function(json!({"runtime": "nodejs20", "source": {}}));
        let mut req = review("CREATE", f);
        req.path = "/other".into();
        assert_eq!(handle(&req, &m).status, StatusCode::NOT_FOUND);
    }
}

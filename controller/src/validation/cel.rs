//! Kyma's CEL rules (`x-kubernetes-validations`, Kubernetes 1.25 and later), in the CRD so that
//! the API server enforces them with the webhook down, as Kyma's own CRD does. Each is a rule the
//! webhook refuses at admission too ([`super::validate`]); the unit test below evaluates them
//! with a CEL interpreter (the `cel-interpreter` crate) over Kyma's ported cases and checks that
//! they refuse exactly the cases the webhook refuses for them, at the same field. The rules use
//! standard CEL only (no Kubernetes library functions), so that any CEL implementation reads them.

use serde_json::{json, Value};

/// One rule: where in `spec` (dotted property names), the CEL expression over `self`, and Kyma's
/// message.
pub struct Rule {
    pub at: &'static str,
    pub rule: &'static str,
    pub message: &'static str,
}

pub const RULES: &[Rule] = &[
    Rule {
        at: "source",
        rule: "has(self.gitRepository) && !has(self.inline) || !has(self.gitRepository) && has(self.inline)",
        message: "Use GitRepository or Inline source",
    },
    Rule {
        at: "env",
        rule: "self.all(e, !(e.name in ['FUNC_RUNTIME','FUNC_HANDLER','FUNC_PORT','FUNC_HANDLER_SOURCE','FUNC_HANDLER_DEPENDENCIES','MOD_NAME','NODE_PATH','PYTHONPATH']))",
        message: "Following envs are reserved and cannot be used: ['FUNC_RUNTIME','FUNC_HANDLER','FUNC_PORT','FUNC_HANDLER_SOURCE','FUNC_HANDLER_DEPENDENCIES','MOD_NAME','NODE_PATH','PYTHONPATH']",
    },
    Rule {
        at: "template",
        rule: "!has(self.labels) && !has(self.annotations)",
        message: "Not supported: Use spec.labels and spec.annotations to label and/or annotate Function's Pods.",
    },
    Rule {
        at: "labels",
        rule: "!(self.exists(e, e.startsWith('serverless.kyma-project.io/')))",
        message: "Labels has key starting with serverless.kyma-project.io/ which is not allowed",
    },
    Rule {
        at: "labels",
        rule: "self.all(e, size(e)<64)",
        message: "Label value cannot be longer than 63",
    },
    Rule {
        at: "annotations",
        rule: "!(self.exists(e, e.startsWith('serverless.kyma-project.io/')))",
        message: "Annotations has key starting with serverless.kyma-project.io/ which is not allowed",
    },
    Rule {
        at: "annotations",
        rule: "!(self.exists(e, e=='proxy.istio.io/config'))",
        message: "Annotations has key proxy.istio.io/config which is not allowed",
    },
    Rule {
        at: "source.gitRepository",
        rule: r"has(self.baseDir) && self.baseDir.matches('\\S')",
        message: "BaseDir is required and cannot be empty",
    },
    Rule {
        at: "source.gitRepository",
        rule: r"has(self.reference) && self.reference.matches('\\S')",
        message: "Reference is required and cannot be empty",
    },
    Rule {
        at: "source.gitRepository.auth.secretName",
        rule: r"self.matches('\\S')",
        message: "SecretName is required and cannot be empty",
    },
    Rule {
        at: "resourceConfiguration.function",
        rule: "has(self.profile) && !has(self.resources) || !has(self.profile) && has(self.resources)",
        message: "Use profile or resources",
    },
    Rule {
        at: "resourceConfiguration.function",
        rule: "(!has(self.profile) || self.profile in ['XS','S','M','L','XL'])",
        message: "Invalid profile, please use one of: ['XS','S','M','L','XL']",
    },
    Rule {
        at: "resourceConfiguration.build",
        rule: "has(self.profile) && !has(self.resources) || !has(self.profile) && has(self.resources)",
        message: "Use profile or resources",
    },
    Rule {
        at: "resourceConfiguration.build",
        rule: "(!has(self.profile) || self.profile in ['local-dev','slow','normal','fast'])",
        message: "Invalid profile, please use one of: ['local-dev','slow','normal','fast']",
    },
];

/// The first Kubernetes minor (of 1.x) whose API server evaluates CEL rules by default.
pub const FIRST_MINOR: u32 = 25;

/// Puts [`RULES`] into a Function CRD (as JSON) at their places in the spec's schema.
pub fn add_to_crd(crd: &mut Value) {
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        let spec = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for r in RULES {
            let node =
                r.at.split('.')
                    .fold(&mut *spec, |node, name| &mut node["properties"][name]);
            assert!(node.get("type").is_some(), "no schema at spec.{} for a CEL rule", r.at);
            let list = node
                .as_object_mut()
                .expect("a schema is an object")
                .entry("x-kubernetes-validations")
                .or_insert_with(|| json!([]));
            list.as_array_mut()
                .expect("a list")
                .push(json!({"rule": r.rule, "message": r.message}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel_interpreter::{Context, Program, Value as Cel};

    /// The rules that refuse `spec`, with the field each names (`spec.<at>`).
    fn refusals(spec: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for r in RULES {
            // A rule runs where its node is present (as the API server runs it).
            let Some(node) = r.at.split('.').try_fold(spec, |v, name| v.get(name)) else {
                continue;
            };
            let program = Program::compile(r.rule).unwrap_or_else(|e| panic!("{}: {e}", r.rule));
            let mut ctx = Context::default();
            ctx.add_variable("self", node.clone()).unwrap();
            match program.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => out.push(format!("spec.{}", r.at)),
                other => panic!("{} on {node}: {other:?}", r.rule),
            }
        }
        out
    }

    #[test]
    fn the_crds_cel_rules_refuse_what_kyma_refuses_at_the_same_field() {
        let doc: Value = serde_json::from_str(include_str!("../../tests/fixtures/kyma-validation.json")).unwrap();
        let mut wrong = Vec::new();
        for c in doc["cases"].as_array().unwrap() {
            let (name, outcome) = (c["name"].as_str().unwrap(), c["outcome"].as_str().unwrap());
            let refused = refusals(&c["spec"]);
            // Kyma's schema (enum, minLength, minimum) refuses these, not a CEL rule.
            let by_schema = c["by"] == "schema";
            match (outcome, by_schema) {
                ("refused", false) => {
                    let field = c["field"].as_str().unwrap();
                    if !refused.iter().any(|f| f == field) {
                        wrong.push(format!("{name}: no CEL rule refuses it at {field} ({refused:?})"));
                    }
                }
                _ if !refused.is_empty() && outcome != "refused" => {
                    wrong.push(format!("{name}: {outcome} in Kyma, refused by CEL at {refused:?}"));
                }
                _ => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_rules_land_in_the_crd_at_their_fields() {
        let mut crd = serde_json::to_value(crate::types::crd()).unwrap();
        add_to_crd(&mut crd);
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let git = &spec["properties"]["source"]["properties"]["gitRepository"];
        assert_eq!(git["x-kubernetes-validations"].as_array().unwrap().len(), 2);
        assert_eq!(
            spec["properties"]["labels"]["x-kubernetes-validations"][1]["message"],
            "Label value cannot be longer than 63"
        );
        let total: usize = [
            &spec["properties"]["source"],
            &spec["properties"]["env"],
            &spec["properties"]["template"],
            &spec["properties"]["labels"],
            &spec["properties"]["annotations"],
            git,
            &git["properties"]["auth"]["properties"]["secretName"],
            &spec["properties"]["resourceConfiguration"]["properties"]["function"],
            &spec["properties"]["resourceConfiguration"]["properties"]["build"],
        ]
        .iter()
        .map(|n| n["x-kubernetes-validations"].as_array().map_or(0, Vec::len))
        .sum();
        assert_eq!(total, RULES.len());
    }
}

//! Kyma's own validation cases, ported (`controller/tests/fixtures/kyma-validation.json`, where
//! each names its Kyma test): what Kyma's API server admits is admitted here, what it refuses is
//! refused at admission naming the same field, and what Kyma's controller reports in status is
//! admitted and reported. controller_cluster.rs applies the same cases to a real API server.

use super::{validate, Stage};
use crate::types::FunctionSpec;
use serde_json::Value;

const CASES: &str = include_str!("../../tests/fixtures/kyma-validation.json");

#[test]
fn kymas_validation_cases_end_where_they_end_in_kyma() {
    let doc: Value = serde_json::from_str(CASES).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() > 70, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let spec: FunctionSpec = serde_json::from_value(c["spec"].clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let outcome = c["outcome"].as_str().unwrap();
        let result = validate(Some("fn"), &spec);
        let got = match &result {
            Ok(()) => "admitted",
            Err(e) if e.refused_at_admission() => "refused",
            Err(_) => "reported",
        };
        if got != outcome {
            wrong.push(format!("{name}: {got}, Kyma: {outcome} ({result:?})"));
            continue;
        }
        let Err(e) = result else { continue };
        let stage = if outcome == "refused" {
            Stage::Admission
        } else {
            Stage::Status
        };
        let field = c["field"].as_str().unwrap_or_else(|| panic!("{name}: no field"));
        let says = c["says"].as_str().unwrap_or("");
        let named =
            e.0.iter()
                .any(|p| p.stage == stage && p.path.starts_with(field) && p.message.contains(says));
        if !named {
            wrong.push(format!(
                "{name}: no {stage:?} problem at {field} saying {says:?} in {e}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ from Kyma:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

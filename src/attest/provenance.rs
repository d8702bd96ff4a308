//! SLSA provenance v1 (slsa.dev/spec/v1.0/provenance) of one image: what was asked for
//! (source, runtime, base, platform), what it resolved to, by digest (the base manifest, the
//! dependency and lock files, the git commit, each layer fnbuild wrote), and who built it when.
//! `runDetails.metadata.startedOn` and `finishedOn` are the only fields that differ between two
//! builds of the same input: everything else comes from the input.

use serde_json::{json, Value};

pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What fnbuild's `buildType` names: a function built by laying its source and dependencies
/// over a base image (the parameters below are defined by it).
pub const BUILD_TYPE: &str = "https://fnbuild.dev/buildtypes/function/v1";
pub const BUILDER_ID: &str = "https://fnbuild.dev/builder";

/// A resolved dependency: a name or URI and its sha256 (or git commit).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub uri: Option<String>,
    /// `("sha256", hex)` or `("gitCommit", sha)`.
    pub digest: (&'static str, String),
}

#[derive(Debug, Clone)]
pub struct ProvenanceFacts {
    /// `git+URL@REV` when the source came from git (or `--source-url`/`--revision` say so).
    pub source_uri: Option<String>,
    pub runtime: String,
    /// The base as the build was given it.
    pub base: String,
    pub platform: String,
    pub source_date_epoch: u64,
    pub resolved: Vec<Resolved>,
    /// RFC 3339 (wall clock).
    pub started: String,
    pub finished: String,
}

pub fn predicate(facts: &ProvenanceFacts) -> Value {
    let resolved: Vec<Value> = facts
        .resolved
        .iter()
        .map(|r| {
            let mut v = json!({"name": r.name, "digest": {r.digest.0: r.digest.1}});
            if let Some(uri) = &r.uri {
                v["uri"] = json!(uri);
            }
            v
        })
        .collect();
    let source = match &facts.source_uri {
        Some(uri) => json!({"uri": uri}),
        None => json!({"kind": "directory"}),
    };
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "source": source,
                "runtime": facts.runtime,
                "base": facts.base,
                "platform": facts.platform,
            },
            "internalParameters": {"sourceDateEpoch": facts.source_date_epoch},
            "resolvedDependencies": resolved,
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID, "version": {"fnbuild": env!("CARGO_PKG_VERSION")}},
            "metadata": {"startedOn": facts.started, "finishedOn": facts.finished},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predicate_names_inputs_and_their_digests() {
        let p = predicate(&ProvenanceFacts {
            source_uri: Some("git+https://git.example.com/fns.git@0123".into()),
            runtime: "nodejs22".into(),
            base: "registry/node:22".into(),
            platform: "linux/amd64".into(),
            source_date_epoch: 1,
            resolved: vec![Resolved {
                name: "base".into(),
                uri: Some("registry/node:22".into()),
                digest: ("sha256", "ab".into()),
            }],
            started: "2026-12-07T00:00:00Z".into(),
            finished: "2026-12-07T00:00:01Z".into(),
        });
        assert_eq!(p["buildDefinition"]["buildType"], BUILD_TYPE);
        assert_eq!(
            p["buildDefinition"]["externalParameters"]["source"]["uri"],
            "git+https://git.example.com/fns.git@0123"
        );
        assert_eq!(
            p["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"],
            "ab"
        );
        assert_eq!(p["runDetails"]["builder"]["id"], BUILDER_ID);
    }
}

//! The platforms build Jobs build for: `--build-platforms` when given, else those of the
//! cluster's Linux nodes (their `kubernetes.io/arch` label), so that a Function's image runs on
//! whichever node its Pods land. The nodes are asked at most once a minute; when they cannot be
//! listed (RBAC), builds are for the builder's own platform, as before there were indexes.

use super::Context;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long a list of the nodes' platforms is used before they are asked again.
const NODES_TTL: Duration = Duration::from_secs(60);

/// The `os/arch` of each Linux node (`kubernetes.io/*`, else the older `beta.kubernetes.io/*`
/// labels), sorted, each once.
pub fn of_nodes(nodes: &[Node]) -> Vec<String> {
    let label = |n: &Node, key: &str| {
        let labels = n.labels();
        labels
            .get(&format!("kubernetes.io/{key}"))
            .or_else(|| labels.get(&format!("beta.kubernetes.io/{key}")))
            .cloned()
    };
    let platforms: BTreeSet<String> = nodes
        .iter()
        .filter(|n| label(n, "os").as_deref().unwrap_or("linux") == "linux")
        .filter_map(|n| label(n, "arch"))
        .map(|arch| format!("linux/{arch}"))
        .collect();
    platforms.into_iter().collect()
}

impl Context {
    /// The platforms a build is for (empty: the builder's own).
    pub(crate) async fn build_platforms(&self) -> Vec<String> {
        if !self.settings.build_platforms.is_empty() {
            return self.settings.build_platforms.clone();
        }
        if let Some((at, platforms)) = &*self.node_platforms.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < NODES_TTL {
                return platforms.clone();
            }
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let platforms = match nodes.list_metadata(&ListParams::default()).await {
            Ok(list) => {
                let nodes: Vec<Node> = list
                    .items
                    .into_iter()
                    .map(|m| Node {
                        metadata: m.metadata,
                        ..Default::default()
                    })
                    .collect();
                of_nodes(&nodes)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the nodes: builds are for the builder's own platform (give --build-platforms)");
                Vec::new()
            }
        };
        *self.node_platforms.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), platforms.clone()));
        platforms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_platforms_of_the_linux_nodes_each_once_in_order() {
        let nodes = [
            node(&[("kubernetes.io/arch", "arm64"), ("kubernetes.io/os", "linux")]),
            node(&[("kubernetes.io/arch", "amd64"), ("kubernetes.io/os", "linux")]),
            node(&[("beta.kubernetes.io/arch", "amd64")]),
            // A Windows node runs no Function.
            node(&[("kubernetes.io/arch", "amd64"), ("kubernetes.io/os", "windows")]),
            node(&[]),
        ];
        assert_eq!(of_nodes(&nodes), ["linux/amd64", "linux/arm64"]);
        assert_eq!(of_nodes(&nodes[1..3]), ["linux/amd64"]);
        assert!(of_nodes(&[]).is_empty());
    }
}

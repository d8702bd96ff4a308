//! The dependency cache's signing key, one Secret per namespace: the build Job's prepare and
//! build steps sign and verify the cache repository's entries with it (`--cache-key-file`), so
//! that whoever may push to `PUSH/fnbuild-cache/NAMESPACE` without it cannot put code into that
//! namespace's images. The install step, which runs the function author's code, never mounts
//! it. The controller makes the Secret when a namespace has none, so the cache works from the
//! first build; an administrator may provide (or rotate) it instead.

use super::settings::CACHE_KEY_SECRET_KEY;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;

/// A fresh key: 32 random bytes, hex.
fn fresh_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The Secret as the controller creates it.
pub fn secret(name: &str, namespace: &str, key: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                super::desired::LABEL_MANAGED_BY.to_string(),
                super::desired::MANAGED_BY.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CACHE_KEY_SECRET_KEY.to_string(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// Creates the key Secret `name` in `namespace` (a Secret already there, made by anyone, is
/// left as it is).
pub async fn create(client: &kube::Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let key = fresh_key().map_err(|e| kube::Error::Service(Box::new(e)))?;
    match api.create(&PostParams::default(), &secret(name, namespace, &key)).await {
        Ok(_) => {
            tracing::info!(namespace, secret = name, "dependency cache key created");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_long_enough_for_the_builder() {
        let (a, b) = (fresh_key().unwrap(), fresh_key().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let s = secret("k", "ns", &a);
        assert_eq!(s.data.unwrap()[CACHE_KEY_SECRET_KEY].0, a.as_bytes());
    }
}

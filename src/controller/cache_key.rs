//! The dependency cache's signing key, one Secret per namespace: the build Job's prepare and
//! build steps sign and verify the cache repository's entries with it (`--cache-key-file`), so
//! that whoever may push to `PUSH/fnbuild-cache/NAMESPACE` without it cannot put code into that
//! namespace's images. The install step, which runs the function author's code, never mounts it.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;

/// The Secret's name in each Function's namespace.
pub const SECRET_NAME: &str = "fnbuild-dependency-cache-key";
/// Its key (and the file name in the build Job's mount).
pub const SECRET_KEY: &str = "key";
/// Where the build Job mounts it.
pub const MOUNT_DIR: &str = "/cache-key";

/// The file the builder reads: `MOUNT_DIR/SECRET_KEY`.
pub fn key_file() -> String {
    format!("{MOUNT_DIR}/{SECRET_KEY}")
}

/// A fresh key: 32 random bytes, hex.
fn fresh_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The Secret as the controller creates it.
pub fn secret(namespace: &str, key: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                super::desired::LABEL_MANAGED_BY.to_string(),
                super::desired::MANAGED_BY.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            SECRET_KEY.to_string(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// Makes sure `namespace` has the key Secret (created once, never rotated by the controller:
/// a new key only makes the cached entries misses).
pub async fn ensure(client: &kube::Client, namespace: &str) -> Result<(), kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // Created blind: an existing Secret answers 409, which is what we want to know.
    let key = fresh_key().map_err(|e| kube::Error::Service(Box::new(e)))?;
    match api.create(&PostParams::default(), &secret(namespace, &key)).await {
        Ok(_) => {
            tracing::info!(namespace, secret = SECRET_NAME, "dependency cache key created");
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
        let s = secret("ns", &a);
        assert_eq!(s.data.unwrap()[SECRET_KEY].0, a.as_bytes());
        assert_eq!(key_file(), "/cache-key/key");
    }
}

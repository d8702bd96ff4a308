//! Defaulting: what the mutating webhook writes into a Function, and what the controller
//! assumes for a Function that bypassed the webhook. Pure and idempotent.

use super::resources::{DEFAULT_BUILD_PROFILE, DEFAULT_FUNCTION_PROFILE};
use super::types::{FunctionSpec, ResourceConfiguration, ResourceRequirements};

/// The defaults in force (the controller's flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub function_profile: String,
    pub build_profile: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            function_profile: DEFAULT_FUNCTION_PROFILE.into(),
            build_profile: DEFAULT_BUILD_PROFILE.into(),
        }
    }
}

/// Fill in what the user left out:
/// - `replicas`: `scaleConfig.minReplicas`, else 1;
/// - `scaleConfig`: a missing bound copies the other one (or `replicas`);
/// - `resourceConfiguration.function` / `.build`: the default profile when neither a profile
///   nor resources are given.
///
/// Nothing the user set is changed, and applying it twice changes nothing more.
pub fn apply_defaults(spec: &mut FunctionSpec, d: &Defaults) {
    if let Some(sc) = &mut spec.scale_config {
        match (sc.min_replicas, sc.max_replicas) {
            (None, None) => {
                let r = spec.replicas.unwrap_or(1).max(1);
                sc.min_replicas = Some(r);
                sc.max_replicas = Some(r);
            }
            (Some(min), None) => sc.max_replicas = Some(min),
            (None, Some(max)) => sc.min_replicas = Some(spec.replicas.unwrap_or(1).clamp(1, max.max(1))),
            _ => {}
        }
    }
    if spec.replicas.is_none() {
        spec.replicas = Some(spec.scale_config.as_ref().and_then(|s| s.min_replicas).unwrap_or(1));
    }
    let rc = spec
        .resource_configuration
        .get_or_insert_with(ResourceConfiguration::default);
    default_profile(&mut rc.function, &d.function_profile);
    default_profile(&mut rc.build, &d.build_profile);
}

fn default_profile(r: &mut Option<ResourceRequirements>, profile: &str) {
    let r = r.get_or_insert_with(ResourceRequirements::default);
    if r.profile.is_none() && r.resources.is_none() {
        r.profile = Some(profile.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ScaleConfig;

    fn spec() -> FunctionSpec {
        FunctionSpec {
            runtime: "nodejs20".into(),
            ..Default::default()
        }
    }

    #[test]
    fn fills_replicas_and_profiles() {
        let mut s = spec();
        apply_defaults(&mut s, &Defaults::default());
        assert_eq!(s.replicas, Some(1));
        let rc = s.resource_configuration.as_ref().unwrap();
        assert_eq!(rc.function.as_ref().unwrap().profile.as_deref(), Some("L"));
        assert_eq!(rc.build.as_ref().unwrap().profile.as_deref(), Some("normal"));
        let once = s.clone();
        apply_defaults(&mut s, &Defaults::default());
        assert_eq!(s, once, "idempotent");
    }

    #[test]
    fn keeps_what_the_user_set() {
        let mut s = spec();
        s.replicas = Some(0);
        s.resource_configuration = Some(ResourceConfiguration {
            function: Some(ResourceRequirements {
                profile: Some("XS".into()),
                resources: None,
            }),
            build: Some(ResourceRequirements {
                profile: None,
                resources: Some(Default::default()),
            }),
        });
        let d = Defaults {
            function_profile: "M".into(),
            build_profile: "fast".into(),
        };
        apply_defaults(&mut s, &d);
        assert_eq!(s.replicas, Some(0));
        let rc = s.resource_configuration.unwrap();
        assert_eq!(rc.function.unwrap().profile.as_deref(), Some("XS"));
        let b = rc.build.unwrap();
        assert_eq!(b.profile, None);
        assert!(b.resources.is_some());
    }

    #[test]
    fn scale_config_bounds() {
        let mut s = spec();
        s.scale_config = Some(ScaleConfig {
            min_replicas: Some(2),
            max_replicas: None,
        });
        apply_defaults(&mut s, &Defaults::default());
        assert_eq!(s.scale_config.as_ref().unwrap().max_replicas, Some(2));
        assert_eq!(s.replicas, Some(2));

        let mut s = spec();
        s.replicas = Some(3);
        s.scale_config = Some(ScaleConfig {
            min_replicas: None,
            max_replicas: Some(5),
        });
        apply_defaults(&mut s, &Defaults::default());
        assert_eq!(s.scale_config.as_ref().unwrap().min_replicas, Some(3));
        assert_eq!(s.replicas, Some(3));

        let mut s = spec();
        s.scale_config = Some(ScaleConfig::default());
        apply_defaults(&mut s, &Defaults::default());
        assert_eq!(
            s.scale_config,
            Some(ScaleConfig {
                min_replicas: Some(1),
                max_replicas: Some(1)
            })
        );
    }
}

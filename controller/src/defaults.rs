//! Defaulting: the default profiles (the controller's flags), and what the controller assumes
//! for fields a Function leaves out. Pure and idempotent; never written into the Function.

use super::resources::{DEFAULT_BUILD_PROFILE, DEFAULT_FUNCTION_PROFILE};
use super::types::FunctionSpec;

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

/// What the controller assumes where the user left a field out, on its own copy of the
/// Function: nothing here is ever written back into `spec`, so a manifest applied twice (as Argo
/// CD or Flux do) shows no difference. The CRD schema defaults `replicas` to 1, as Kyma's does.
/// - `scaleConfig`: a missing bound copies the other one (or `replicas`);
/// - `replicas`: 1 when missing; with `scaleConfig`, kept within its bounds (0 stays 0: a
///   Function scaled to zero by hand), so `{minReplicas: 3, maxReplicas: 3}` runs 3 Pods.
///
/// Resource profiles are not filled in: the default profile applies where neither a profile nor
/// resources are given, and `status.functionResourceProfile` / `buildResourceProfile` say which.
/// Idempotent.
pub fn apply_defaults(spec: &mut FunctionSpec) {
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
    let mut replicas = spec.replicas.unwrap_or(1);
    if let Some((Some(min), Some(max))) = spec.scale_config.as_ref().map(|s| (s.min_replicas, s.max_replicas)) {
        if replicas > 0 {
            replicas = replicas.max(min).min(max.max(min));
        }
    }
    spec.replicas = Some(replicas);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ResourceConfiguration, ScaleConfig};

    fn spec() -> FunctionSpec {
        FunctionSpec {
            runtime: "nodejs24".into(),
            ..Default::default()
        }
    }

    fn scaled(replicas: Option<i32>, min: Option<i32>, max: Option<i32>) -> FunctionSpec {
        let mut s = spec();
        s.replicas = replicas;
        s.scale_config = Some(ScaleConfig {
            min_replicas: min,
            max_replicas: max,
        });
        apply_defaults(&mut s);
        s
    }

    #[test]
    fn fills_replicas_and_leaves_profiles_out() {
        let mut s = spec();
        apply_defaults(&mut s);
        assert_eq!(s.replicas, Some(1));
        assert_eq!(s.resource_configuration, None, "the default profile is not written");
        let once = s.clone();
        apply_defaults(&mut s);
        assert_eq!(s, once, "idempotent");
    }

    #[test]
    fn keeps_what_the_user_set() {
        let mut s = spec();
        s.replicas = Some(0);
        s.resource_configuration = Some(ResourceConfiguration::default());
        let before = s.clone();
        apply_defaults(&mut s);
        assert_eq!(s, before);
    }

    #[test]
    fn scale_config_bounds() {
        let s = scaled(None, Some(2), None);
        assert_eq!(s.scale_config.as_ref().unwrap().max_replicas, Some(2));
        assert_eq!(s.replicas, Some(2));

        let s = scaled(Some(3), None, Some(5));
        assert_eq!(s.scale_config.as_ref().unwrap().min_replicas, Some(3));
        assert_eq!(s.replicas, Some(3));

        let s = scaled(None, None, None);
        assert_eq!(
            s.scale_config,
            Some(ScaleConfig {
                min_replicas: Some(1),
                max_replicas: Some(1)
            })
        );
    }

    #[test]
    fn replicas_stay_within_the_scale_bounds() {
        // The CRD's default of 1 with {3, 3}: three Pods, as the user asked for.
        assert_eq!(scaled(Some(1), Some(3), Some(3)).replicas, Some(3));
        assert_eq!(scaled(Some(9), Some(2), Some(4)).replicas, Some(4));
        assert_eq!(scaled(Some(3), Some(2), Some(4)).replicas, Some(3));
        assert_eq!(
            scaled(Some(0), Some(2), Some(4)).replicas,
            Some(0),
            "scaled to zero by hand"
        );
    }
}

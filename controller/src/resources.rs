//! Resource profiles (named sets of requests and limits) and Kubernetes quantities.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// A named profile: CPU and memory requests and limits, in Kubernetes' canonical spelling (so
/// what the API server stores reads back equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    pub cpu_request: &'static str,
    pub memory_request: &'static str,
    pub cpu_limit: &'static str,
    pub memory_limit: &'static str,
}

impl Profile {
    pub fn requirements(&self) -> ResourceRequirements {
        let q = |cpu: &str, mem: &str| {
            BTreeMap::from([
                ("cpu".to_string(), Quantity(cpu.into())),
                ("memory".to_string(), Quantity(mem.into())),
            ])
        };
        ResourceRequirements {
            requests: Some(q(self.cpu_request, self.memory_request)),
            limits: Some(q(self.cpu_limit, self.memory_limit)),
            ..Default::default()
        }
    }
}

const fn p(
    name: &'static str,
    cpu_request: &'static str,
    memory_request: &'static str,
    cpu_limit: &'static str,
    memory_limit: &'static str,
) -> Profile {
    Profile {
        name,
        cpu_request,
        memory_request,
        cpu_limit,
        memory_limit,
    }
}

/// Profiles of the function's Pods (Kyma's).
pub const FUNCTION_PROFILES: &[Profile] = &[
    p("XS", "50m", "64Mi", "150m", "256Mi"),
    p("S", "100m", "128Mi", "200m", "256Mi"),
    p("M", "200m", "256Mi", "400m", "512Mi"),
    p("L", "400m", "512Mi", "800m", "1Gi"),
    p("XL", "800m", "1Gi", "1600m", "2Gi"),
];

/// Profiles of the build Job: Kyma's names, sized for fnbuild rather than Kaniko (Kyma's
/// `normal` was 500m/700Mi → 1100m/1100Mi). Measured (tests/e2e_cluster.rs, the build
/// container's cgroup): a pip install of a small package peaks at about 45 MiB with the page
/// cache and a few CPU seconds; a Node build without dependencies is over within a second
/// (fnbuild's own peak RSS is 16-23 MiB in bench/run); builds with npm dependencies peaked at
/// 59-94 MB. The limits leave room for large npm trees; `fast` or explicit resources beyond.
pub const BUILD_PROFILES: &[Profile] = &[
    p("local-dev", "100m", "128Mi", "400m", "256Mi"),
    p("slow", "100m", "128Mi", "700m", "384Mi"),
    p("normal", "250m", "192Mi", "1", "512Mi"),
    p("fast", "500m", "256Mi", "1700m", "1Gi"),
];

pub const DEFAULT_FUNCTION_PROFILE: &str = "L";
pub const DEFAULT_BUILD_PROFILE: &str = "normal";

pub fn function_profile(name: &str) -> Option<&'static Profile> {
    FUNCTION_PROFILES.iter().find(|p| p.name == name)
}

pub fn build_profile(name: &str) -> Option<&'static Profile> {
    BUILD_PROFILES.iter().find(|p| p.name == name)
}

pub fn profile_names(profiles: &[Profile]) -> String {
    profiles.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

/// A quantity's value as a number (`100m` → 0.1, `1Gi` → 1073741824), or `None` when it is not
/// a well-formed Kubernetes quantity.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (sign, rest) = match s.as_bytes()[0] {
        b'+' => (1.0, &s[1..]),
        b'-' => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            10f64.powi(exp)
        }
        _ => return None,
    };
    Some(sign * value * mult)
}

/// Whether two quantities are the same amount (`1024Mi` and `1Gi`, `0.5` and `500m`).
pub fn quantities_equal(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => x == y || ((x - y).abs() <= 1e-9 * x.abs().max(y.abs())),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("-1"), Some(-1.0));
        for bad in ["", "m", "1x", "1..2", "Mi", "1 Mi", "1e", "."] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
        assert!(quantities_equal("1024Mi", "1Gi"));
        assert!(quantities_equal("0.5", "500m"));
        assert!(!quantities_equal("1Gi", "1G"));
    }

    #[test]
    fn profiles_are_ordered_and_requests_fit_limits() {
        for p in FUNCTION_PROFILES.iter().chain(BUILD_PROFILES) {
            assert!(
                parse_quantity(p.cpu_request).unwrap() <= parse_quantity(p.cpu_limit).unwrap(),
                "{}",
                p.name
            );
            assert!(
                parse_quantity(p.memory_request).unwrap() <= parse_quantity(p.memory_limit).unwrap(),
                "{}",
                p.name
            );
        }
        let l = function_profile("L").unwrap().requirements();
        assert_eq!(l.limits.as_ref().unwrap()["memory"].0, "1Gi");
        assert_eq!(l.requests.as_ref().unwrap()["cpu"].0, "400m");
        let normal = build_profile("normal").unwrap().requirements();
        assert_eq!(normal.requests.as_ref().unwrap()["cpu"].0, "250m");
        assert_eq!(normal.requests.as_ref().unwrap()["memory"].0, "192Mi");
        assert_eq!(normal.limits.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(normal.limits.as_ref().unwrap()["memory"].0, "512Mi");
        assert!(function_profile("XXL").is_none());
        assert_eq!(profile_names(FUNCTION_PROFILES), "XS, S, M, L, XL");
    }
}

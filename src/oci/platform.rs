//! Platforms (`os/architecture[/variant]`) and picking one manifest out of an image index.

use std::fmt;
use std::str::FromStr;

/// An image platform, e.g. `linux/amd64` or `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Whether this platform's binaries run natively on `other`'s machine (same OS and
    /// architecture; variants aside).
    pub fn same_machine(&self, other: &Platform) -> bool {
        self.os == other.os && self.architecture == other.architecture
    }

    /// A file name for this platform (`linux-arm64`): per-platform directories.
    pub fn dir_name(&self) -> String {
        self.to_string().replace('/', "-")
    }

    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Linux on the architecture this program runs on.
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            "mips64" => ("mips64le", None),
            other => (other, None),
        };
        Platform::new("linux", arch, variant)
    }

    /// The platform an image config names (`os`, `architecture`, `variant`); linux/amd64 for
    /// the fields it leaves out or empty.
    pub fn of_config(config: &serde_json::Value) -> Self {
        let field = |k: &str| config.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
        Platform::new(
            field("os").unwrap_or("linux"),
            field("architecture").unwrap_or("amd64"),
            field("variant"),
        )
    }

    /// Whether an index entry with this os/architecture/variant serves this platform.
    /// A platform without a variant accepts any variant of its architecture; `arm64` with
    /// no variant and `arm64/v8` are the same thing.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != architecture {
            return false;
        }
        let norm = |v: Option<&str>| -> Option<String> {
            match (architecture, v) {
                ("arm64", Some("v8")) | ("arm64", None) => None,
                ("amd64", Some("v1")) => None,
                (_, v) => v.map(str::to_string),
            }
        };
        match &self.variant {
            None => true,
            Some(want) => norm(Some(want)) == norm(variant),
        }
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: write os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8 (several separated by commas, or all)")]
pub struct PlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform::new(os, arch, Some(v))),
            _ => Err(PlatformError(s.to_string())),
        }
    }
}

/// What `--platform` asks for: one platform (a single image, as without the flag), several
/// (an image index), or `all` of the base's that functions run on ([`FUNCTION_PLATFORMS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    One(Platform),
    List(Vec<Platform>),
    All,
}

/// The platforms `--platform all` takes from a base: those whose runtimes (Node.js, CPython)
/// and native packages are published for Linux.
pub const FUNCTION_PLATFORMS: [(&str, &str); 2] = [("linux", "amd64"), ("linux", "arm64")];

impl Default for Platforms {
    fn default() -> Self {
        Platforms::One(Platform::host())
    }
}

impl FromStr for Platforms {
    type Err = PlatformError;

    /// `all`, or `os/arch[/variant]` separated by commas (each named once).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "all" {
            return Ok(Platforms::All);
        }
        let mut list: Vec<Platform> = Vec::new();
        for part in s.split(',') {
            let p: Platform = part
                .trim()
                .parse()
                .map_err(|_| PlatformError(part.trim().to_string()))?;
            if list.iter().any(|q| {
                q.matches(&p.os, &p.architecture, p.variant.as_deref())
                    && p.matches(&q.os, &q.architecture, q.variant.as_deref())
            }) {
                return Err(PlatformError(format!("{p} (named twice in {s:?})")));
            }
            list.push(p);
        }
        Ok(match list.len() {
            1 => Platforms::One(list.remove(0)),
            _ => Platforms::List(list),
        })
    }
}

/// One entry of an image index / manifest list, as far as platform selection cares.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct IndexEntry {
    pub digest: String,
    #[serde(default, rename = "mediaType")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub platform: Option<IndexPlatform>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct IndexPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct IndexDoc {
    #[serde(default)]
    pub manifests: Vec<IndexEntry>,
}

/// The platforms an index offers, in its order, without attestations (`unknown/unknown`) or
/// repeats.
pub(crate) fn offered(index: &IndexDoc) -> Vec<Platform> {
    let mut out: Vec<Platform> = Vec::new();
    for p in index.manifests.iter().filter_map(|e| e.platform.as_ref()) {
        let p = Platform::new(&p.os, &p.architecture, p.variant.as_deref());
        if p.os != "unknown" && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Pick the entry of `index` for `want`: an exact variant match wins over a loose one.
/// Returns the entry or the list of platforms the index offers (for the error message).
pub(crate) fn select<'a>(index: &'a IndexDoc, want: &Platform) -> Result<&'a IndexEntry, Vec<String>> {
    let candidates: Vec<&IndexEntry> = index
        .manifests
        .iter()
        .filter(|e| {
            e.platform.as_ref().is_some_and(|p| {
                // Attestation manifests (buildx) use unknown/unknown.
                p.os != "unknown" && want.matches(&p.os, &p.architecture, p.variant.as_deref())
            })
        })
        .collect();
    if let Some(exact) = candidates.iter().find(|e| {
        let p = e.platform.as_ref().unwrap();
        p.variant.as_deref() == want.variant.as_deref()
    }) {
        return Ok(exact);
    }
    if let Some(first) = candidates.first() {
        return Ok(first);
    }
    let mut available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref()).to_string())
        .collect();
    available.dedup();
    Err(available)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(json: &str) -> IndexDoc {
        serde_json::from_str(json).unwrap()
    }

    const NODE: &str = r#"{"manifests":[
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:amd","size":1,"platform":{"os":"linux","architecture":"amd64"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:armv6","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v6"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:armv7","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:arm64","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:att","size":1,"platform":{"os":"unknown","architecture":"unknown"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:win","size":1,"platform":{"os":"windows","architecture":"amd64"}}
    ]}"#;

    #[test]
    fn parse_and_display() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p, Platform::new("linux", "arm64", Some("v8")));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!("linux/amd64".parse::<Platform>().unwrap().to_string(), "linux/amd64");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//x".parse::<Platform>().is_err());
        assert!("a/b/c/d"
            .parse::<Platform>()
            .unwrap_err()
            .to_string()
            .contains("os/architecture"));
        assert_eq!(Platform::default().os, "linux");
    }

    #[test]
    fn platform_lists_parse_and_refuse_repeats_and_blanks() {
        assert_eq!("all".parse::<Platforms>().unwrap(), Platforms::All);
        assert_eq!(
            "linux/arm64".parse::<Platforms>().unwrap(),
            Platforms::One(Platform::new("linux", "arm64", None))
        );
        assert_eq!(
            "linux/amd64, linux/arm64/v8".parse::<Platforms>().unwrap(),
            Platforms::List(vec![
                Platform::new("linux", "amd64", None),
                Platform::new("linux", "arm64", Some("v8"))
            ])
        );
        for bad in [
            "linux/amd64,",
            "linux/amd64,,linux/arm64",
            "linux",
            "linux/amd64,linux/arm64,linux/arm64/v8",
        ] {
            let err = bad.parse::<Platforms>().unwrap_err().to_string();
            assert!(err.starts_with("invalid platform"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_config_names_its_platform_or_is_linux_amd64() {
        let config = serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v6"});
        assert_eq!(Platform::of_config(&config), Platform::new("linux", "arm", Some("v6")));
        let config = serde_json::json!({"architecture": "", "variant": ""});
        assert_eq!(Platform::of_config(&config), Platform::new("linux", "amd64", None));
    }

    #[test]
    fn selects_platforms() {
        let idx = index(NODE);
        let pick = |s: &str| select(&idx, &s.parse().unwrap()).map(|e| e.digest.clone());
        assert_eq!(pick("linux/amd64").unwrap(), "sha256:amd");
        assert_eq!(pick("linux/arm64").unwrap(), "sha256:arm64");
        assert_eq!(pick("linux/arm64/v8").unwrap(), "sha256:arm64");
        assert_eq!(pick("linux/arm/v7").unwrap(), "sha256:armv7");
        assert_eq!(pick("linux/arm/v6").unwrap(), "sha256:armv6");
        assert_eq!(pick("windows/amd64").unwrap(), "sha256:win");
        let err = pick("linux/s390x").unwrap_err();
        assert_eq!(
            err,
            vec![
                "linux/amd64",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm64/v8",
                "windows/amd64"
            ]
        );
        assert!(pick("linux/arm/v5").is_err());
    }

    #[test]
    fn exact_variant_preferred() {
        let idx = index(
            r#"{"manifests":[
            {"digest":"sha256:v6","platform":{"os":"linux","architecture":"arm","variant":"v6"}},
            {"digest":"sha256:v7","platform":{"os":"linux","architecture":"arm","variant":"v7"}}]}"#,
        );
        let want = Platform::new("linux", "arm", Some("v7"));
        assert_eq!(select(&idx, &want).unwrap().digest, "sha256:v7");
        // No variant asked: the first arm entry.
        let want = Platform::new("linux", "arm", None);
        assert_eq!(select(&idx, &want).unwrap().digest, "sha256:v6");
        // arm64 asked with v8 matches an entry with no variant.
        let idx = index(r#"{"manifests":[{"digest":"sha256:a","platform":{"os":"linux","architecture":"arm64"}}]}"#);
        assert_eq!(
            select(&idx, &Platform::new("linux", "arm64", Some("v8")))
                .unwrap()
                .digest,
            "sha256:a"
        );
    }
}

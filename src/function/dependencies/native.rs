//! Whether the installed packages' native code is for the image's platform. An install for a
//! platform other than the builder's (`--platform linux/arm64` on an amd64 machine) takes each
//! package's prebuilt binaries for the target (pip's platform tags, npm's `--cpu`); a package
//! that has none may instead have compiled or fetched one for the builder's machine, which
//! would fail only when the function first loads it, on a node of the other architecture.
//! This walk finds that at build time and names the package.

use crate::oci::platform::Platform;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// A package whose native code is all for another machine.
#[derive(Debug, PartialEq, Eq)]
pub struct Foreign {
    /// `sharp`, `@img/sharp-linux-x64`, `markupsafe`.
    pub package: String,
    /// One of its binaries, relative to the installed tree.
    pub file: String,
    /// What that binary is built for (`x86-64`).
    pub machine: String,
}

/// ELF `e_machine` values for the architectures images are built for.
fn elf_machine(architecture: &str) -> Option<u16> {
    Some(match architecture {
        "amd64" => 62,
        "arm64" => 183,
        "arm" => 40,
        "386" => 3,
        "ppc64le" | "ppc64" => 21,
        "s390x" => 22,
        "riscv64" => 243,
        "loong64" => 258,
        _ => return None,
    })
}

fn machine_name(machine: u16) -> String {
    match machine {
        62 => "x86-64".into(),
        183 => "aarch64".into(),
        40 => "arm".into(),
        3 => "i386".into(),
        21 => "ppc64".into(),
        22 => "s390x".into(),
        243 => "riscv64".into(),
        258 => "loongarch64".into(),
        other => format!("ELF machine {other}"),
    }
}

/// The `e_machine` of an ELF file, or None for anything else.
fn read_machine(path: &Path) -> Option<u16> {
    let mut head = [0u8; 20];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    if &head[..4] != b"\x7fELF" {
        return None;
    }
    let bytes = [head[18], head[19]];
    Some(match head[5] {
        2 => u16::from_be_bytes(bytes),
        _ => u16::from_le_bytes(bytes),
    })
}

/// The package a file of the installed tree belongs to: below the last `node_modules`, the
/// (scoped) package directory; else the top directory (a Python package, `numpy.libs`) or the
/// file itself (a top-level extension module).
fn package_of(relative: &str) -> String {
    let parts: Vec<&str> = relative.split('/').collect();
    if let Some(i) = parts.iter().rposition(|p| *p == "node_modules") {
        let rest = &parts[i + 1..];
        return match rest {
            [scope, name, ..] if scope.starts_with('@') => format!("{scope}/{name}"),
            [name, ..] => name.to_string(),
            [] => relative.to_string(),
        };
    }
    let top = parts[0];
    // `numpy.libs`, `numpy-2.1.0.dist-info`: the distribution's name.
    let name = top.strip_suffix(".libs").unwrap_or(top);
    name.split(['-', '.']).next().unwrap_or(name).to_string()
}

/// The first package under `tree` (the installed packages' root) that holds native code and
/// none of it for `target`'s architecture. A package with binaries for several machines
/// (prebuilds for each) passes when one of them is the target's.
pub fn foreign_package(tree: &Path, target: &Platform) -> Option<Foreign> {
    let want = elf_machine(&target.architecture)?;
    // package -> (has one for the target, first foreign binary)
    let mut packages: BTreeMap<String, (bool, Option<(String, u16)>)> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(tree)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        let Some(machine) = read_machine(entry.path()) else {
            continue;
        };
        let Ok(relative) = entry.path().strip_prefix(tree) else {
            continue;
        };
        let relative = relative.to_string_lossy().into_owned();
        let seen = packages.entry(package_of(&relative)).or_default();
        if machine == want {
            seen.0 = true;
        } else if seen.1.is_none() {
            seen.1 = Some((relative, machine));
        }
    }
    packages
        .into_iter()
        .find_map(|(package, (matched, foreign))| match (matched, foreign) {
            (false, Some((file, machine))) => Some(Foreign {
                package,
                file,
                machine: machine_name(machine),
            }),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little-endian
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b
    }

    fn put(root: &Path, path: &str, bytes: &[u8]) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn a_package_whose_binaries_are_all_for_another_machine_is_named() {
        let arm64 = Platform::new("linux", "arm64", None);
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        put(t, "node_modules/left-pad/index.js", b"module.exports = 1");
        // Prebuilds for both machines: fine.
        put(t, "node_modules/bcrypt/prebuilds/linux-x64/bcrypt.node", &elf(62));
        put(t, "node_modules/bcrypt/prebuilds/linux-arm64/bcrypt.node", &elf(183));
        put(t, "node_modules/@img/sharp-linux-arm64/lib/sharp.node", &elf(183));
        assert_eq!(foreign_package(t, &arm64), None);
        // Compiled on the builder, for the builder: named.
        put(t, "node_modules/@scope/native/build/Release/addon.node", &elf(62));
        assert_eq!(
            foreign_package(t, &arm64),
            Some(Foreign {
                package: "@scope/native".into(),
                file: "node_modules/@scope/native/build/Release/addon.node".into(),
                machine: "x86-64".into(),
            })
        );
        // For amd64 the arm64-only package is the foreign one.
        let amd64 = Platform::new("linux", "amd64", None);
        assert_eq!(foreign_package(t, &amd64).unwrap().package, "@img/sharp-linux-arm64");
    }

    #[test]
    fn python_packages_are_named_by_their_top_directory() {
        assert_eq!(
            package_of("markupsafe/_speedups.cpython-312-x86_64-linux-gnu.so"),
            "markupsafe"
        );
        assert_eq!(package_of("numpy.libs/libopenblas.so"), "numpy");
        assert_eq!(
            package_of("_cffi_backend.cpython-312-x86_64-linux-gnu.so"),
            "_cffi_backend"
        );
        assert_eq!(package_of("node_modules/a/node_modules/b/x.node"), "b");
        // Not ELF, or too short to be: skipped.
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "pkg/script.sh", b"#!/bin/sh\n");
        put(dir.path(), "pkg/tiny", b"\x7fELF");
        assert_eq!(
            foreign_package(dir.path(), &Platform::new("linux", "arm64", None)),
            None
        );
    }
}

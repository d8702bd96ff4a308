//! File-system questions the function's parts share.

use std::fs::Metadata;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Whether `meta`'s mode has an execute bit, for anyone (what an image entry's 0755 says).
pub fn has_execute_bit(meta: &Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// Whether `path` (followed through symlinks) has an execute bit, for anyone.
pub fn is_executable(path: &Path) -> std::io::Result<bool> {
    Ok(has_execute_bit(&std::fs::metadata(path)?))
}

/// Whether `path` (followed through symlinks) is a regular file with an execute bit: a program
/// a shell would run.
pub fn is_program(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && has_execute_bit(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_bits_and_programs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        mode(&file, 0o644);
        assert!(!is_executable(&file).unwrap());
        assert!(!is_program(&file));
        mode(&file, 0o701);
        assert!(is_executable(&file).unwrap());
        assert!(is_program(&file));
        // A directory has execute bits but is no program; a missing file is an error.
        assert!(is_executable(dir.path()).unwrap());
        assert!(!is_program(dir.path()));
        assert!(is_executable(&dir.path().join("absent")).is_err());
        assert!(!is_program(&dir.path().join("absent")));
    }
}

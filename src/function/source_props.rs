//! Property: the builder accepts exactly the trees whose every symlink resolves inside the root.
//! The oracle asks the real kernel (open the link, read back the path it reached) and, where the
//! kernel cannot tell (a dangling link), walks the real directory itself, one `lstat` and
//! `readlink` at a time: neither shares code with `links.rs`, which reads the entries list.

use super::*;
use crate::function::runtime::Runtimes;
use proptest::prelude::*;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;

#[derive(Debug, Clone)]
enum Kind {
    File,
    Dir,
    Link(String),
}

fn entry() -> impl Strategy<Value = (String, Kind)> {
    let name = prop::sample::select(vec!["a", "b", "c"]);
    let path = prop::collection::vec(name, 1..=3).prop_map(|p| p.join("/"));
    let part = prop::sample::select(vec!["..", "..", ".", "a", "b", "c", "handler.js"]);
    let target = prop::collection::vec(part, 1..=4).prop_map(|t| t.join("/"));
    let kind = prop_oneof![Just(Kind::File), Just(Kind::Dir), target.prop_map(Kind::Link)];
    (path, kind)
}

/// Lays the tree out below `root` (with `handler.js`); entries that clash with earlier ones
/// (a path below a file or link, or taken) are left out.
fn lay_out(root: &Path, tree: &[(String, Kind)]) {
    std::fs::write(root.join("handler.js"), "x").unwrap();
    'entries: for (path, kind) in tree {
        let parts: Vec<&str> = path.split('/').collect();
        let mut dir = root.to_path_buf();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue 'entries,
                Err(_) => std::fs::create_dir(&dir).unwrap(),
            }
        }
        let at = root.join(path);
        if std::fs::symlink_metadata(&at).is_ok() {
            continue;
        }
        match kind {
            Kind::File => std::fs::write(&at, "f").unwrap(),
            Kind::Dir => std::fs::create_dir(&at).unwrap(),
            Kind::Link(target) => symlink(target, &at).unwrap(),
        }
    }
}

/// The kernel's answer for one link: `Some(true)` inside, `Some(false)` outside or ELOOP,
/// `None` if it dangles. The root's name is in no target, so a path that left the root cannot
/// come back into it: ending inside means never having left.
fn kernel(root: &Path, link: &Path) -> Option<bool> {
    match std::fs::File::open(link) {
        Ok(f) => {
            let reached = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
            Some(reached.starts_with(root))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Some(false),
        Err(_) => None,
    }
}

/// The same question walked by hand on the real directory, a missing name taken as a plain
/// directory: `Err` if the walk leaves `root`, meets an absolute target or follows > 40 links.
fn walk(root: &Path, mut at: PathBuf, target: &Path, hops: &mut usize) -> Result<PathBuf, ()> {
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if at == root => return Err(()),
            Component::ParentDir => {
                at.pop();
            }
            Component::Normal(name) => {
                let next = at.join(name);
                match std::fs::symlink_metadata(&next) {
                    Ok(m) if m.file_type().is_symlink() => {
                        *hops += 1;
                        if *hops > 40 {
                            return Err(());
                        }
                        at = walk(root, at, &std::fs::read_link(&next).unwrap(), hops)?;
                    }
                    _ => at = next,
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(()),
        }
    }
    Ok(at)
}

fn oracle_accepts(root: &Path) -> bool {
    let mut all_inside = true;
    for item in walkdir::WalkDir::new(root).min_depth(1) {
        let item = item.unwrap();
        if !item.path_is_symlink() {
            continue;
        }
        let link = item.path();
        let mut hops = 1;
        let by_hand = walk(
            root,
            link.parent().unwrap().into(),
            &std::fs::read_link(link).unwrap(),
            &mut hops,
        )
        .is_ok();
        let inside = match kernel(root, link) {
            Some(inside) => {
                assert_eq!(inside, by_hand, "the two oracles disagree on {}", link.display());
                inside
            }
            None => by_hand,
        };
        all_inside &= inside;
    }
    all_inside
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_builder_accepts_exactly_the_trees_whose_links_stay_inside(
        tree in prop::collection::vec(entry(), 0..8)
    ) {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().canonicalize().unwrap().join("fn-root");
        std::fs::create_dir(&root).unwrap();
        lay_out(&root, &tree);
        let want = oracle_accepts(&root);
        let runtime = Runtimes::Embedded.load("nodejs20").unwrap();
        match FunctionSource::load(&root, &runtime) {
            Ok(_) => prop_assert!(want, "accepted, but a link leaves the root"),
            Err(e @ (SourceError::EscapingSymlink { .. } | SourceError::LinkLoop { .. })) => {
                prop_assert!(!want, "refused a tree whose links stay inside: {e}")
            }
            Err(e) => prop_assert!(false, "unexpected error: {e}"),
        }
    }
}

/// One entry of a ConfigMap mount of any shape: the kubelet's (`key -> ..data/key`, `..data ->
/// ..<timestamp>`), and what a hostile or broken mount might hold instead.
fn mount_entry() -> impl Strategy<Value = (String, Kind)> {
    let name = prop::sample::select(vec![
        "..data",
        "..2026_12_03",
        "..2026_12_03/source",
        "..2026_12_03/dependencies",
        "source",
        "dependencies",
        "handler.js",
        "package.json",
        "..data/source",
        "x/..data",
    ]);
    let target = prop::sample::select(vec![
        "..2026_12_03",
        "..data/source",
        "..data/dependencies",
        "..2026_12_03/source",
        "../outside",
        "../outside/secret",
        "/etc",
        "..data",
        "source",
        ".",
        "..",
        "..data/../../outside/secret",
    ]);
    let kind = prop_oneof![
        Just(Kind::File),
        Just(Kind::Dir),
        target.prop_map(|t| Kind::Link(t.to_string()))
    ];
    (name.prop_map(str::to_string), kind)
}

/// Lays a mount out below `root` (no handler of its own: the keys bring it, or not).
fn lay_out_mount(root: &Path, tree: &[(String, Kind)]) {
    for (path, kind) in tree {
        let at = root.join(path);
        let Some(parent) = at.parent() else { continue };
        if std::fs::create_dir_all(parent).is_err() || std::fs::symlink_metadata(&at).is_ok() {
            continue; // below a file or link, or taken
        }
        let _ = match kind {
            Kind::File => std::fs::write(&at, "inside"),
            Kind::Dir => std::fs::create_dir(&at),
            Kind::Link(target) => symlink(target, &at),
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a mount holds, loading it gives an answer (no panic), and what it accepts holds
    /// nothing from outside the mount.
    #[test]
    fn configmap_mounts_of_any_shape_give_an_answer_and_nothing_from_outside(
        tree in prop::collection::vec(mount_entry(), 1..10)
    ) {
        let outer = tempfile::tempdir().unwrap();
        let base = outer.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/secret"), "OUTSIDE").unwrap();
        let root = base.join("mount");
        std::fs::create_dir(&root).unwrap();
        lay_out_mount(&root, &tree);
        let runtime = Runtimes::Embedded.load("nodejs20").unwrap();
        if let Ok(source) = FunctionSource::load(&root, &runtime) {
            for e in &source.entries {
                if let EntryKind::File { content: Content::Path(p), .. } = &e.kind {
                    let real = p.canonicalize().unwrap();
                    prop_assert!(real.starts_with(&root), "{} is read from {}", e.path, real.display());
                }
            }
        }
    }
}

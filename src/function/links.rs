//! Symlinks resolved as the kernel will resolve them once the layer is unpacked: through the
//! other symlinks of the same tree, from the entries list (what the image holds), not the host.
//!
//! Checking each link's target on its own is not enough: `up -> a/b` and `esc -> up/../../..`
//! are each harmless lexically, yet `esc` leaves the tree. So every component of a path that is
//! an in-tree symlink is replaced by that symlink's target (relative to the symlink's
//! directory), and `..` applies to the resolved prefix. A resolution that ever climbs above the
//! root, meets an absolute target, or follows more than [`MAX_HOPS`] symlinks (Linux's ELOOP)
//! is refused. A component that is not in the tree (a dangling link, or a name a later layer
//! may add) is taken as a plain directory and the walk goes on, so that a dangling link is kept
//! only if it can never lead outside, whatever is created there later.

use crate::oci::layer::EntryKind;
use crate::text::escape_control;
use std::collections::HashMap;

/// How many symlinks one path resolution may follow (Linux's `MAXSYMLINKS`).
pub const MAX_HOPS: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProblem {
    /// An absolute target: it resolves against the image's `/`, outside the tree.
    Absolute,
    /// The resolution climbs above the tree's root.
    Outside,
    /// More than [`MAX_HOPS`] symlinks (a cycle such as `a -> b`, `b -> a`).
    Loop,
}

/// A symlink of the tree that is refused, and why. `path` is relative to the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("symlink {} -> {} {}", escape_control(.path), escape_control(.target), match .problem {
    LinkProblem::Absolute | LinkProblem::Outside => "points outside the source directory",
    LinkProblem::Loop => "never resolves: it loops through more than 40 symlinks",
})]
pub struct LinkError {
    pub path: String,
    pub target: String,
    pub problem: LinkProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node<'a> {
    Dir,
    File,
    Link(&'a str),
}

/// The tree as the layer holds it: paths relative to the root, `/`-separated, without leading
/// or trailing `/`, each with what is there.
pub struct Tree<'a> {
    nodes: HashMap<&'a str, Node<'a>>,
}

impl<'a> Tree<'a> {
    pub fn new(entries: impl IntoIterator<Item = (&'a str, &'a EntryKind)>) -> Tree<'a> {
        let nodes = entries
            .into_iter()
            .map(|(path, kind)| {
                let node = match kind {
                    EntryKind::Dir => Node::Dir,
                    EntryKind::File { .. } => Node::File,
                    EntryKind::Symlink { target } => Node::Link(target),
                };
                (path, node)
            })
            .collect();
        Tree { nodes }
    }

    /// Resolves `path` (relative to the root, following a symlink at its end too): the entry it
    /// leads to, with that entry's path, or `None` if nothing is there (dangling).
    pub fn resolve(&self, path: &str) -> Result<Option<(&'a str, Node<'a>)>, LinkProblem> {
        let mut hops = 0;
        // The resolved prefix (no symlinks in it) and the components still to walk, last first.
        let mut done: Vec<&str> = Vec::new();
        let mut todo: Vec<&str> = path.split('/').rev().collect();
        while let Some(part) = todo.pop() {
            match part {
                "" | "." => continue,
                ".." => {
                    done.pop().ok_or(LinkProblem::Outside)?;
                    continue;
                }
                name => done.push(name),
            }
            if let Some(Node::Link(target)) = self.nodes.get(done.join("/").as_str()) {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(LinkProblem::Loop);
                }
                if target.starts_with('/') {
                    return Err(LinkProblem::Absolute);
                }
                done.pop(); // relative to the symlink's directory
                todo.extend(target.split('/').rev());
            }
        }
        Ok(self.nodes.get_key_value(done.join("/").as_str()).map(|(p, n)| (*p, *n)))
    }

    /// Every symlink of the tree resolves inside it (or dangles inside it).
    pub fn check(&self) -> Result<(), LinkError> {
        let mut links: Vec<(&str, &str)> = self
            .nodes
            .iter()
            .filter_map(|(path, node)| match node {
                Node::Link(target) => Some((*path, *target)),
                _ => None,
            })
            .collect();
        links.sort(); // the same error every time
        for (path, target) in links {
            self.resolve(path).map_err(|problem| LinkError {
                path: path.into(),
                target: target.into(),
                problem,
            })?;
        }
        Ok(())
    }
}

/// Checks the symlinks of a layer's tree: `entries` are (path relative to the tree's root, what
/// is there); every symlink must resolve, through the others, inside that root.
///
/// For the dependency layer: `check_links(entries.iter().filter_map(|e| Some((e.path.strip_prefix(&prefix)?, &e.kind))))`
/// with `prefix = format!("{dep_dir}/")`.
pub(crate) fn check_links<'a>(entries: impl IntoIterator<Item = (&'a str, &'a EntryKind)>) -> Result<(), LinkError> {
    Tree::new(entries).check()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(spec: &[(&str, &str)]) -> Vec<(String, EntryKind)> {
        spec.iter()
            .map(|(path, what)| {
                let kind = match *what {
                    "/" => EntryKind::Dir,
                    "" => EntryKind::File {
                        content: crate::oci::layer::Content::Bytes(b"".as_slice().into()),
                        executable: false,
                    },
                    target => EntryKind::Symlink { target: target.into() },
                };
                (path.to_string(), kind)
            })
            .collect()
    }

    fn check(spec: &[(&str, &str)]) -> Result<(), LinkError> {
        let t = tree(spec);
        check_links(t.iter().map(|(p, k)| (p.as_str(), k)))
    }

    fn problem(spec: &[(&str, &str)]) -> Option<(String, LinkProblem)> {
        check(spec).err().map(|e| (e.path, e.problem))
    }

    #[test]
    fn links_that_resolve_inside_are_kept() {
        let spec = [
            ("a", "/"),
            ("a/b", "/"),
            ("a/b/f", ""),
            ("a/up", ".."),
            ("x", "a/up/a/b/f"),
            ("dangling", "nothing/here"),
            ("self-dir", "."),
        ];
        assert_eq!(check(&spec), Ok(()));
    }

    #[test]
    fn two_step_escapes_are_refused() {
        // Each link is harmless read on its own; through `y` the second leaves the root.
        let spec = [("sub", "/"), ("y", "sub/.."), ("z", "y/..")];
        assert_eq!(problem(&spec), Some(("z".into(), LinkProblem::Outside)));
        let spec = [
            ("a", "/"),
            ("a/b", "/"),
            ("a/b/c", "/"),
            ("a/b/c/up", "../.."),
            ("a/b/c/esc", "up/../../../../etc/passwd"),
        ];
        assert_eq!(problem(&spec), Some(("a/b/c/esc".into(), LinkProblem::Outside)));
    }

    #[test]
    fn a_dangling_link_may_not_lead_outside_once_its_missing_part_exists() {
        assert_eq!(
            problem(&[("l", "node_modules/../../x")]),
            Some(("l".into(), LinkProblem::Outside))
        );
        assert_eq!(
            problem(&[("f", ""), ("l", "f/../../x")]),
            Some(("l".into(), LinkProblem::Outside))
        );
    }

    #[test]
    fn loops_and_absolute_targets_are_refused() {
        assert_eq!(
            problem(&[("handler.js", "handler.js")]),
            Some(("handler.js".into(), LinkProblem::Loop))
        );
        assert_eq!(
            problem(&[("a", "b"), ("b", "a")]),
            Some(("a".into(), LinkProblem::Loop))
        );
        assert_eq!(
            problem(&[("a", "/etc/passwd")]),
            Some(("a".into(), LinkProblem::Absolute))
        );
        // An absolute target reached through another link.
        assert_eq!(
            problem(&[("a", "/etc"), ("d", "/"), ("d/l", "../a/passwd")]),
            Some(("a".into(), LinkProblem::Absolute))
        );
    }

    #[test]
    fn forty_links_resolve_and_forty_one_loop() {
        let chain = |n: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| {
                    (
                        format!("l{i}"),
                        if i + 1 == n { "f".into() } else { format!("l{}", i + 1) },
                    )
                })
                .collect()
        };
        let run = |n: usize| {
            let c = chain(n);
            let mut spec: Vec<(&str, &str)> = c.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
            spec.push(("f", ""));
            let t = tree(&spec);
            let tree = Tree::new(t.iter().map(|(p, k)| (p.as_str(), k)));
            tree.resolve("l0").map(|r| r.map(|(p, _)| p.to_string()))
        };
        assert_eq!(run(40), Ok(Some("f".into())));
        assert_eq!(run(41), Err(LinkProblem::Loop));
    }

    #[test]
    fn resolve_names_the_real_entry() {
        let t = tree(&[("lib", "/"), ("lib/h.js", ""), ("handler.js", "lib/h.js")]);
        let tree = Tree::new(t.iter().map(|(p, k)| (p.as_str(), k)));
        assert_eq!(tree.resolve("handler.js"), Ok(Some(("lib/h.js", Node::File))));
        assert_eq!(tree.resolve("lib"), Ok(Some(("lib", Node::Dir))));
    }
}

//! What a function's dependency file asks for, read before anything runs: whether there is
//! anything to install, the files the installer gets (the dependency file, its lock file, and
//! local packages and included files it names), and clear errors for files no installer would take.
//! (Over 600 lines because of its tests, from line ~690: one attack or malformed file per case.)
//!
//! The installer runs in a staging directory holding exactly these files, so the cache key,
//! which hashes them all, covers everything the installer can see of the function.

use super::DependencyError;
use crate::function::runtime::Runtime;
use crate::function::source::{FunctionSource, SourceEntry};
use crate::oci::layer::{Content, EntryKind};
use serde_json::Value;
use std::collections::BTreeMap;

/// The package ecosystem of a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecosystem {
    Npm,
    Pip,
}

impl Ecosystem {
    pub fn name(self) -> &'static str {
        match self {
            Ecosystem::Npm => "npm",
            Ecosystem::Pip => "pip",
        }
    }
}

/// Files npm reads besides package.json, in npm's order of preference.
const NPM_LOCK_FILES: &[&str] = &["npm-shrinkwrap.json", "package-lock.json"];
/// Nested `-r` files deeper than this are refused (a loop, most likely).
const MAX_INCLUDE_DEPTH: usize = 8;

/// A function's dependencies, ready to install.
#[derive(Debug, Clone)]
pub struct Plan {
    pub ecosystem: Ecosystem,
    /// The dependency file's name (`package.json`, `requirements.txt`).
    pub dependency_file: String,
    /// The lock file, when there is one (npm: `npm ci` instead of `npm install`).
    pub lock_file: Option<String>,
    /// Every file and directory the installer gets, relative to the staging directory, sorted.
    pub inputs: Vec<SourceEntry>,
    /// How many packages the dependency file names directly.
    pub packages: usize,
}

/// The function's dependency plan, or `None` when it has no dependency file or one that names
/// no package (then no installer runs and the image has no dependency layer).
pub fn plan(source: &FunctionSource, runtime: &Runtime) -> Result<Option<Plan>, DependencyError> {
    let Some(installer) = runtime.spec.installer() else {
        return Ok(None);
    };
    let file = runtime.spec.dependency_file.as_str();
    let Some(entry) = find_file(source, file) else {
        return Ok(None);
    };
    let bytes = read(entry)?;
    match installer {
        "npm" => plan_npm(source, file, &bytes),
        "pip" => plan_pip(source, file, &bytes),
        other => Err(DependencyError::Unsupported(other.into())),
    }
}

fn bad(file: &str, message: impl Into<String>) -> DependencyError {
    DependencyError::BadFile {
        file: file.into(),
        message: message.into(),
    }
}

fn find_file<'a>(source: &'a FunctionSource, path: &str) -> Option<&'a SourceEntry> {
    source
        .entries
        .iter()
        .find(|e| e.path == path && matches!(e.kind, EntryKind::File { .. }))
}

pub(super) fn read(entry: &SourceEntry) -> Result<Vec<u8>, DependencyError> {
    match &entry.kind {
        EntryKind::File {
            content: Content::Bytes(b),
            ..
        } => Ok(b.to_vec()),
        EntryKind::File {
            content: Content::Path(p),
            ..
        } => std::fs::read(p).map_err(|source| DependencyError::Read {
            path: p.clone(),
            source,
        }),
        _ => Ok(Vec::new()),
    }
}

/// Collects the entries a plan stages: a file, or a directory and everything below it.
struct Inputs<'a> {
    source: &'a FunctionSource,
    picked: BTreeMap<String, SourceEntry>,
}

impl<'a> Inputs<'a> {
    fn new(source: &'a FunctionSource) -> Self {
        Inputs {
            source,
            picked: BTreeMap::new(),
        }
    }

    /// Adds the entry at `path` (and, for a directory, its contents); false if there is none.
    fn add(&mut self, path: &str) -> bool {
        let prefix = format!("{path}/");
        let mut found = false;
        for e in &self.source.entries {
            if e.path == path || e.path.starts_with(&prefix) {
                self.picked.insert(e.path.clone(), e.clone());
                found = true;
            }
        }
        // The directories above it, so the staging tree can be made in order.
        let mut parent = path;
        while let Some((p, _)) = parent.rsplit_once('/') {
            if let Some(e) = self.source.entries.iter().find(|e| e.path == p) {
                self.picked.insert(p.into(), e.clone());
            }
            parent = p;
        }
        found
    }

    fn finish(self) -> Vec<SourceEntry> {
        self.picked.into_values().collect()
    }
}

/// `a/./b/../c` → `a/c`, relative to the function's directory; None if it is absolute or leaves it.
fn normalise(base_dir: &str, path: &str) -> Option<String> {
    if path.starts_with('/') || path.starts_with('~') {
        return None;
    }
    let mut parts: Vec<&str> = base_dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

// --- npm ---------------------------------------------------------------------------------------

fn plan_npm(source: &FunctionSource, file: &str, bytes: &[u8]) -> Result<Option<Plan>, DependencyError> {
    let json: Value = serde_json::from_slice(bytes).map_err(|e| bad(file, format!("is not valid JSON: {e}")))?;
    let object = json.as_object().ok_or_else(|| {
        bad(
            file,
            "must be a JSON object (like {\"dependencies\": {\"left-pad\": \"^1.3.0\"}})",
        )
    })?;
    let mut inputs = Inputs::new(source);
    inputs.add(file);
    let mut packages = 0;
    // Every section npm reads a spec from: dev and peer dependencies are resolved too, and a
    // local path or local repository in any of them would be read by npm.
    for field in [
        "dependencies",
        "optionalDependencies",
        "peerDependencies",
        "devDependencies",
    ] {
        let deps = match object.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(deps)) => deps,
            Some(_) => {
                return Err(bad(
                    file,
                    format!("\"{field}\" must be an object of package names and versions"),
                ))
            }
        };
        for (name, spec) in deps {
            let spec = spec
                .as_str()
                .ok_or_else(|| bad(file, format!("\"{field}\": the version of \"{name}\" must be a string")))?;
            if field != "devDependencies" {
                packages += 1;
            }
            check_npm_spec(file, &format!("\"{field}\".\"{name}\""), spec, &mut inputs)?;
        }
    }
    if let Some(overrides) = object.get("overrides") {
        check_npm_overrides(file, "\"overrides\"", overrides, &mut inputs)?;
    }
    if let Some(workspaces) = object.get("workspaces") {
        let list = workspaces.get("packages").unwrap_or(workspaces);
        // npm would read every workspace's package.json: none are staged, so none are taken.
        if let Some(w) = list.as_array().and_then(|l| l.first()) {
            let w = w.as_str().unwrap_or_default();
            let fixed = w.split(['*', '?', '[', '{']).next().unwrap_or_default();
            if (normalise("", fixed).is_none() && !fixed.is_empty()) || fixed.starts_with('/') || fixed.contains("${") {
                return Err(bad(
                    file,
                    format!("\"workspaces\": {w} is outside the function's directory"),
                ));
            }
            return Err(bad(file, format!("\"workspaces\": {w}: workspaces are not supported for functions; name local packages with file: instead")));
        }
    }
    if packages == 0 {
        return Ok(None);
    }
    let mut lock_file = None;
    for lock in NPM_LOCK_FILES {
        if let Some(entry) = find_file(source, lock) {
            let doc: Value =
                serde_json::from_slice(&read(entry)?).map_err(|e| bad(lock, format!("is not valid JSON: {e}")))?;
            check_npm_lock(lock, &doc)?;
            inputs.add(lock);
            lock_file.get_or_insert_with(|| lock.to_string());
        }
    }
    Ok(Some(Plan {
        ecosystem: Ecosystem::Npm,
        dependency_file: file.into(),
        lock_file,
        inputs: inputs.finish(),
        packages,
    }))
}

/// One npm spec (`1.2.3`, `file:lib`, `git+https://…`, `npm:other@file:x`): local paths must be
/// inside the function, local repositories are refused.
fn check_npm_spec(file: &str, at: &str, spec: &str, inputs: &mut Inputs) -> Result<(), DependencyError> {
    // An alias `npm:name@spec` (the name may be scoped: `npm:@scope/name@spec`).
    if let Some(alias) = spec.strip_prefix("npm:") {
        let after_scope = usize::from(alias.starts_with('@'));
        if let Some(at_sign) = alias[after_scope..].find('@') {
            return check_npm_spec(file, at, &alias[after_scope + at_sign + 1..], inputs);
        }
        return Ok(());
    }
    if is_local_repository(spec) {
        return Err(bad(file, format!("{at}: {spec} reads a repository from the builder's own filesystem; use a remote git URL or put the package into the function")));
    }
    if spec.contains("${") && npm_local_path(spec).is_some() {
        return Err(bad(
            file,
            format!("{at}: {spec}: variables are not expanded in a function's local paths"),
        ));
    }
    if let Some(path) = npm_local_path(spec) {
        let rel = normalise("", path).ok_or_else(|| {
            bad(file, format!("{at}: {spec} is outside the function's directory; fnbuild installs from the function's own files, so put the package inside it"))
        })?;
        if !inputs.add(&rel) {
            return Err(bad(
                file,
                format!("{at}: {spec} names {rel}, which is not in the function's directory"),
            ));
        }
    }
    Ok(())
}

/// `overrides` values: specs, or objects of them (`{".": "1.0", "dep": "file:x"}`).
fn check_npm_overrides(file: &str, at: &str, value: &Value, inputs: &mut Inputs) -> Result<(), DependencyError> {
    match value {
        Value::String(spec) => check_npm_spec(file, at, spec, inputs),
        Value::Object(map) => {
            for (k, v) in map {
                check_npm_overrides(file, &format!("{at}.\"{k}\""), v, inputs)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A lock file's packages: every path it installs to or from, and every `resolved` / `version`
/// that is a local path, must be inside the function; local repositories are refused.
fn check_npm_lock(lock: &str, doc: &Value) -> Result<(), DependencyError> {
    let check_entry = |at: &str, entry: &Value| -> Result<(), DependencyError> {
        for field in ["resolved", "version"] {
            let Some(spec) = entry.get(field).and_then(Value::as_str) else {
                continue;
            };
            if is_local_repository(spec) {
                return Err(bad(
                    lock,
                    format!("{at}: \"{field}\" {spec} reads a repository from the builder's own filesystem"),
                ));
            }
            let local = npm_local_path(spec).or_else(|| {
                (field == "resolved" && entry.get("link").and_then(Value::as_bool) == Some(true)).then_some(spec)
            });
            if let Some(path) = local {
                if normalise("", path).is_none() {
                    return Err(bad(
                        lock,
                        format!("{at}: \"{field}\" {spec} is outside the function's directory"),
                    ));
                }
            }
        }
        Ok(())
    };
    if let Some(packages) = doc.get("packages").and_then(Value::as_object) {
        for (path, entry) in packages {
            let at = format!("\"packages\".\"{path}\"");
            if !path.is_empty() && (path.starts_with('/') || normalise("", path).is_none()) {
                return Err(bad(lock, format!("{at} is outside the function's directory")));
            }
            check_entry(&at, entry)?;
        }
    }
    // Lock files of version 1: nested `dependencies`.
    fn walk_v1(
        lock: &str,
        at: &str,
        deps: &Value,
        check: &dyn Fn(&str, &Value) -> Result<(), DependencyError>,
        depth: usize,
    ) -> Result<(), DependencyError> {
        let Some(deps) = deps.as_object() else { return Ok(()) };
        if depth > 64 {
            return Err(bad(lock, "\"dependencies\" nest too deep"));
        }
        for (name, entry) in deps {
            let here = format!("{at}.\"{name}\"");
            check(&here, entry)?;
            if let Some(inner) = entry.get("dependencies") {
                walk_v1(lock, &here, inner, check, depth + 1)?;
            }
        }
        Ok(())
    }
    if let Some(deps) = doc.get("dependencies") {
        walk_v1(lock, "\"dependencies\"", deps, &check_entry, 0)?;
    }
    Ok(())
}

/// `git+file:`, `file://` inside a git spec and the like: a repository on the builder's disk.
fn is_local_repository(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    [
        "git+file:",
        "hg+file:",
        "svn+file:",
        "bzr+file:",
        "git://localhost",
        "git+ssh://localhost",
    ]
    .iter()
    .any(|p| lower.contains(p))
        || (lower.starts_with("git") && lower.contains("file:"))
}

/// The path of a local package (`file:vendor/x.tgz`, `./lib`, `link:../x`), as npm reads it.
fn npm_local_path(spec: &str) -> Option<&str> {
    if let Some(rest) = spec.strip_prefix("file:").or_else(|| spec.strip_prefix("link:")) {
        return Some(rest.strip_prefix("//").unwrap_or(rest));
    }
    (spec.starts_with("./")
        || spec.starts_with("../")
        || spec.starts_with('/')
        || spec.starts_with("~/")
        || spec == "."
        || spec == "..")
        .then_some(spec)
}

// --- pip ---------------------------------------------------------------------------------------

fn plan_pip(source: &FunctionSource, file: &str, bytes: &[u8]) -> Result<Option<Plan>, DependencyError> {
    let mut inputs = Inputs::new(source);
    inputs.add(file);
    let mut packages = 0;
    scan_requirements(source, file, bytes, 0, true, &mut inputs, &mut packages)?;
    if packages == 0 {
        return Ok(None);
    }
    Ok(Some(Plan {
        ecosystem: Ecosystem::Pip,
        dependency_file: file.into(),
        lock_file: None,
        inputs: inputs.finish(),
        packages,
    }))
}

/// Reads one requirements file: checks each requirement, and collects the files it includes
/// (`-r`, `-c`) and the local packages it names.
fn scan_requirements(
    source: &FunctionSource,
    file: &str,
    bytes: &[u8],
    depth: usize,
    counts: bool,
    inputs: &mut Inputs,
    packages: &mut usize,
) -> Result<(), DependencyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad(file, "is not UTF-8 text"))?;
    let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
    let local = |inputs: &mut Inputs, line: usize, path: &str, what: &str| -> Result<(), DependencyError> {
        let rel = normalise("", path).ok_or_else(|| {
            bad(
                file,
                format!("line {line}: {what} {path} is outside the function's directory; put it inside"),
            )
        })?;
        if !inputs.add(&rel) {
            return Err(bad(
                file,
                format!("line {line}: {what} {path} is not in the function's directory"),
            ));
        }
        Ok(())
    };
    for (number, line) in logical_lines(text) {
        let line = strip_comment(&line);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('-') {
            let (option, value) = split_option(line);
            if value.contains("${") && !matches!(option, "-i" | "--index-url" | "--extra-index-url") {
                return Err(bad(file, format!("line {number}: {option} {value}: variables are not expanded in a function's requirements paths")));
            }
            match option {
                "-r" | "--requirement" | "-c" | "--constraint" => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(bad(
                            file,
                            format!("line {number}: requirement files nest more than {MAX_INCLUDE_DEPTH} deep"),
                        ));
                    }
                    if value.contains("://") || value.starts_with("file:") {
                        return Err(bad(file, format!("line {number}: {option} {value}: fnbuild installs from the function's own files; copy the file into the function")));
                    }
                    let rel = normalise(dir, value).ok_or_else(|| {
                        bad(
                            file,
                            format!("line {number}: {option} {value} is outside the function's directory"),
                        )
                    })?;
                    let entry = find_file(source, &rel).ok_or_else(|| {
                        bad(
                            file,
                            format!(
                                "line {number}: {option} {value}: there is no such file in the function's directory"
                            ),
                        )
                    })?;
                    let bytes = read(entry)?;
                    inputs.add(&rel);
                    let is_requirement = matches!(option, "-r" | "--requirement");
                    scan_requirements(
                        source,
                        &rel,
                        &bytes,
                        depth + 1,
                        counts && is_requirement,
                        inputs,
                        packages,
                    )?;
                }
                "-e" | "--editable" => {
                    if counts {
                        *packages += 1;
                    }
                    if is_local_repository(value) {
                        return Err(bad(file, format!("line {number}: {option} {value} reads a repository from the builder's own filesystem; use a remote URL or put the package into the function")));
                    }
                    if is_local_path(value) || value.starts_with("file:") {
                        local(inputs, number, file_url_path(value), "editable package")?;
                    }
                }
                "-f" | "--find-links" => {
                    if value.is_empty() {
                        continue;
                    }
                    if !value.contains("://") || value.starts_with("file:") {
                        local(inputs, number, file_url_path(value), "--find-links directory")?;
                    }
                }
                "-i" | "--index-url" | "--extra-index-url" => {
                    if value.to_ascii_lowercase().starts_with("file:") || (!value.contains("://") && !value.is_empty())
                    {
                        return Err(bad(file, format!("line {number}: {option} {value}: a package index must be an http(s) URL; put local packages into the function and name them by path")));
                    }
                }
                "--no-index" | "--pre" | "--trusted-host" | "--prefer-binary" | "--only-binary" | "--no-binary"
                | "--require-hashes" | "--use-feature" => {}
                other => {
                    return Err(bad(file, format!("line {number}: option {other} is not taken in a function's requirements (fnbuild gives pip its own options); allowed: -r, -c, -e, -f, -i, --extra-index-url, --no-index, --pre, --trusted-host, --prefer-binary, --only-binary, --no-binary, --require-hashes")));
                }
            }
            continue;
        }
        // A requirement, perhaps followed by per-requirement options (--hash=..., --config-settings ...).
        let requirement = requirement_part(line);
        if counts {
            *packages += 1;
        }
        if is_local_repository(requirement) {
            return Err(bad(file, format!("line {number}: \"{requirement}\" reads a repository from the builder's own filesystem; use a remote URL or put the package into the function")));
        }
        if requirement.contains("${") {
            return Err(bad(
                file,
                format!("line {number}: \"{requirement}\": variables are not expanded in a function's requirements"),
            ));
        }
        if is_local_path(requirement) || requirement.starts_with("file:") {
            local(inputs, number, file_url_path(requirement), "package")?;
            continue;
        }
        if requirement.contains("://") && !requirement.contains('@') {
            continue; // a URL: pip fetches it
        }
        check_requirement(requirement).map_err(|why| {
            bad(file, format!("line {number}: \"{requirement}\" is not a requirement pip understands: {why} (write NAME, NAME==VERSION, NAME>=VERSION,<VERSION, NAME[extra]==VERSION, or a path or URL)"))
        })?;
        if let Some((_, url)) = requirement.split_once('@') {
            let url = url.split(';').next().unwrap_or("").trim();
            if url.to_ascii_lowercase().starts_with("file:") {
                local(inputs, number, file_url_path(url), "package")?;
            }
        }
    }
    Ok(())
}

/// Lines with `\` continuations joined, numbered from 1 by the line they start on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = raw.strip_suffix('\\') {
            acc.push_str(body);
            current = Some((start, acc));
        } else {
            acc.push_str(raw);
            out.push((start, acc));
        }
    }
    if let Some(last) = current {
        out.push(last);
    }
    out
}

/// pip's rule: `#` starts a comment at the start of a line or after white space.
fn strip_comment(line: &str) -> String {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return line[..i].to_string();
        }
    }
    line.to_string()
}

/// `-r x`, `-rx`, `--requirement=x`, `--requirement x` → (option, value).
fn split_option(line: &str) -> (&str, &str) {
    if let Some(long) = line.strip_prefix("--") {
        let end = long.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(long.len());
        let option = &line[..end + 2];
        let value = long[end..].trim_start_matches('=').trim();
        return (option, value);
    }
    let option = &line[..line.len().min(2)];
    (option, line[option.len()..].trim_start_matches('=').trim())
}

/// The requirement before any ` --option` that follows it on the line.
fn requirement_part(line: &str) -> &str {
    let mut cut = line.len();
    for (i, _) in line.match_indices(" -") {
        cut = cut.min(i);
    }
    for (i, _) in line.match_indices("\t-") {
        cut = cut.min(i);
    }
    line[..cut].trim()
}

/// The path of `file:x`, `file:///abs` or `file://localhost/abs` (absolute paths are then
/// refused as outside the function), else `s` itself.
fn file_url_path(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("file:") else { return s };
    match rest.strip_prefix("//") {
        Some(after) => {
            let host_end = after.find('/').unwrap_or(after.len());
            // Any host but the local one still names a path; the path is what is checked.
            &after[host_end..]
        }
        None => rest,
    }
}

fn is_local_path(s: &str) -> bool {
    let s = s.strip_prefix("file:").unwrap_or(s);
    s.starts_with("./") || s.starts_with("../") || s.starts_with('/') || s == "." || {
        let lower = s.to_ascii_lowercase();
        !s.contains("://")
            && !s.contains('@')
            && (lower.ends_with(".whl")
                || lower.ends_with(".tar.gz")
                || lower.ends_with(".zip")
                || lower.ends_with(".tar.bz2"))
    }
}

/// A PEP 508 requirement, checked as far as a mistake is likely: the name, extras, version
/// specifiers; markers (after `;`) and URLs (after `@`) are left to pip.
fn check_requirement(req: &str) -> Result<(), String> {
    let name_end = req
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(req.len());
    let name = &req[..name_end];
    if name.is_empty() {
        return Err("it does not start with a package name".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("\"{name}\" is not a package name"));
    }
    let mut rest = req[name_end..].trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        let close = after.find(']').ok_or("the extras' [ is not closed")?;
        for extra in after[..close].split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if !extra.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                return Err(format!("\"{extra}\" is not an extra's name"));
            }
        }
        rest = after[close + 1..].trim_start();
    }
    if rest.is_empty() || rest.starts_with(';') {
        return Ok(());
    }
    if let Some(url) = rest.strip_prefix('@') {
        return if url.trim().is_empty() {
            Err("nothing follows @".into())
        } else {
            Ok(())
        };
    }
    let specifiers = rest.split(';').next().unwrap_or("").trim();
    let specifiers = specifiers
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(specifiers);
    for spec in specifiers.split(',') {
        let spec = spec.trim();
        let op = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"]
            .into_iter()
            .find(|op| spec.starts_with(op));
        let Some(op) = op else {
            return Err(if spec.starts_with('=') {
                format!(
                    "\"{spec}\": an exact version is written =={}",
                    spec.trim_start_matches('=')
                )
            } else {
                format!("\"{spec}\" is not a version specifier")
            });
        };
        let version = spec[op.len()..].trim();
        if version.is_empty()
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".*+!_-".contains(&b))
        {
            return Err(format!("\"{spec}\": \"{version}\" is not a version"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::runtime::Runtimes;
    use std::path::Path;

    fn source(files: &[(&str, &str)], runtime: &Runtime) -> (tempfile::TempDir, FunctionSource) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let src = FunctionSource::load(dir.path(), runtime).unwrap();
        (dir, src)
    }

    fn node() -> Runtime {
        Runtimes::Embedded.load("nodejs20").unwrap()
    }
    fn python() -> Runtime {
        Runtimes::Embedded.load("python312").unwrap()
    }
    fn paths(plan: &Plan) -> Vec<&str> {
        plan.inputs.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn no_file_or_no_packages_means_nothing_to_install() {
        let rt = node();
        for files in [
            vec![("handler.js", "")],
            vec![("handler.js", ""), ("package.json", "{\"name\":\"f\"}")],
            vec![
                ("handler.js", ""),
                (
                    "package.json",
                    "{\"dependencies\":{},\"devDependencies\":{\"jest\":\"1\"}}",
                ),
            ],
        ] {
            let (_d, src) = source(&files, &rt);
            assert!(plan(&src, &rt).unwrap().is_none(), "{files:?}");
        }
        let rt = python();
        for req in ["", "\n# only a comment\n", "--index-url https://example.com/simple\n"] {
            let (_d, src) = source(&[("handler.py", ""), ("requirements.txt", req)], &rt);
            assert!(plan(&src, &rt).unwrap().is_none(), "{req:?}");
        }
    }

    #[test]
    fn npm_plans_stage_the_lock_and_local_packages_only() {
        let rt = node();
        let (_d, src) = source(
            &[
                ("handler.js", ""),
                ("data/big.json", "{}"),
                (
                    "package.json",
                    r#"{"dependencies":{"left-pad":"1.3.0","greet":"file:vendor/greet-1.0.0.tgz","lib":"file:./lib"}}"#,
                ),
                ("package-lock.json", "{}"),
                ("vendor/greet-1.0.0.tgz", "tgz"),
                ("lib/package.json", "{}"),
                ("lib/index.js", ""),
            ],
            &rt,
        );
        let plan = plan(&src, &rt).unwrap().unwrap();
        assert_eq!(plan.packages, 3);
        assert_eq!(plan.lock_file.as_deref(), Some("package-lock.json"));
        assert_eq!(
            paths(&plan),
            [
                "lib",
                "lib/index.js",
                "lib/package.json",
                "package-lock.json",
                "package.json",
                "vendor",
                "vendor/greet-1.0.0.tgz"
            ]
        );
    }

    #[test]
    fn bad_package_json_files_are_explained() {
        let rt = node();
        for (json, want) in [
            (
                "{\"dependencies\": {\"a\": \"1\",}}",
                "package.json is not valid JSON: trailing comma at line 1 column",
            ),
            ("[1]", "package.json must be a JSON object"),
            ("{\"dependencies\": [\"a\"]}", "\"dependencies\" must be an object"),
            (
                "{\"dependencies\": {\"a\": 1}}",
                "the version of \"a\" must be a string",
            ),
            (
                "{\"dependencies\": {\"a\": \"file:../a\"}}",
                "file:../a is outside the function's directory",
            ),
            (
                "{\"dependencies\": {\"a\": \"file:a.tgz\"}}",
                "names a.tgz, which is not in the function's directory",
            ),
        ] {
            let (_d, src) = source(&[("handler.js", ""), ("package.json", json)], &rt);
            let err = plan(&src, &rt).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
        let (_d, src) = source(
            &[
                ("handler.js", ""),
                ("package.json", "{\"dependencies\":{\"a\":\"1\"}}"),
                ("package-lock.json", "{"),
            ],
            &rt,
        );
        assert!(plan(&src, &rt)
            .unwrap_err()
            .to_string()
            .starts_with("package-lock.json is not valid JSON"));
    }

    #[test]
    fn requirements_are_checked_and_their_includes_staged() {
        let rt = python();
        let req =
            "six==1.16.0  # pinned\nMarkupSafe>=2.1,<3 ; python_version >= \"3.8\"\nrequests[socks,security] ~= 2.31\n\
                   -r more/base.txt\n--constraint=constraints.txt\n./wheels/local-1.0-py3-none-any.whl\n\
                   pkg @ https://example.com/pkg.whl\nhashed==1.0 \\\n    --hash=sha256:abc\n";
        let (_d, src) = source(
            &[
                ("handler.py", ""),
                ("requirements.txt", req),
                ("more/base.txt", "-r ../extra.txt\nattrs\n"),
                ("extra.txt", "idna\n"),
                ("constraints.txt", "six<2\n"),
                ("wheels/local-1.0-py3-none-any.whl", "zip"),
                ("data.csv", "a,b"),
            ],
            &rt,
        );
        let plan = plan(&src, &rt).unwrap().unwrap();
        assert_eq!(
            plan.packages, 8,
            "six, MarkupSafe, requests, attrs, idna, the wheel, pkg, hashed"
        );
        assert_eq!(
            paths(&plan),
            [
                "constraints.txt",
                "extra.txt",
                "more",
                "more/base.txt",
                "requirements.txt",
                "wheels",
                "wheels/local-1.0-py3-none-any.whl"
            ]
        );
    }

    #[test]
    fn malformed_requirements_name_their_line() {
        let rt = python();
        for (req, want) in [
            ("six=1.16.0\n", "line 1: \"six=1.16.0\" is not a requirement pip understands: \"=1.16.0\": an exact version is written ==1.16.0"),
            ("ok\n\nsix >>= 1\n", "line 3: \"six >>= 1\""),
            ("-six\n", "line 1: option -s is not taken in a function's requirements"),
            ("my package==1\n", "\"package==1\" is not a version specifier"),
            ("six[extra\n", "the extras' [ is not closed"),
            ("-r missing.txt\n", "line 1: -r missing.txt: there is no such file"),
            ("-r ../outside.txt\n", "outside the function's directory"),
        ] {
            let (_d, src) = source(&[("handler.py", ""), ("requirements.txt", req)], &rt);
            match plan(&src, &rt) {
                Err(e) => assert!(!want.is_empty() && e.to_string().contains(want), "{req:?}: {e}"),
                Ok(_) => assert!(want.is_empty(), "{req:?} was accepted"),
            }
        }
    }

    /// Dependency files that would make an installer read outside the function (issue 15, item 2).
    #[test]
    fn nothing_outside_the_function_is_ever_named() {
        let rt = node();
        for (pkg, want) in [
            (
                r#"{"dependencies":{"a":"1"},"peerDependencies":{"x":"file:../../x"}}"#,
                "\"peerDependencies\".\"x\": file:../../x is outside",
            ),
            (
                r#"{"dependencies":{"a":"1"},"devDependencies":{"x":"../x"}}"#,
                "\"devDependencies\".\"x\": ../x is outside",
            ),
            (r#"{"optionalDependencies":{"x":"file:/etc"}}"#, "file:/etc is outside"),
            (
                r#"{"dependencies":{"x":"git+file:///tmp/repo"}}"#,
                "reads a repository from the builder's own filesystem",
            ),
            (
                r#"{"dependencies":{"x":"npm:y@file:../../y"}}"#,
                "file:../../y is outside",
            ),
            (
                r#"{"dependencies":{"a":"1"},"overrides":{"a":{"b":"file:../b"}}}"#,
                "\"overrides\".\"a\".\"b\": file:../b is outside",
            ),
            (
                r#"{"dependencies":{"a":"1"},"workspaces":["../other"]}"#,
                "\"workspaces\": ../other is outside",
            ),
        ] {
            let (_d, src) = source(&[("handler.js", ""), ("package.json", pkg)], &rt);
            let err = plan(&src, &rt).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.starts_with("package.json ") && err.contains(want), "{pkg}: {err:?}");
        }
        for (lock, want) in [
            (
                r#"{"packages":{"":{},"../outside":{"version":"1.0.0"}}}"#,
                "\"packages\".\"../outside\" is outside",
            ),
            (
                r#"{"packages":{"node_modules/a":{"resolved":"file:../../a"}}}"#,
                "\"resolved\" file:../../a is outside",
            ),
            (
                r#"{"packages":{"node_modules/a":{"resolved":"git+file:///srv/a.git#abc"}}}"#,
                "reads a repository",
            ),
            (
                r#"{"dependencies":{"a":{"version":"file:/etc/a"}}}"#,
                "\"dependencies\".\"a\": \"version\" file:/etc/a is outside",
            ),
        ] {
            let (_d, src) = source(
                &[
                    ("handler.js", ""),
                    ("package.json", r#"{"dependencies":{"a":"1"}}"#),
                    ("package-lock.json", lock),
                ],
                &rt,
            );
            let err = plan(&src, &rt).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.starts_with("package-lock.json ") && err.contains(want),
                "{lock}: {err:?}"
            );
        }
        let rt = python();
        for (req, want) in [
            ("-r /etc/passwd\n", "line 1: -r /etc/passwd is outside"),
            ("-r/etc/passwd\n", "is outside"),
            ("--requirement=/etc/passwd\n", "is outside"),
            ("-c /etc/passwd\n", "line 1: -c /etc/passwd is outside"),
            ("--constraint /root/.docker/config.json\n", "is outside"),
            ("-r ${HOME}/../x.txt\n", "variables are not expanded"),
            (
                "six @ file:///srv/wheels/six.whl\n",
                "package /srv/wheels/six.whl is outside",
            ),
            ("file:///srv/wheels/six.whl\n", "is outside"),
            ("/srv/wheels/six.whl\n", "is outside"),
            ("git+file:///srv/repo#egg=x\n", "reads a repository"),
            ("-e git+file:///srv/repo#egg=x\n", "reads a repository"),
            ("-e /srv/pkg\n", "editable package /srv/pkg is outside"),
            (
                "--find-links /srv/wheels\nsix\n",
                "--find-links directory /srv/wheels is outside",
            ),
            ("-f file:///srv/wheels\nsix\n", "is outside"),
            ("--index-url file:///srv/index\nsix\n", "must be an http(s) URL"),
            ("--target /tmp/x\nsix\n", "option --target is not taken"),
        ] {
            let (_d, src) = source(&[("handler.py", ""), ("requirements.txt", req)], &rt);
            let err = plan(&src, &rt).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.starts_with("requirements.txt ") && err.contains(want),
                "{req:?}: {err:?}"
            );
            assert!(!err.contains("root:x:0:0"), "never a foreign file's content: {err}");
        }
        // What stays allowed.
        let (_d, src) = source(
            &[("handler.py", ""), ("requirements.txt", "--index-url https://pypi.example.com/simple\n--extra-index-url https://x.example.com/simple\nsix==1.16.0\n-f ./wheels\n"), ("wheels/a.whl", "")],
            &rt,
        );
        assert!(plan(&src, &rt).unwrap().is_some());
    }

    #[test]
    fn helpers() {
        assert_eq!(normalise("", "./a/../b/c"), Some("b/c".into()));
        assert_eq!(normalise("sub", "../x"), Some("x".into()));
        assert_eq!(normalise("", "../x"), None);
        assert_eq!(normalise("", "/etc/x"), None);
        assert_eq!(normalise("", "."), None);
        assert_eq!(split_option("-r  a.txt"), ("-r", "a.txt"));
        assert_eq!(split_option("-ra.txt"), ("-r", "a.txt"));
        assert_eq!(split_option("--requirement=a.txt"), ("--requirement", "a.txt"));
        assert_eq!(split_option("--index-url https://x"), ("--index-url", "https://x"));
        assert_eq!(strip_comment("a==1 # c#d"), "a==1 ");
        assert_eq!(strip_comment("https://x/#egg=a"), "https://x/#egg=a");
        assert_eq!(npm_local_path("file:vendor/a.tgz"), Some("vendor/a.tgz"));
        assert_eq!(npm_local_path("^1.2.3"), None);
        assert_eq!(npm_local_path("github:a/b"), None);
        assert!(Path::new("x").is_relative());
    }
}

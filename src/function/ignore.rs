//! `.fnbuildignore`: what a user leaves out of the function layer, in `.dockerignore` syntax.
//!
//! One pattern a line, relative to the function's root (a leading `/` changes nothing); `*` and
//! `?` match within one path component, `**` any number of components, `[...]` a character
//! class (`[!...]` or `[^...]` negated, `a-z` ranges), `\` escapes the next character. A trailing
//! `/` matches directories only; `!` re-includes what an earlier pattern left out; `#` starts a
//! comment line. As in Docker, a pattern that matches a directory also matches everything below
//! it, and the last pattern that matches a path decides.

/// The ignore file's name, in the function's root. It is never copied into the image.
pub const IGNORE_FILE: &str = ".fnbuildignore";

#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    negated: bool,
    dir_only: bool,
    parts: Vec<String>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let rules = text.lines().filter_map(parse_line).collect();
        Ignore { rules }
    }

    /// Whether an entry at `path` (relative to the root, `/`-separated) is left out.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let names: Vec<&str> = path.split('/').filter(|n| !n.is_empty()).collect();
        let mut ignored = false;
        for rule in &self.rules {
            if rule.negated != ignored {
                continue; // it could not change the answer
            }
            // The path or one of its directories: those above it are directories.
            let hit = (1..=names.len())
                .any(|k| (!rule.dir_only || k < names.len() || is_dir) && match_parts(&rule.parts, &names[..k]));
            if hit {
                ignored = !rule.negated;
            }
        }
        ignored
    }

    /// Whether some pattern re-includes paths: then an ignored directory must still be walked.
    pub fn has_negations(&self) -> bool {
        self.rules.iter().any(|r| r.negated)
    }
}

fn parse_line(line: &str) -> Option<Rule> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (negated, pattern) = match line.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, line),
    };
    let dir_only = pattern.ends_with('/');
    let mut parts: Vec<String> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p.to_string()),
        }
    }
    (!parts.is_empty()).then_some(Rule {
        negated,
        dir_only,
        parts,
    })
}

/// Pattern components against path components; `**` takes any number of them.
fn match_parts(parts: &[String], names: &[&str]) -> bool {
    match parts.split_first() {
        None => names.is_empty(),
        Some((p, rest)) if p == "**" => (0..=names.len()).any(|i| match_parts(rest, &names[i..])),
        Some((p, rest)) => {
            !names.is_empty()
                && match_name(&p.chars().collect::<Vec<_>>(), &names[0].chars().collect::<Vec<_>>())
                && match_parts(rest, &names[1..])
        }
    }
}

/// One component: `*`, `?`, `[...]`, `\x`, literal characters.
fn match_name(pat: &[char], name: &[char]) -> bool {
    match pat.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|i| match_name(&pat[1..], &name[i..])),
        Some('?') => !name.is_empty() && match_name(&pat[1..], &name[1..]),
        Some('[') => match (class(&pat[1..]), name.first()) {
            (Some((matches, len)), Some(&c)) => matches(c) && match_name(&pat[1 + len..], &name[1..]),
            (Some(_), None) => false,
            (None, _) => literal('[', pat, name), // no closing `]`: a plain `[`
        },
        Some('\\') if pat.len() > 1 => literal(pat[1], &pat[1..], name),
        Some(&c) => literal(c, pat, name),
    }
}

fn literal(c: char, pat: &[char], name: &[char]) -> bool {
    name.first() == Some(&c) && match_name(&pat[1..], &name[1..])
}

/// A class after its `[`: a test for one character, and how many pattern characters it took
/// (up to and including the `]`); `None` if it is not closed.
#[allow(clippy::type_complexity)]
fn class(pat: &[char]) -> Option<(Box<dyn Fn(char) -> bool>, usize)> {
    let mut i = 0;
    let negated = matches!(pat.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    loop {
        let mut c = *pat.get(i)?;
        if c == ']' && !first {
            break;
        }
        first = false;
        if c == '\\' {
            i += 1;
            c = *pat.get(i)?;
        }
        i += 1;
        if pat.get(i) == Some(&'-') && pat.get(i + 1).is_some_and(|&e| e != ']') {
            let mut end = pat[i + 1];
            i += 2;
            if end == '\\' {
                end = *pat.get(i)?;
                i += 1;
            }
            ranges.push((c, end));
        } else {
            ranges.push((c, c));
        }
    }
    let test = move |ch: char| ranges.iter().any(|&(a, b)| a <= ch && ch <= b) != negated;
    Some((Box::new(test), i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(patterns: &str, path: &str, is_dir: bool) -> bool {
        Ignore::parse(patterns).is_ignored(path, is_dir)
    }

    #[test]
    fn patterns_are_relative_to_the_root() {
        assert!(ignored("*.log", "debug.log", false));
        assert!(!ignored("*.log", "logs/debug.log", false));
        assert!(ignored("/logs/*.log", "logs/debug.log", false));
        assert!(ignored("**/*.log", "a/b/debug.log", false));
        assert!(ignored("**/*.log", "debug.log", false));
        assert!(ignored("a/**/z", "a/z", false));
        assert!(ignored("a/**/z", "a/b/c/z", false));
        assert!(!ignored("a/**/z", "b/a/z", false));
    }

    #[test]
    fn wildcards_stay_within_a_component() {
        assert!(ignored("te?t.js", "test.js", false));
        assert!(!ignored("te?t.js", "tet.js", false));
        assert!(!ignored("a*b", "a/b", false));
        assert!(ignored("[abc].js", "b.js", false));
        assert!(!ignored("[!abc].js", "b.js", false));
        assert!(ignored("[^abc].js", "d.js", false));
        assert!(ignored("file[0-9].txt", "file7.txt", false));
        assert!(!ignored("file[0-9].txt", "filex.txt", false));
        assert!(ignored("[]x].md", "].md", false));
        assert!(ignored("\\*.md", "*.md", false));
        assert!(!ignored("\\*.md", "a.md", false));
        assert!(ignored("a[b", "a[b", false));
    }

    #[test]
    fn a_directory_pattern_takes_what_is_below_and_trailing_slash_means_directories() {
        assert!(ignored("build", "build/out/x.js", false));
        assert!(ignored("build/", "build", true));
        assert!(ignored("build/", "build/x.js", false));
        assert!(!ignored("build/", "build", false));
    }

    #[test]
    fn the_last_matching_pattern_decides() {
        let p = "# test data\n\n*.md\n!README.md\ndocs\n!docs/keep.txt\n";
        assert!(ignored(p, "CHANGES.md", false));
        assert!(!ignored(p, "README.md", false));
        assert!(ignored(p, "docs/a.txt", false));
        assert!(!ignored(p, "docs/keep.txt", false));
        assert!(!ignored(p, "# test data", false));
        assert!(Ignore::parse(p).has_negations());
        assert!(!Ignore::parse("*.md").has_negations());
    }
}

//! The syntax rules of Kubernetes names that a Function's fields must follow (apimachinery's
//! `IsDNS1035Label`, `IsDNS1123Subdomain`, `IsEnvVarName`, `IsQualifiedName`, `IsValidLabelValue`).

/// A DNS-1035 label: what Service names must be.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters long".into());
    }
    let b = s.as_bytes();
    if !b[0].is_ascii_lowercase()
        || !b[b.len() - 1].is_ascii_alphanumeric()
        || !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Err("must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit".into());
    }
    Ok(())
}

/// A DNS-1123 subdomain: what most object names must be.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters long".into());
    }
    for part in s.split('.') {
        let b = part.as_bytes();
        if b.is_empty()
            || !b[0].is_ascii_alphanumeric()
            || !b[b.len() - 1].is_ascii_alphanumeric()
            || !b
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return Err("must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit".into());
        }
    }
    Ok(())
}

/// An environment variable name as Kubernetes accepts it.
pub fn env_var_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    if b.is_empty()
        || b[0].is_ascii_digit()
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-' || *c == b'.')
    {
        return Err(
            "is not a valid environment variable name: letters, digits, '_', '-' and '.', not starting with a digit"
                .into(),
        );
    }
    Ok(())
}

fn name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label or annotation key: `[prefix/]name`.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if dns1123_subdomain(p).is_err() {
            return Err("has a prefix that is not a DNS-1123 subdomain".into());
        }
    }
    if !name_part(name) {
        return Err("must be [prefix/]name, the name 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into());
    }
    Ok(())
}

/// A label value.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || name_part(s) {
        Ok(())
    } else {
        Err("must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into())
    }
}

//! Does an object on the API server already say what we want? The desired object must be a
//! *subset* of the live one: every field we set has the same value there, while fields the API
//! server filled in (defaults, clusterIP, status, managedFields) are ignored. Quantities compare
//! by amount (`1024Mi` = `1Gi`). This is what lets a reconcile with nothing changed write nothing.

use super::resources::quantities_equal;
use serde_json::Value;

/// Whether `want` is contained in `have`. Returns the first differing path otherwise.
pub fn subset(want: &Value, have: &Value) -> Result<(), String> {
    walk(want, have, &mut String::new(), false)
}

fn walk(want: &Value, have: &Value, path: &mut String, in_resources: bool) -> Result<(), String> {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (k, wv) in w {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                let res = match h.get(k) {
                    Some(hv) => walk(wv, hv, path, in_resources || k == "resources"),
                    None if is_empty(wv) => Ok(()),
                    None => Err(path.clone()),
                };
                path.truncate(len);
                res?;
            }
            Ok(())
        }
        (Value::Object(w), Value::Null) if w.is_empty() => Ok(()),
        (Value::Array(w), Value::Array(h)) => {
            if w.len() != h.len() {
                return Err(format!("{path} (length {} != {})", w.len(), h.len()));
            }
            for (i, (wv, hv)) in w.iter().zip(h).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let res = walk(wv, hv, path, in_resources);
                path.truncate(len);
                res?;
            }
            Ok(())
        }
        (Value::String(w), Value::String(h)) if in_resources => {
            if quantities_equal(w, h) {
                Ok(())
            } else {
                Err(path.clone())
            }
        }
        (Value::String(w), Value::Number(h)) if in_resources => {
            if quantities_equal(w, &h.to_string()) {
                Ok(())
            } else {
                Err(path.clone())
            }
        }
        (w, h) if w == h => Ok(()),
        _ => Err(path.clone()),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// `subset` for typed objects.
pub fn contains<T: serde::Serialize, U: serde::Serialize>(have: &U, want: &T) -> Result<(), String> {
    let w = serde_json::to_value(want).map_err(|e| e.to_string())?;
    let h = serde_json::to_value(have).map_err(|e| e.to_string())?;
    subset(&w, &h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_are_ignored() {
        let want = json!({"spec": {"ports": [{"port": 80, "name": "http"}], "selector": {"a": "b"}}});
        let have = json!({"spec": {"ports": [{"port": 80, "name": "http", "protocol": "TCP"}], "selector": {"a": "b"},
            "clusterIP": "10.0.0.3"}, "status": {}});
        assert_eq!(subset(&want, &have), Ok(()));
    }

    #[test]
    fn differences_name_the_path() {
        let want = json!({"spec": {"template": {"env": [{"name": "A", "value": "1"}]}}});
        let have = json!({"spec": {"template": {"env": [{"name": "A", "value": "2"}]}}});
        assert_eq!(subset(&want, &have), Err(".spec.template.env[0].value".into()));
        let have = json!({"spec": {"template": {"env": []}}});
        assert_eq!(subset(&want, &have), Err(".spec.template.env (length 1 != 0)".into()));
        let have = json!({"spec": {}});
        assert_eq!(subset(&want, &have), Err(".spec.template".into()));
    }

    #[test]
    fn quantities_compare_by_amount_under_resources() {
        let want = json!({"resources": {"limits": {"memory": "1024Mi", "cpu": "0.5"}}});
        let have = json!({"resources": {"limits": {"memory": "1Gi", "cpu": "500m"}}});
        assert_eq!(subset(&want, &have), Ok(()));
        assert!(subset(&json!({"name": "1024Mi"}), &json!({"name": "1Gi"})).is_err());
    }

    #[test]
    fn empty_collections_match_missing_ones() {
        assert_eq!(subset(&json!({"emptyDir": {}}), &json!({"emptyDir": {}})), Ok(()));
        assert_eq!(subset(&json!({"a": {}, "b": []}), &json!({})), Ok(()));
        assert!(subset(&json!({"a": {"x": 1}}), &json!({})).is_err());
    }
}

//! Source images: the stored record, its public JSON form, identity (`hash`), and the rules for
//! user and dynamic metadata. No I/O here.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// One source image of one organization. Several records (dynamic-metadata variants, copies in
/// other organizations) may share one blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub organization: String,
    pub hash: String,
    pub binary_hash: String,
    /// BLAKE3 hex of the bytes: the blob file name.
    pub blob: String,
    pub name: String,
    pub format: String,
    pub mimetype: String,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    pub created: String,
    /// Creation time in nanoseconds, for a total order within the same second.
    pub created_ns: i128,
    #[serde(default)]
    pub user_metadata: Map<String, Value>,
    #[serde(default)]
    pub dynamic_metadata: Map<String, Value>,
    #[serde(default)]
    pub static_metadata: Map<String, Value>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub deleted_at: Option<i64>,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub locked: bool,
    pub opaque: bool,
    pub animated: bool,
    /// Frames of the source as its container declares them (1 for a still image); 0 in
    /// records written before frames were counted, whose renders count them from the bytes.
    #[serde(default)]
    pub frames: u32,
}

impl ImageRecord {
    /// Whether the record is a font (TrueType or OpenType) kept for the `text` operation
    /// rather than an image: it has no pixels (width and height 0) and is never rendered.
    pub fn is_font(&self) -> bool {
        matches!(self.format.as_str(), "ttf" | "otf")
    }

    /// The JSON object the API returns. Fields the PHP and Go clients read without checks are
    /// always present (spec §4.1, §11.5).
    pub fn to_json(&self, short_hash: &str) -> Value {
        let mut v = json!({
            "organization": self.organization,
            "hash": self.hash,
            "short_hash": short_hash,
            "binary_hash": self.binary_hash,
            "name": self.name,
            "format": self.format,
            "mimetype": self.mimetype,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "created": self.created,
            "link": format!("/sourceimages/{}/{}", self.organization, self.hash),
            "deleted": self.deleted,
            "protected": self.protected,
            "locked": self.locked,
            "opaque": self.opaque,
            "animated": self.animated,
        });
        if let Value::Object(map) = &mut v {
            if !self.user_metadata.is_empty() {
                map.insert(
                    "user_metadata".into(),
                    Value::Object(self.user_metadata.clone()),
                );
            }
            if !self.dynamic_metadata.is_empty() {
                map.insert(
                    "dynamic_metadata".into(),
                    Value::Object(self.dynamic_metadata.clone()),
                );
            }
            if !self.static_metadata.is_empty() {
                map.insert(
                    "static_metadata".into(),
                    Value::Object(self.static_metadata.clone()),
                );
            }
            if let Some(at) = self.deleted_at {
                map.insert(
                    "deleted_date".into(),
                    Value::String(crate::model::time::format_unix(at)),
                );
            }
        }
        v
    }
}

/// The image hash: BLAKE3 over the blob id, the canonical dynamic metadata and the protected
/// flag, truncated to 40 hex characters (design §3). Same bytes + same dynamic metadata + same
/// flag ⇒ same hash, which makes re-uploads idempotent.
pub fn image_hash(blob: &str, dynamic: &Map<String, Value>, protected: bool) -> String {
    let mut h = blake3::Hasher::new();
    h.update(blob.as_bytes());
    h.update(&[0]);
    h.update(canonical_json(&Value::Object(dynamic.clone())).as_bytes());
    h.update(&[0, u8::from(protected)]);
    let mut hex = h.finalize().to_hex().to_string();
    hex.truncate(40);
    hex
}

/// JSON with object keys sorted at every level, so equal values serialise to equal bytes
/// whatever order a client sent the keys in.
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    if let Some(x) = m.get(k) {
                        out.insert(k.clone(), sorted(x));
                    }
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// User-metadata value types, selected by a key prefix (spec §4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaType {
    Str,
    Text,
    Int,
    Double,
    Date,
    LatLon,
    Array,
    ArrayText,
}

/// Splits `int:count` into its type and bare name; no prefix (or `str:`) is a string.
fn split_meta_key(key: &str) -> Result<(MetaType, &str), String> {
    let (ty, name) = match key.split_once(':') {
        None => (MetaType::Str, key),
        Some((prefix, name)) => {
            let ty = match prefix {
                "str" => MetaType::Str,
                "text" => MetaType::Text,
                "int" => MetaType::Int,
                "double" => MetaType::Double,
                "date" => MetaType::Date,
                "latlon" => MetaType::LatLon,
                "array" => MetaType::Array,
                "array_text" => MetaType::ArrayText,
                _ => {
                    return Err(format!(
                        "user metadata key '{key}' has an unknown type prefix '{prefix}'"
                    ))
                }
            };
            (ty, name)
        }
    };
    let ok = !name.is_empty()
        && name.len() <= 54
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok((ty, name))
    } else {
        Err(format!(
            "user metadata key '{}' is invalid: names use a-z, 0-9 and '_', at most 54 characters",
            crate::model::ids::truncate(key, 80)
        ))
    }
}

/// The key under which a user-metadata field is stored and returned: the type prefix is kept
/// for every type but plain strings (`str:foo` and `foo` are the same field).
pub fn normalize_meta_key(key: &str) -> Result<String, String> {
    let (ty, name) = split_meta_key(key)?;
    Ok(if ty == MetaType::Str {
        name.to_string()
    } else {
        key.to_string()
    })
}

/// Checks a value against the type its key declares and returns the value to store.
pub fn check_meta_value(key: &str, value: &Value) -> Result<Value, String> {
    let (ty, _) = split_meta_key(key)?;
    let bad = |what: &str| Err(format!("user metadata '{key}' must be {what}"));
    match ty {
        MetaType::Str | MetaType::Text => match value {
            Value::String(_) => Ok(value.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            _ => bad("a string"),
        },
        MetaType::Int => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| bad("an integer")),
            _ => bad("an integer"),
        },
        MetaType::Double => match value {
            Value::Number(_) => Ok(value.clone()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                .map_or_else(|| bad("a number"), Ok),
            _ => bad("a number"),
        },
        MetaType::Date => match value {
            Value::String(s) if crate::model::time::parse_rfc3339(s).is_some() => Ok(value.clone()),
            _ => bad("a date like 2024-01-31T12:00:00Z"),
        },
        MetaType::LatLon => match value {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(',').collect();
                let ok = parts.len() == 2 && parts.iter().all(|p| p.trim().parse::<f64>().is_ok());
                if ok {
                    Ok(value.clone())
                } else {
                    bad("a \"lat,lon\" string")
                }
            }
            _ => bad("a \"lat,lon\" string"),
        },
        MetaType::Array | MetaType::ArrayText => match value {
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(value.clone()),
            _ => bad("an array of strings"),
        },
    }
}

/// Validates and normalises a whole user-metadata object (keys and values).
pub fn check_user_metadata(meta: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (k, v) in meta {
        let key = normalize_meta_key(k)?;
        out.insert(key, check_meta_value(k, v)?);
    }
    Ok(out)
}

fn number(obj: &Map<String, Value>, key: &str, what: &str) -> Result<Option<f64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{what}.{key} must be a number")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("{what}.{key} must be a number")),
        Some(_) => Err(format!("{what}.{key} must be a number")),
    }
}

/// Validates an area object (`subject_area` or `crop_area`) and returns it normalised to
/// numbers. `subject_area` may omit width and height (they default to 1).
fn check_area(what: &str, v: &Value, size_required: bool) -> Result<Value, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what} must be an object"))?;
    let mut out = Map::new();
    for key in ["x", "y", "width", "height"] {
        let n = number(obj, key, what)?;
        let n = match (n, key) {
            (Some(n), _) => n,
            (None, "width" | "height") if !size_required => 1.0,
            (None, _) => return Err(format!("{what}.{key} is required")),
        };
        if n < 0.0 || !n.is_finite() {
            return Err(format!("{what}.{key} must be zero or positive"));
        }
        if (key == "width" || key == "height") && n <= 0.0 {
            return Err(format!("{what}.{key} must be positive"));
        }
        out.insert(key.into(), json_number(n));
    }
    if let Some(p) = obj.get("percentage") {
        let pct = match p {
            Value::Bool(b) => *b,
            Value::String(s) => s == "true",
            _ => return Err(format!("{what}.percentage must be a boolean")),
        };
        if pct {
            for key in ["x", "y", "width", "height"] {
                if out
                    .get(key)
                    .and_then(Value::as_f64)
                    .is_some_and(|n| n > 100.0)
                {
                    return Err(format!(
                        "{what}.{key} is a percentage and must be at most 100"
                    ));
                }
            }
            out.insert("percentage".into(), Value::Bool(true));
        }
    }
    Ok(Value::Object(out))
}

/// Integers stay integers in JSON so hashes do not depend on `1` vs `1.0`.
fn json_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// Validates one dynamic-metadata entry by name (spec §4.8) and returns its normalised value.
pub fn check_dynamic_metadata(name: &str, v: &Value) -> Result<Value, String> {
    match name {
        "subject_area" => check_area(name, v, false),
        "crop_area" => check_area(name, v, true),
        "version" => {
            let text = v
                .as_object()
                .and_then(|o| o.get("text"))
                .and_then(Value::as_str)
                .ok_or("version must be an object with a string 'text'")?;
            Ok(json!({ "text": text }))
        }
        "multi_areas" => {
            let obj = v.as_object().ok_or("multi_areas must be an object of named areas")?;
            let mut out = Map::new();
            for (area, inner) in obj {
                let ok = !area.is_empty()
                    && area.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    return Err(format!("multi_areas name '{area}' must match [a-zA-Z0-9_]+"));
                }
                let inner_obj = inner
                    .as_object()
                    .ok_or_else(|| format!("multi_areas.{area} must be an object"))?;
                let mut norm = Map::new();
                for (kind, val) in inner_obj {
                    let checked = match kind.as_str() {
                        "crop_area" => check_area(&format!("multi_areas.{area}.crop_area"), val, true)?,
                        "subject_area" => {
                            check_area(&format!("multi_areas.{area}.subject_area"), val, false)?
                        }
                        other => return Err(format!("multi_areas.{area}.{other} is not a known area kind")),
                    };
                    norm.insert(kind.clone(), checked);
                }
                out.insert(area.clone(), Value::Object(norm));
            }
            Ok(Value::Object(out))
        }
        other => Err(format!(
            "dynamic metadata '{}' is not supported (use subject_area, crop_area, multi_areas or version)",
            crate::model::ids::truncate(other, 60)
        )),
    }
}

/// Validates a whole dynamic-metadata object.
pub fn check_dynamic(meta: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (k, v) in meta {
        out.insert(k.clone(), check_dynamic_metadata(k, v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_ignores_key_order_but_not_values() {
        let a: Map<String, Value> =
            serde_json::from_str(r#"{"subject_area":{"x":1,"y":2}}"#).unwrap();
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"subject_area":{"y":2,"x":1}}"#).unwrap();
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"subject_area":{"y":3,"x":1}}"#).unwrap();
        assert_eq!(image_hash("blob", &a, false), image_hash("blob", &b, false));
        assert_ne!(image_hash("blob", &a, false), image_hash("blob", &c, false));
        assert_ne!(image_hash("blob", &a, false), image_hash("blob", &a, true));
        assert_eq!(image_hash("blob", &a, false).len(), 40);
    }

    #[test]
    fn typed_user_metadata_keys_keep_their_prefix() {
        assert_eq!(normalize_meta_key("str:foo").unwrap(), "foo");
        assert_eq!(normalize_meta_key("int:count").unwrap(), "int:count");
        assert!(normalize_meta_key("Foo").is_err());
        assert!(normalize_meta_key("bogus:foo").is_err());
    }

    #[test]
    fn typed_user_metadata_values_are_checked() {
        assert_eq!(check_meta_value("int:n", &json!("42")).unwrap(), json!(42));
        assert!(check_meta_value("int:n", &json!("x")).is_err());
        assert!(check_meta_value("array:tags", &json!(["a", "b"])).is_ok());
        assert!(check_meta_value("array:tags", &json!([1])).is_err());
        assert!(check_meta_value("latlon:at", &json!("47.38,8.52")).is_ok());
        assert!(check_meta_value("date:d", &json!("2024-01-01T00:00:00Z")).is_ok());
    }

    #[test]
    fn subject_area_defaults_its_size_to_one() {
        let v = check_dynamic_metadata("subject_area", &json!({"x": 10, "y": "20"})).unwrap();
        assert_eq!(v, json!({"x": 10, "y": 20, "width": 1, "height": 1}));
    }

    #[test]
    fn crop_area_needs_a_size_and_unknown_kinds_are_refused() {
        assert!(check_dynamic_metadata("crop_area", &json!({"x": 1, "y": 1})).is_err());
        assert!(check_dynamic_metadata("detection_face", &json!({})).is_err());
        let areas = json!({"square": {"crop_area": {"x": 0, "y": 0, "width": 10, "height": 10}}});
        assert!(check_dynamic_metadata("multi_areas", &areas).is_ok());
        assert!(check_dynamic_metadata("multi_areas", &json!({"bad name": {}})).is_err());
    }
}

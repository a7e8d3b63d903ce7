//! Log output through `log` and `env_logger`: plain lines by default, or one JSON object per
//! line (`log.format = "json"`) for journald, Loki or ELK. A JSON line has `ts`, `level` and
//! `target`; an access line adds the request's own fields (the access logger writes them as a
//! JSON object, which is merged in), every other line a `msg`.

use crate::config::LogFormat;
use serde_json::{Map, Value};
use std::io::Write;

/// Installs the logger once for the process (later calls do nothing): `RUST_LOG` if set,
/// otherwise `level`.
pub fn init(level: &str, format: LogFormat) {
    let env = env_logger::Env::default().default_filter_or(level.to_string());
    let mut builder = env_logger::Builder::from_env(env);
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = json_line(
                &buf.timestamp_micros().to_string(),
                record.level().as_str(),
                record.target(),
                &record.args().to_string(),
            );
            writeln!(buf, "{line}")
        });
    }
    let _ = builder.try_init();
}

/// One event as a JSON object. A message that is itself a JSON object (an access line)
/// gives its fields; any other message is `msg`.
fn json_line(ts: &str, level: &str, target: &str, message: &str) -> String {
    let mut line = Map::new();
    line.insert("ts".into(), Value::from(ts));
    line.insert("level".into(), Value::from(level));
    line.insert("target".into(), Value::from(target));
    match serde_json::from_str::<Value>(message) {
        Ok(Value::Object(fields)) => {
            for (k, v) in fields {
                line.entry(k).or_insert(v);
            }
        }
        _ => {
            line.insert("msg".into(), Value::from(message));
        }
    }
    Value::Object(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_line_gives_its_fields_and_other_lines_a_message() {
        let access = json_line(
            "2026-01-01T00:00:00.000000Z",
            "INFO",
            "access",
            r#"{"listener":"render","status":200,"bytes":12,"ms":1.5,"method":"GET","path":"/a \"b\""}"#,
        );
        let v: Value = serde_json::from_str(&access).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/a \"b\"");
        assert_eq!(v["level"], "INFO");
        assert!(v.get("msg").is_none());
        let other = json_line("t", "WARN", "darkroom::gc", "gc pass failed: {oops}");
        let v: Value = serde_json::from_str(&other).unwrap();
        assert_eq!(v["msg"], "gc pass failed: {oops}");
        assert_eq!(v["target"], "darkroom::gc");
    }
}

//! Typed configuration mirroring `appliance.toml`. Layers, later wins: built-in defaults, the
//! TOML file (`--config PATH`, else `./appliance.toml` when present), then environment
//! variables `DARKROOM__SECTION__KEY`. Unknown keys and invalid values stop start-up with a
//! message naming the key.

use crate::storage::{DatabaseSettings, ObjectSettings, Storage};
use config::{Environment, File, FileFormat, Source};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub images: ImagesConfig,
    pub render: RenderConfig,
    pub gc: GcConfig,
    pub render_cache: RenderCacheConfig,
    pub edge: EdgeConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Management API listener.
    pub api_bind: SocketAddr,
    /// Public render listener.
    pub render_bind: SocketAddr,
    /// HTTP worker threads per listener; 0 = number of cores.
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Longest wait for the next piece of an API request body (uploads, JSON) before it is
    /// answered 408.
    pub body_timeout_secs: u64,
    /// Slowest average rate a request body may arrive at, after the first
    /// `body_timeout_secs`, before it is answered 408. 0 = no minimum rate.
    pub min_body_rate_bytes_per_sec: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The data folder: sled database and blob files.
    pub path: PathBuf,
    /// sled page cache, in MiB.
    pub cache_mb: u64,
    /// Free space kept under the data folder: below it writes answer 507 and `/readyz` 503,
    /// so the database never meets a full disk. A quarter of it (at most 16 MiB) is kept as a
    /// reserve file, given back at start-up on a full disk. 0 = no headroom.
    pub min_free_mb: u64,
    /// `postgres://user:password@host:port/database`: the records in PostgreSQL, shared by
    /// every node over it, instead of the sled database in the data folder. Empty = embedded.
    pub database_url: String,
    /// Most connections this node keeps open to PostgreSQL.
    pub database_connections: usize,
    /// Stored renders this node keeps in memory when its records are in PostgreSQL, in MiB,
    /// so that a warm hit reads no row. 0 = none (every hit reads its row).
    pub render_cache_mb: u64,
    /// Source bytes and large renders in S3-compatible object storage: `s3://BUCKET`. Empty
    /// (the default) keeps them in the data folder.
    pub object_store_url: String,
    /// The object storage service's URL (`https://…`, or `http://…` on a trusted network);
    /// empty for AWS S3 itself.
    pub s3_endpoint: String,
    /// The bucket's region; empty for `us-east-1`.
    pub s3_region: String,
    /// Credentials; empty to take `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` from the
    /// environment.
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    /// A folder of the bucket the objects are kept below (`darkroom/prod`); empty for the
    /// bucket's root. Lets several installs share one bucket.
    pub s3_prefix: String,
    /// Bytes (MiB) of node-local copies of what cold renders read from the bucket (source
    /// files and mezzanines), kept under the data folder; 0 = none.
    pub object_cache_mb: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A key with every right on every organization; empty disables it.
    pub root_key: String,
    /// Proxies (addresses or networks) whose `X-Forwarded-For` names the client, for the
    /// address binding of API tokens.
    #[serde(deserialize_with = "string_list")]
    pub trusted_proxies: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            root_key: String::new(),
            trusted_proxies: vec!["127.0.0.1".into(), "::1".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted upload, per file, in bytes.
    pub max_upload_bytes: u64,
    /// Largest accepted width × height of a source image.
    pub max_pixels: u64,
    /// Largest accepted width or height of a source image.
    pub max_dimension: u32,
    /// Largest width × height of a render's result (checked before decoding).
    pub max_output_pixels: u64,
    /// Largest width × height of an AVIF render (its encoder is the slowest per pixel).
    pub max_avif_output_pixels: u64,
    /// Largest estimated peak memory of one render, in MiB (checked before decoding).
    pub max_render_memory_mb: u64,
    /// Most operations in a stack, its chain of stacks and a dynamic URL together.
    pub max_operations: usize,
    /// Most frames of an animated source rendered to an animated output (checked before
    /// decoding).
    pub max_frames: u32,
    /// Largest canvas width × height × frames of an animated source rendered to an animated
    /// output (checked before decoding).
    pub max_animation_pixels: u64,
    /// Uploads one API key may have in flight at once; past it, 429. 0 = no limit.
    pub max_concurrent_uploads_per_key: usize,
    /// Upload bytes (declared `Content-Length`) one API key may have in flight; past it, 429.
    /// 0 = no limit.
    pub max_upload_bytes_in_flight_per_key: u64,
    /// Most images in one ZIP download (`GET /sourceimages/{org}/download`); past it, 413
    /// before the archive starts. 0 = no limit.
    pub max_zip_images: usize,
    /// Most bytes of originals (their sizes summed) in one ZIP download; past it, 413 before
    /// the archive starts. 0 = no limit.
    pub max_zip_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Days a soft-deleted image stays restorable.
    pub retention_days: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RenderConfig {
    /// Render threads; 0 = number of cores.
    pub threads: usize,
    /// CPU jobs (renders, upload checks) allowed to wait; past it requests get 503.
    pub queue: usize,
    /// Longest a render may take before the request is answered 503.
    pub timeout_ms: u64,
    /// Host form of render URLs, e.g. `{organization}.img.example.com`; empty = path form only.
    pub host_template: String,
    /// `Cache-Control` max-age of render 404s, so an edge cache replaces a stale 200 soon.
    pub not_found_max_age_secs: u64,
    /// `Cache-Control` max-age of renders asked through an alias (`-_name_-`): the one render
    /// URL whose answer changes when the alias is re-pointed, so never `immutable`.
    pub alias_max_age_secs: u64,
    /// Whether renders of one image that decode its JPEG source at the same reduced scale
    /// share one decode, kept as a mezzanine in the render store.
    pub mezzanine: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between garbage-collection passes; 0 disables the background loop.
    pub interval_secs: u64,
    /// Most items one pass removes, so a pass never holds the store for long.
    pub max_work: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval_secs: 300,
            max_work: 10_000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RenderCacheConfig {
    /// Byte budget of the stored renders; least recently used renders are evicted past it.
    /// 0 = unlimited.
    pub max_bytes: u64,
}

/// How invalidations reach the cache in front of the render listener.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EdgeMode {
    /// `GET {path}` with `X-Darkroom-Refresh: 1`: the cache fetches and stores the fresh answer.
    #[default]
    Refresh,
    /// `PURGE {path}`, for caches with a purge method (Varnish, nginx with a purge module).
    Purge,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Base URL of the cache in front of the render listener, e.g. `http://127.0.0.1:80`.
    /// Empty = no edge invalidation.
    pub url: String,
    pub mode: EdgeMode,
    /// Seconds one edge request may take.
    pub timeout_secs: u64,
    /// Attempts per path before it is given up (logged and counted); retries back off
    /// exponentially up to five minutes apart.
    pub max_attempts: u32,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            url: String::new(),
            mode: EdgeMode::Refresh,
            timeout_secs: 10,
            max_attempts: 50,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` (Prometheus text format) on the API listener.
    pub enabled: bool,
    /// When set, `/metrics` asks for `Authorization: Bearer {token}`.
    pub token: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter used when `RUST_LOG` is not set.
    pub level: String,
    /// Plain text lines, or one JSON object per line (journald, Loki, ELK).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            api_bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            render_bind: SocketAddr::from(([127, 0, 0, 1], 8081)),
            workers: 0,
            shutdown_timeout_secs: 30,
            body_timeout_secs: 30,
            min_body_rate_bytes_per_sec: 1024,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("data"),
            cache_mb: 64,
            min_free_mb: 256,
            database_url: String::new(),
            database_connections: 16,
            render_cache_mb: 64,
            object_store_url: String::new(),
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_prefix: String::new(),
            object_cache_mb: 1024,
        }
    }
}

impl StorageConfig {
    /// The object storage settings are all or nothing, and well formed.
    fn validate_objects(&self) -> Result<(), String> {
        let refuse = |key: &str, why: &str| Err(format!("configuration key storage.{key}: {why}"));
        if self.object_store_url.is_empty() {
            let extra = [
                ("s3_endpoint", &self.s3_endpoint),
                ("s3_region", &self.s3_region),
                ("s3_access_key_id", &self.s3_access_key_id),
                ("s3_secret_access_key", &self.s3_secret_access_key),
                ("s3_prefix", &self.s3_prefix),
            ];
            if let Some((key, _)) = extra.iter().find(|(_, v)| !v.is_empty()) {
                return refuse(key, "is set but storage.object_store_url is not");
            }
            return Ok(());
        }
        let Some(bucket) = self.object_store_url.strip_prefix("s3://") else {
            return refuse("object_store_url", "must be s3://BUCKET");
        };
        // S3's bucket naming rules.
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            return refuse(
                "object_store_url",
                "must be s3://BUCKET with a bucket name of 3 to 63 lowercase letters, digits, '-' and '.' (a folder goes in storage.s3_prefix)",
            );
        }
        let endpoint_ok = self.s3_endpoint.is_empty()
            || ["http://", "https://"].iter().any(|scheme| {
                self.s3_endpoint
                    .strip_prefix(scheme)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
            });
        if !endpoint_ok {
            return refuse("s3_endpoint", "must be empty or an http:// or https:// URL");
        }
        if self.s3_access_key_id.is_empty() != self.s3_secret_access_key.is_empty() {
            return refuse(
                "s3_access_key_id / s3_secret_access_key",
                "give both or neither (then AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are read)",
            );
        }
        let prefix_ok = self.s3_prefix.is_empty()
            || self.s3_prefix.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
        if !prefix_ok {
            return refuse(
                "s3_prefix",
                "must be folder names of letters, digits, '-', '_' and '.' joined by '/', without a leading or trailing '/'",
            );
        }
        Ok(())
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_upload_bytes: 100_000_000,
            max_pixels: 100_000_000,
            max_dimension: 30_000,
            max_output_pixels: 40_000_000,
            max_avif_output_pixels: 16_000_000,
            max_render_memory_mb: 1024,
            max_operations: 50,
            max_frames: 1000,
            max_animation_pixels: 150_000_000,
            max_concurrent_uploads_per_key: 4,
            max_upload_bytes_in_flight_per_key: 400_000_000,
            max_zip_images: 1000,
            max_zip_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig { retention_days: 30 }
    }
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            threads: 0,
            queue: 64,
            timeout_ms: 30_000,
            host_template: String::new(),
            not_found_max_age_secs: 60,
            alias_max_age_secs: 60,
            mezzanine: true,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Loads the layered configuration. `explicit` is `--config PATH` (must exist); without it
    /// `./appliance.toml` is read when present.
    pub fn load(explicit: Option<&Path>) -> Result<Config, String> {
        let file = match explicit {
            Some(path) => File::from(path.to_path_buf()),
            None => File::from(PathBuf::from("appliance.toml")).required(false),
        };
        Config::from_layers(file.format(FileFormat::Toml), environment())
    }

    /// Merges a configuration file and the environment (later wins) with the `config`
    /// crate, then reads the result into the typed configuration, naming the key of any
    /// error. The merged tree is read through `serde_json::Value` rather than with
    /// `try_deserialize::<Config>`: the crate's own reader converts between kinds (1.5 becomes
    /// 2 and `true` becomes 1 for an integer key, a number becomes a string), which would let
    /// bad values through and name no key.
    pub fn from_layers(
        file: impl Source + Send + Sync + 'static,
        env: Environment,
    ) -> Result<Config, String> {
        let merged = config::Config::builder()
            .add_source(file)
            .add_source(env)
            .build()
            .map_err(|e| format!("configuration: {e}"))?;
        let tree: serde_json::Value = merged
            .try_deserialize()
            .map_err(|e| format!("configuration: {e}"))?;
        let config: Config = serde_path_to_error::deserialize(tree)
            .map_err(|e| format!("configuration key {}: {}", e.path(), e.inner()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let checks: [(&str, bool, &str); 14] = [
            (
                "storage.database_url",
                self.storage.database_url.is_empty()
                    || self.storage.database_url.starts_with("postgres://")
                    || self.storage.database_url.starts_with("postgresql://"),
                "must be empty or a postgres:// URL",
            ),
            (
                "storage.database_connections",
                self.storage.database_connections > 0,
                "must be positive",
            ),
            (
                "server.body_timeout_secs",
                self.server.body_timeout_secs > 0,
                "must be positive",
            ),
            (
                "limits.max_upload_bytes",
                self.limits.max_upload_bytes > 0,
                "must be positive",
            ),
            (
                "limits.max_pixels",
                self.limits.max_pixels > 0,
                "must be positive",
            ),
            (
                "limits.max_dimension",
                self.limits.max_dimension > 0,
                "must be positive",
            ),
            (
                "limits.max_output_pixels",
                self.limits.max_output_pixels > 0,
                "must be positive",
            ),
            (
                "limits.max_avif_output_pixels",
                self.limits.max_avif_output_pixels > 0,
                "must be positive",
            ),
            (
                "limits.max_render_memory_mb",
                self.limits.max_render_memory_mb > 0,
                "must be positive",
            ),
            (
                "limits.max_operations",
                self.limits.max_operations > 0,
                "must be positive",
            ),
            (
                "limits.max_frames",
                self.limits.max_frames > 0,
                "must be positive",
            ),
            (
                "limits.max_animation_pixels",
                self.limits.max_animation_pixels > 0,
                "must be positive",
            ),
            ("render.queue", self.render.queue > 0, "must be positive"),
            (
                "render.timeout_ms",
                self.render.timeout_ms > 0,
                "must be positive",
            ),
        ];
        for (key, ok, why) in checks {
            if !ok {
                return Err(format!("configuration key {key}: {why}"));
            }
        }
        if let Some(bad) = self
            .auth
            .trusted_proxies
            .iter()
            .find(|p| crate::model::net::parse_net(p).is_none())
        {
            return Err(format!(
                "configuration key auth.trusted_proxies: '{bad}' is not an address or a network"
            ));
        }
        let edge_ok = self.edge.url.is_empty()
            || self
                .edge
                .url
                .strip_prefix("http://")
                .is_some_and(|rest| !rest.is_empty());
        if !edge_ok {
            return Err("configuration key edge.url: must be empty or an http:// URL".into());
        }
        if !self.edge.url.is_empty() && (self.edge.timeout_secs == 0 || self.edge.max_attempts == 0)
        {
            return Err(
                "configuration key edge.timeout_secs / edge.max_attempts: must be positive".into(),
            );
        }
        self.storage.validate_objects()?;
        if !self.render.host_template.is_empty()
            && !self.render.host_template.contains("{organization}")
        {
            return Err(
                "configuration key render.host_template: must contain {organization}".into(),
            );
        }
        Ok(())
    }

    /// Where the bytes go when `storage.object_store_url` is set: the `[storage]` settings,
    /// with the credentials of the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`) when the file gives none.
    pub fn object_settings(&self) -> Option<ObjectSettings> {
        let s = &self.storage;
        let bucket = s.object_store_url.strip_prefix("s3://")?;
        let (access_key_id, secret_access_key) = if s.s3_access_key_id.is_empty() {
            (
                std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
                std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            )
        } else {
            (s.s3_access_key_id.clone(), s.s3_secret_access_key.clone())
        };
        Some(ObjectSettings {
            bucket: bucket.to_string(),
            endpoint: s.s3_endpoint.clone(),
            region: s.s3_region.clone(),
            access_key_id,
            secret_access_key,
            prefix: s.s3_prefix.clone(),
            cache_bytes: s.object_cache_mb.saturating_mul(1024 * 1024),
        })
    }

    /// Where the records are when `storage.database_url` is set.
    pub fn database_settings(&self) -> Option<DatabaseSettings> {
        (!self.storage.database_url.is_empty()).then(|| DatabaseSettings {
            url: self.storage.database_url.clone(),
            connections: self.storage.database_connections,
            render_cache_bytes: self.storage.render_cache_mb.saturating_mul(1024 * 1024),
        })
    }

    /// Opens the configured storage ([`Storage::open`]) keeping `min_free` bytes free under
    /// the data folder.
    pub fn open_storage(&self, min_free: u64) -> crate::storage::Result<Storage> {
        Storage::open(
            &self.storage.path,
            self.storage.cache_mb,
            min_free,
            self.object_settings().as_ref(),
            self.database_settings().as_ref(),
        )
    }

    /// The free-space headroom in bytes.
    pub fn min_free_bytes(&self) -> u64 {
        self.storage.min_free_mb.saturating_mul(1024 * 1024)
    }

    /// Render threads after resolving 0 to the number of cores.
    pub fn render_threads(&self) -> usize {
        if self.render.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.render.threads
        }
    }
}

/// The environment layer: `DARKROOM__SECTION__KEY=value`. Booleans and numbers are read as
/// such and anything else as a string, so `DARKROOM__SERVER__API_BIND=127.0.0.1:9000` needs
/// no quoting; a list is written as a TOML array, e.g.
/// `DARKROOM__AUTH__TRUSTED_PROXIES='["10.0.0.0/8", "::1"]'` (see [`string_list`]).
pub fn environment() -> Environment {
    Environment::with_prefix("DARKROOM")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
}

/// Reads a list of strings: a list in the file, or its TOML array text from the environment
/// (where every value is text).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Visitor;
    impl<'de> de::Visitor<'de> for Visitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(r#"a list of strings, e.g. ["10.0.0.0/8", "::1"]"#)
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<String>, A::Error> {
            Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<String>, E> {
            format!("v = {text}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .and_then(|v| Vec::deserialize(v).ok())
                .ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
        }
    }
    d.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration from a TOML text and environment variables, as `load` layers them.
    fn layers(toml: &str, vars: &[(&str, &str)]) -> Result<Config, String> {
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_layers(
            File::from_str(toml, FileFormat::Toml),
            environment().source(Some(vars)),
        )
    }

    #[test]
    fn object_storage_settings_are_read_and_bad_ones_name_their_key() {
        let config = layers(
            "[storage]\nobject_store_url = \"s3://darkroom-media\"\ns3_endpoint = \"http://127.0.0.1:3900\"\ns3_region = \"garage\"\ns3_access_key_id = \"GK1\"\ns3_secret_access_key = \"s\"\ns3_prefix = \"prod/eu\"",
            &[],
        )
        .unwrap();
        let objects = config.object_settings().unwrap();
        assert_eq!(objects.bucket, "darkroom-media");
        assert_eq!(objects.endpoint, "http://127.0.0.1:3900");
        assert_eq!(objects.region, "garage");
        assert_eq!(
            (
                objects.access_key_id.as_str(),
                objects.secret_access_key.as_str()
            ),
            ("GK1", "s")
        );
        assert_eq!(objects.prefix, "prod/eu");
        assert_eq!(
            Config::default().object_settings(),
            None,
            "local files by default"
        );

        for (toml, key) in [
            (
                "object_store_url = \"http://bucket\"",
                "storage.object_store_url",
            ),
            (
                "object_store_url = \"s3://Bad_Bucket\"",
                "storage.object_store_url",
            ),
            (
                "object_store_url = \"s3://bucket/folder\"",
                "storage.object_store_url",
            ),
            (
                "object_store_url = \"s3://bucket\"\ns3_endpoint = \"127.0.0.1:3900\"",
                "storage.s3_endpoint",
            ),
            (
                "object_store_url = \"s3://bucket\"\ns3_access_key_id = \"GK1\"",
                "storage.s3_access_key_id",
            ),
            (
                "object_store_url = \"s3://bucket\"\ns3_prefix = \"/a/\"",
                "storage.s3_prefix",
            ),
            (
                "s3_endpoint = \"http://127.0.0.1:3900\"",
                "storage.s3_endpoint",
            ),
        ] {
            let err = layers(&format!("[storage]\n{toml}"), &[]).unwrap_err();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn no_file_and_no_environment_gives_the_defaults() {
        assert_eq!(layers("", &[]).unwrap(), Config::default());
    }

    #[test]
    fn environment_overrides_win_over_the_file() {
        let config = layers(
            "[server]\napi_bind = \"127.0.0.1:7000\"\nworkers = 3",
            &[
                ("DARKROOM__SERVER__API_BIND", "127.0.0.1:9000"),
                ("DARKROOM__AUTH__ROOT_KEY", "secret"),
                ("DARKROOM__LIMITS__MAX_PIXELS", "5000"),
                ("DARKROOM__METRICS__ENABLED", "true"),
                ("DARKROOM__EDGE__MODE", "purge"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.api_bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.server.workers, 3, "the file's other keys stay");
        assert_eq!(config.auth.root_key, "secret");
        assert_eq!(config.limits.max_pixels, 5000);
        assert!(config.metrics.enabled);
        assert_eq!(config.edge.mode, EdgeMode::Purge);
    }

    #[test]
    fn a_list_comes_from_the_environment_as_a_toml_array() {
        let config = layers(
            "[auth]\ntrusted_proxies = [\"10.1.1.1\"]",
            &[(
                "DARKROOM__AUTH__TRUSTED_PROXIES",
                r#"["10.0.0.0/8", "::1"]"#,
            )],
        )
        .unwrap();
        assert_eq!(config.auth.trusted_proxies, ["10.0.0.0/8", "::1"]);
        let err = layers("", &[("DARKROOM__AUTH__TRUSTED_PROXIES", "10.0.0.1")]).unwrap_err();
        assert!(err.contains("auth.trusted_proxies"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let err = layers("[server]\napi_bnd = \"127.0.0.1:7000\"", &[]).unwrap_err();
        assert!(err.contains("api_bnd"), "{err}");
        let err = layers("", &[("DARKROOM__SERVER__API_BND", "127.0.0.1:7000")]).unwrap_err();
        assert!(err.contains("api_bnd"), "{err}");
        let err = layers("", &[("DARKROOM__SERVERS__API_BIND", "127.0.0.1:7000")]).unwrap_err();
        assert!(err.contains("servers"), "{err}");
    }

    #[test]
    fn an_invalid_value_is_named_in_the_error() {
        let err = layers("[server]\napi_bind = \"not an address\"", &[]).unwrap_err();
        assert!(err.contains("server.api_bind"), "{err}");
        let err = layers("", &[("DARKROOM__SERVER__API_BIND", "not an address")]).unwrap_err();
        assert!(err.contains("server.api_bind"), "{err}");
        assert!(layers("[limits]\nmax_pixels = 0", &[])
            .unwrap_err()
            .contains("limits.max_pixels"));
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_refused_not_converted() {
        for (toml, vars) in [
            ("[limits]\nmax_pixels = 1.5", vec![]),
            ("[limits]\nmax_pixels = true", vec![]),
            ("[limits]\nmax_pixels = \"yes\"", vec![]),
            ("", vec![("DARKROOM__LIMITS__MAX_PIXELS", "1.5")]),
            ("", vec![("DARKROOM__LIMITS__MAX_PIXELS", "-1")]),
            ("", vec![("DARKROOM__LIMITS__MAX_PIXELS", "many")]),
        ] {
            let err = layers(toml, &vars).unwrap_err();
            assert!(err.contains("limits.max_pixels"), "{toml} {vars:?}: {err}");
        }
        let err = layers("[metrics]\nenabled = 1", &[]).unwrap_err();
        assert!(err.contains("metrics.enabled"), "{err}");
    }

    #[test]
    fn the_shipped_appliance_toml_equals_the_defaults() {
        let text = include_str!("../appliance.toml");
        assert_eq!(layers(text, &[]).unwrap(), Config::default());
    }
}

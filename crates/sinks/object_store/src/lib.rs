//! # respaldo-sink-object-store
//!
//! Repositories in object storage, through the
//! [`object_store`](https://docs.rs/object_store) crate: `s3://bucket/prefix`
//! (AWS and any S3-compatible server: MinIO, Ceph, Garage, moto…),
//! `gs://bucket/prefix` and `az://container/prefix`.
//!
//! * **No partial object is ever visible.** Small objects are one `PUT`;
//!   larger ones (packs) a multipart upload that becomes visible only when it
//!   completes, and is aborted when the stream or an upload fails.
//! * **Bounded memory.** A multipart upload holds at most
//!   [`PARTS_IN_FLIGHT`] parts of [`PART_SIZE`] in memory; the producer waits
//!   (backpressure) until a part has been uploaded.
//! * **Retries** with exponential backoff on 5xx, timeouts, throttling and
//!   dropped connections (object_store's retry policy, `max_retries`).
//! * Credentials, first found wins: keys in the configuration (by
//!   reference, never inline); the profile named by `profile`; the standard
//!   environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN`); the profile `$AWS_PROFILE` (else `default`) of
//!   the shared credentials file; then what `object_store` finds itself
//!   (instance metadata, web identity).
#![deny(missing_docs)]

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload, RetryConfig};
use respaldo_core::error::{Error, Result};
use respaldo_core::kit::secret::Secret;
use respaldo_core::sink::{ByteStream, ObjectInfo, Sink};
use serde::Deserialize;

mod aws_profile;

/// Size of a multipart upload's parts (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one upload in memory or in flight at once.
pub const PARTS_IN_FLIGHT: usize = 2;

/// S3 settings of a repository: `[repository.s3]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`
    /// (plain HTTP is allowed when the endpoint says `http://`). Default: AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region (default: `$AWS_REGION`, `$AWS_DEFAULT_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted
    /// style (`bucket.endpoint/key`). Default: on when `endpoint` is set.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Access key id, by reference (default: `$AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    /// Secret access key, by reference (default: `$AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// A named profile of the AWS shared credentials file
    /// (`~/.aws/credentials`, or `$AWS_SHARED_CREDENTIALS_FILE`); its
    /// `region` in `~/.aws/config` applies unless `region` is set. Default:
    /// `$AWS_PROFILE`, else `default`, used only when neither the keys
    /// above nor `$AWS_ACCESS_KEY_ID` are set.
    #[serde(default)]
    pub profile: Option<String>,
    /// How many times a failed request is retried, with exponential backoff
    /// (default 10).
    #[serde(default)]
    pub max_retries: Option<usize>,
    /// Per-request timeout in seconds (default 60).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// Errors building the sink.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    /// The URL or settings are not usable.
    #[error("{0}")]
    Config(String),
}

/// A repository in an object store.
#[derive(Debug)]
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    location: String,
}

/// Reads `data` into `pending` (`len` bytes) until it holds a part's worth
/// or the stream ends; whether it ended.
async fn fill(
    key: &str,
    data: &mut ByteStream,
    pending: &mut VecDeque<Bytes>,
    len: &mut usize,
) -> Result<bool> {
    while *len < PART_SIZE {
        match data.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| Error::io("reading data to upload", key, e))?;
                *len += chunk.len();
                pending.push_back(chunk);
            }
            None => return Ok(true),
        }
    }
    Ok(false)
}

/// The first `n` bytes (or all there are) of `pending`, as slices of its
/// buffers.
fn take_part(pending: &mut VecDeque<Bytes>, len: &mut usize, n: usize) -> PutPayload {
    let mut need = n.min(*len);
    *len -= need;
    let mut part = Vec::new();
    while need > 0 {
        let Some(mut front) = pending.pop_front() else {
            break;
        };
        if front.len() > need {
            pending.push_front(front.split_off(need));
        }
        need -= front.len();
        part.push(front);
    }
    PutPayload::from_iter(part)
}

/// The shared-file profile to use, if any (see [`S3Options::profile`]).
fn profile_keys(s3: &S3Options) -> Result<Option<aws_profile::ProfileKeys>, ObjectStoreError> {
    let configured_keys = s3.access_key_id.is_some() || s3.secret_access_key.is_some();
    if configured_keys && s3.profile.is_some() {
        return Err(ObjectStoreError::Config(
            "repository.s3: set either `profile` or `access_key_id`/`secret_access_key`, not both"
                .into(),
        ));
    }
    let (name, explicit) = match (&s3.profile, std::env::var("AWS_PROFILE")) {
        (Some(p), _) => (p.clone(), true),
        _ if configured_keys || std::env::var_os("AWS_ACCESS_KEY_ID").is_some() => return Ok(None),
        (None, Ok(p)) if !p.is_empty() => (p, true),
        (None, _) => ("default".to_string(), false),
    };
    match aws_profile::load(&name)? {
        Some(k) => Ok(Some(k)),
        None if explicit => Err(ObjectStoreError::Config(format!(
            "AWS profile `{name}` not found in the shared credentials file \
             (~/.aws/credentials or $AWS_SHARED_CREDENTIALS_FILE)"
        ))),
        None => Ok(None),
    }
}

fn retry(max_retries: Option<usize>) -> RetryConfig {
    RetryConfig {
        max_retries: max_retries.unwrap_or(10),
        retry_timeout: Duration::from_secs(300),
        ..RetryConfig::default()
    }
}

impl ObjectStoreSink {
    /// Whether `url` names an object store this crate handles.
    pub fn handles(url: &str) -> bool {
        ["s3://", "gs://", "az://"]
            .iter()
            .any(|s| url.starts_with(s))
    }

    /// Builds the sink for `s3://bucket/prefix`, `gs://…` or `az://…`.
    pub async fn connect(url: &str, s3: &S3Options) -> Result<Self, ObjectStoreError> {
        let parsed =
            url::Url::parse(url).map_err(|e| ObjectStoreError::Config(format!("`{url}`: {e}")))?;
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| ObjectStoreError::Config(format!("`{url}` names no bucket")))?
            .to_string();
        let prefix = parsed.path().trim_matches('/').to_string();
        let timeout = Duration::from_secs(s3.timeout_secs.unwrap_or(60));
        let client = object_store::ClientOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(Duration::from_secs(10));
        let store: Arc<dyn ObjectStore> =
            match parsed.scheme() {
                "s3" => {
                    let mut b = object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(&bucket)
                        .with_retry(retry(s3.max_retries))
                        .with_client_options(client);
                    let profile = profile_keys(s3)?;
                    let env_region = std::env::var_os("AWS_REGION").is_some()
                        || std::env::var_os("AWS_DEFAULT_REGION").is_some();
                    if let Some(r) = &s3.region {
                        b = b.with_region(r);
                    } else if let Some(r) = profile.as_ref().and_then(|p| p.region.as_ref()) {
                        b = b.with_region(r);
                    } else if !env_region {
                        b = b.with_region("us-east-1");
                    }
                    if let Some(p) = &profile {
                        b = b
                            .with_access_key_id(&p.access_key_id)
                            .with_secret_access_key(&p.secret_access_key);
                        if let Some(t) = &p.session_token {
                            b = b.with_token(t);
                        }
                    }
                    if let Some(e) = &s3.endpoint {
                        b = b
                            .with_endpoint(e)
                            .with_allow_http(e.starts_with("http://"))
                            .with_virtual_hosted_style_request(!s3.path_style.unwrap_or(true));
                    } else if let Some(p) = s3.path_style {
                        b = b.with_virtual_hosted_style_request(!p);
                    }
                    for (secret, set) in [
                        (&s3.access_key_id, "access_key_id"),
                        (&s3.secret_access_key, "secret_access_key"),
                    ] {
                        if let Some(s) = secret {
                            let v = s.resolve().await.map_err(|m| {
                                ObjectStoreError::Config(format!("repository.s3.{set}: {m}"))
                            })?;
                            b = if set == "access_key_id" {
                                b.with_access_key_id(v.expose())
                            } else {
                                b.with_secret_access_key(v.expose())
                            };
                        }
                    }
                    Arc::new(b.build().map_err(|e| {
                        ObjectStoreError::Config(format!("S3 repository `{url}`: {e}"))
                    })?)
                }
                "gs" => Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(&bucket)
                        .with_retry(retry(s3.max_retries))
                        .with_client_options(client)
                        .build()
                        .map_err(|e| ObjectStoreError::Config(format!("`{url}`: {e}")))?,
                ),
                "az" => Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_container_name(&bucket)
                        .with_retry(retry(s3.max_retries))
                        .with_client_options(client)
                        .build()
                        .map_err(|e| ObjectStoreError::Config(format!("`{url}`: {e}")))?,
                ),
                other => {
                    return Err(ObjectStoreError::Config(format!(
                "unsupported repository scheme `{other}://` (s3://, gs://, az:// or a directory)"
            )))
                }
            };
        Ok(ObjectStoreSink {
            store,
            prefix,
            location: url.to_string(),
        })
    }

    /// A sink over any `ObjectStore` (tests, fault injection).
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str, location: &str) -> Self {
        ObjectStoreSink {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            location: location.to_string(),
        }
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn key_of(&self, p: &Path) -> String {
        let s = p.as_ref();
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&self.prefix)
                .map(|r| r.trim_start_matches('/').to_string())
                .unwrap_or_else(|| s.to_string())
        }
    }

    fn err(&self, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                key: key.to_string(),
                location: self.location.clone(),
            },
            other => Error::Storage {
                location: self.location.clone(),
                key: key.to_string(),
                source: Box::new(other),
            },
        }
    }

    /// A multipart upload of `pending` (`len` bytes) and the rest of `data`:
    /// parts of [`PART_SIZE`] cut from the stream's own buffers without
    /// copying, at most [`PARTS_IN_FLIGHT`] uploading at once (the stream is
    /// not read further until one completes). Any failure, of the stream, a
    /// part or the completion, aborts the upload, so the store keeps neither
    /// an object nor the uploaded parts.
    async fn put_multipart(
        &self,
        key: &str,
        mut pending: VecDeque<Bytes>,
        mut len: usize,
        mut data: ByteStream,
    ) -> Result<()> {
        let path = self.path(key);
        let mut upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.err(key, e))?;
        let mut parts: tokio::task::JoinSet<object_store::Result<()>> = tokio::task::JoinSet::new();
        let uploaded: Result<()> = async {
            let mut ended = false;
            loop {
                if !ended {
                    ended = fill(key, &mut data, &mut pending, &mut len).await?;
                }
                if len == 0 {
                    break;
                }
                let part = take_part(&mut pending, &mut len, PART_SIZE);
                while parts.len() >= PARTS_IN_FLIGHT {
                    self.joined(key, parts.join_next().await)?;
                }
                parts.spawn(upload.put_part(part));
            }
            while !parts.is_empty() {
                self.joined(key, parts.join_next().await)?;
            }
            upload.complete().await.map_err(|e| self.err(key, e))?;
            Ok(())
        }
        .await;
        if uploaded.is_err() {
            parts.shutdown().await;
            if let Err(a) = upload.abort().await {
                tracing::warn!("aborting the upload of {key}: {a}");
            }
        }
        uploaded
    }

    /// The outcome of one finished part upload.
    fn joined(
        &self,
        key: &str,
        r: Option<std::result::Result<object_store::Result<()>, tokio::task::JoinError>>,
    ) -> Result<()> {
        match r {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(self.err(key, e)),
            Some(Err(e)) => Err(Error::io(
                "uploading a part",
                key,
                std::io::Error::other(e.to_string()),
            )),
        }
    }
}

#[async_trait]
impl Sink for ObjectStoreSink {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, key: &str, mut data: ByteStream) -> Result<()> {
        // Up to one part's worth (the stream's buffers, not copied): small
        // objects go in a single PUT.
        let mut pending: VecDeque<Bytes> = VecDeque::new();
        let mut len = 0usize;
        if !fill(key, &mut data, &mut pending, &mut len).await? {
            return self.put_multipart(key, pending, len, data).await;
        }
        self.store
            .put(&self.path(key), PutPayload::from_iter(pending))
            .await
            .map_err(|e| self.err(key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let r = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| self.err(key, e))?;
        r.bytes().await.map_err(|e| self.err(key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let b = self
            .store
            .get_range(&self.path(key), range)
            .await
            .map_err(|e| self.err(key, e))?;
        if b.len() as u64 != want {
            return Err(Error::Storage {
                location: self.location.clone(),
                key: key.to_string(),
                source: format!("short read: {} of {want} bytes", b.len()).into(),
            });
        }
        Ok(b)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // object_store lists by path segments: list the folder part, then
        // filter by the full string prefix.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let base = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, true) => None,
            (true, false) => Some(Path::from(dir)),
            (false, true) => Some(Path::from(self.prefix.as_str())),
            (false, false) => Some(Path::from(format!("{}/{dir}", self.prefix))),
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(base.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        Ok(metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: self.key_of(&m.location),
                size: m.size,
                modified: Some(m.last_modified),
            })
            .filter(|o| o.key.starts_with(prefix))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }
}

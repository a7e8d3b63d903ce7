//! Serving render URLs (spec §6, design §4): parse the path, resolve the stack chain, URL
//! overrides and variables into a pipeline, check signatures, negotiate the format, then answer
//! from the render store or render once. Concurrent requests for the same render key share one
//! render (single-flight); a render that fails for a reason in the source or the request is
//! remembered for a while so that hostile URLs do not cost a decode on every hit.

use super::Services;
use crate::error::{Error, Result};
use crate::model::ids::{HashPrefix, OrgName};
use crate::model::image::ImageRecord;
use crate::model::resolve::{self, ResolveInput};
use crate::model::stack::StackDefinition;
use crate::pool::JobClass;
use crate::render::cancel::Cancel;
use crate::render::codecs::OutputFormat;
use crate::render::error::RenderError;
use crate::render::ops::compose::STACK_LAYER;
use crate::render::pipeline::{self, RenderInput};
use crate::render::plan::SourceShape;
use crate::storage::{RenderMeta, ServedPath, StackRevision, StoredRender};
use crate::url::{self, ImageRef, RenderRequest, StackRef, UrlError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a failed render is answered from memory.
const FAILURE_TTL: Duration = Duration::from_secs(60);
/// Most failures remembered at once.
const FAILURE_CAP: usize = 10_000;
/// Most distinct renders whose access is remembered between two writes of access times.
const ACCESS_CAP: usize = 200_000;
/// Most renders one maintenance pass evicts.
const EVICT_PER_PASS: usize = 10_000;
/// Most resolved URLs remembered at once (a few hundred bytes each).
const RESOLVED_CAP: usize = 50_000;

/// A render key: BLAKE3 over everything that determines the output bytes.
pub type RenderKey = [u8; 32];

/// In-memory render coordination shared by all HTTP workers.
#[derive(Default)]
pub struct RenderState {
    inflight: Mutex<HashMap<RenderKey, Arc<Flight>>>,
    failures: Mutex<HashMap<RenderKey, (Instant, Error)>>,
    /// Last access of renders served since access times were last written (only with a
    /// render store budget, which is what they are for).
    accessed: Mutex<HashMap<RenderKey, u64>>,
    /// Render URLs already resolved, by host, path with query and `Accept`: a hit on a known
    /// URL skips the record reads, stack resolution and path bookkeeping. Entries hold the
    /// store generation they were resolved at and are ignored once it moved.
    resolved: Mutex<HashMap<Box<str>, Arc<Resolved>>>,
    /// Renders computed (misses that ran the pipeline).
    pub rendered: AtomicU64,
    /// Requests answered from the render store.
    pub hits: AtomicU64,
    /// Renders stopped before they finished (timeout, or no request waiting any more).
    pub cancelled: AtomicU64,
    /// Mezzanines being built, by mezzanine key: renders of the same image and scale wait
    /// for that decode instead of starting their own.
    pub(super) mezzanines: Mutex<HashMap<RenderKey, super::mezzanine::Building>>,
    /// Sources decoded to build a mezzanine.
    pub mezzanine_decodes: AtomicU64,
    /// Renders that started from a mezzanine (stored, or kept in memory) instead of decoding.
    pub mezzanine_reads: AtomicU64,
    /// The latest full-size decodes, most recent first, kept in memory only (see
    /// [`super::mezzanine::FULL_SIZE_KEPT_BYTES`]).
    pub(super) full_size: Mutex<std::collections::VecDeque<super::mezzanine::Kept>>,
    /// The latest mezzanines read or built, most recent first, also kept in memory (see
    /// [`super::mezzanine::REDUCED_KEPT_BYTES`]).
    pub(super) reduced: Mutex<std::collections::VecDeque<super::mezzanine::Kept>>,
    /// Sources decoded at full size for renders that share the decode.
    pub full_size_decodes: AtomicU64,
    /// Bytes of encoded mezzanines waiting to be stored
    /// ([`super::mezzanine::Keeper`]).
    pub(super) mezzanines_pending: std::sync::atomic::AtomicUsize,
    /// The latest source files read for renders, most recent first, by blob (see
    /// [`super::mezzanine::SOURCE_KEPT_BYTES`]).
    pub(super) sources: Mutex<std::collections::VecDeque<(String, Arc<Vec<u8>>)>>,
}

/// Where a request came from: the organization and the path after it.
pub struct RenderTarget<'a> {
    pub org: &'a str,
    /// The path as rokka's render host would see it (`/{stack}/…`), still percent-encoded.
    pub path: &'a str,
    pub query: &'a str,
    /// `Some(org)` when the path form was used, so signatures over `/{org}/…` verify too.
    pub org_prefix: Option<&'a str>,
    pub accept: Option<&'a str>,
    /// The request carried `Save-Data: on`, which stack expressions may read.
    pub save_data: bool,
    /// The URL as requested, recorded so that invalidations can refresh it at the edge.
    pub served: ServedPath,
    /// Whether the client has hung up; asked while waiting for a render, which is then
    /// given up (and cancelled when nobody else waits for it).
    pub client_gone: &'a (dyn Fn() -> bool + 'a),
    /// The request came through the API listener's preview route ([`preview`]) from a key that
    /// may read the organization's images. That key is the authority a signature stands for
    /// on the public listener, so none is asked; and since no edge cache holds the API
    /// listener's answers, the URL is not recorded as a served path to refresh.
    pub via_api: bool,
}

/// How often a request waiting for a render asks whether its client is still there.
const CLIENT_CHECK: Duration = Duration::from_millis(100);

/// A render URL resolved at one store generation.
struct Resolved {
    generation: u64,
    key: RenderKey,
    /// The render's `ETag` and content type, from its stored header: a hit of a remembered
    /// URL reads only the bytes.
    etag: bytes::Bytes,
    content_type: bytes::Bytes,
    headers: Arc<AnswerHeaders>,
}

/// What a render URL adds to the response besides the render itself; made once per
/// resolution and shared by every hit of a known URL.
#[derive(Debug, Default)]
pub struct AnswerHeaders {
    /// The format was negotiated from `Accept`.
    pub vary_accept: bool,
    /// An expression of the stack read `Save-Data`.
    pub vary_save_data: bool,
    /// `Some(file name)` for `content_disposition: attachment`.
    pub attachment: Option<String>,
    /// Cache tags for purges by tag at a CDN (`org-…`, `image-…`, `stack-…`), joined as
    /// `Surrogate-Key` (spaces) and `Cache-Tag` (commas) want them, in buffers every hit
    /// shares.
    pub surrogate_key: bytes::Bytes,
    pub cache_tag: bytes::Bytes,
    /// `Some(seconds)` for a URL whose answer may change (an alias): a short max-age instead
    /// of a year and `immutable`.
    pub max_age: Option<u64>,
}

impl AnswerHeaders {
    fn new(vary_accept: bool, attachment: Option<String>, tags: &[String]) -> AnswerHeaders {
        AnswerHeaders {
            vary_accept,
            vary_save_data: false,
            attachment,
            surrogate_key: tags.join(" ").into(),
            cache_tag: tags.join(",").into(),
            max_age: None,
        }
    }
}

/// How a render was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From the render store.
    Hit,
    /// Rendered by this request.
    Rendered,
    /// Waited for another request rendering the same key.
    Joined,
}

/// The answer to a render URL.
pub enum RenderAnswer {
    Render {
        /// The encoded image, with its `ETag` and content type.
        body: bytes::Bytes,
        etag: bytes::Bytes,
        content_type: bytes::Bytes,
        served: Served,
        headers: Arc<AnswerHeaders>,
    },
    /// `source_file: true`: the original bytes of this blob.
    Original {
        blob: String,
        mimetype: String,
        size: u64,
        etag: String,
        headers: Arc<AnswerHeaders>,
    },
}

fn url_error(e: UrlError) -> Error {
    match e {
        UrlError::NotFound(m) => Error::NotFound(m),
        UrlError::Invalid(m) => Error::Invalid(m),
    }
}

fn not_found(what: &str) -> Error {
    Error::NotFound(format!("{what} not found"))
}

/// Looks up the image of a render URL, through its alias if it names one; deleted images are
/// not found.
fn find_image(svc: &Services, org: &OrgName, image: &ImageRef) -> Result<ImageRecord> {
    let resolved;
    let raw = match image {
        ImageRef::Hash(raw) => raw,
        ImageRef::Alias(name) => {
            resolved = super::aliases::resolve(&*svc.store, org, name)?;
            &resolved
        }
        ImageRef::Remote(_) => {
            return Err(Error::NotFound(
                "remote images are not supported; use the image hash or an alias".into(),
            ))
        }
    };
    let prefix = HashPrefix::parse(raw).ok_or_else(|| not_found("source image"))?;
    let store = &*svc.store;
    let rec = if prefix.is_full() {
        store.get_image(org.as_str(), prefix.as_str())?
    } else {
        match store
            .hashes_with_prefix(org.as_str(), prefix.as_str(), 2)?
            .as_slice()
        {
            [one] => store.get_image(org.as_str(), one)?,
            _ => None,
        }
    };
    rec.filter(|r| !r.deleted)
        .ok_or_else(|| not_found("source image"))
}

/// The `image.*` context of a render's expressions (spec §5.5).
struct ResolveContext;

impl ResolveContext {
    fn of(rec: &ImageRecord, save_data: bool) -> resolve::ExprContext {
        let (width, height) = oriented_size(rec);
        let subject = rec.dynamic_metadata.get("subject_area").cloned();
        let image = serde_json::json!({
            "width": width,
            "height": height,
            "format": rec.format,
            "hash": rec.hash,
            "isAnimated": rec.animated,
            "hasSubjectArea": subject.is_some(),
            "subject_area": subject.unwrap_or(serde_json::Value::Null),
            // No face detection here: rokka's `face` metadata is never set.
            "hasDetectionFace": false,
            "meta_user": serde_json::Value::Object(rec.user_metadata.clone()),
        });
        resolve::ExprContext { image, save_data }
    }
}

/// Oriented size of a source (EXIF orientations 5–8 swap the axes).
fn oriented_size(rec: &ImageRecord) -> (u32, u32) {
    let orientation = rec
        .static_metadata
        .get("exif")
        .and_then(|e| e.get("Orientation"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1);
    if (5..=8).contains(&orientation) {
        (rec.height, rec.width)
    } else {
        (rec.width, rec.height)
    }
}

/// Answers a render URL asked through the API listener's preview route (the dashboard's
/// thumbnails and stack previews): the caller needs the right to read the organization's
/// images (and, for a `source_file` stack, to download originals), and the render then takes
/// the very path of a public one (same key, same stored render, single-flight, limits and
/// queue).
pub async fn preview(
    svc: &Services,
    who: &super::accounts::Principal,
    target: RenderTarget<'_>,
) -> Result<RenderAnswer> {
    let org = OrgName::parse(target.org).map_err(|_| not_found("organization"))?;
    super::accounts::authorize(
        &*svc.store,
        who,
        &org,
        crate::model::account::Right::ImagesRead,
    )?;
    let answer = render(
        svc,
        RenderTarget {
            via_api: true,
            ..target
        },
    )
    .await?;
    // A `source_file` stack hands out the original bytes, which a `sourceimages:read` key may
    // not download from a protected image: previews of originals need that right.
    if matches!(answer, RenderAnswer::Original { .. }) {
        super::accounts::authorize(
            &*svc.store,
            who,
            &org,
            crate::model::account::Right::DownloadProtected,
        )?;
    }
    Ok(answer)
}

/// The renderer's generation. Rendering is deterministic, so a stored render is the render;
/// when a change makes the same pipeline encode to other bytes (1: progressive JPEG by
/// default, `interlacing.mode`), this number moves, and [`retire_older_renders`] removes the
/// renders of earlier generations at start-up, refreshing their URLs at the edge, so that no
/// URL answers with bytes of two generations from here.
pub const RENDER_EPOCH: u32 = 1;

/// Removes the renders of earlier renderer generations (see [`RENDER_EPOCH`]); returns how
/// many. Their paths are queued for the edge like any purge.
pub fn retire_older_renders(store: &dyn crate::storage::Records) -> Result<u64> {
    let epoch = store.render_epoch()?;
    if epoch >= RENDER_EPOCH {
        return Ok(0);
    }
    // Nodes starting together retire them once: the others find the epoch moved on.
    let Some(_retiring) = store.exclusive("render-epoch")? else {
        return Ok(0);
    };
    if store.render_epoch()? >= RENDER_EPOCH {
        return Ok(0);
    }
    let mut removed = 0;
    for org in store.list_orgs()? {
        removed += store.purge_org_renders(&org.name, false)?.renders;
    }
    store.set_render_epoch(RENDER_EPOCH)?;
    store.flush_blocking()?;
    Ok(removed)
}

/// Answers a render URL.
pub async fn render(svc: &Services, target: RenderTarget<'_>) -> Result<RenderAnswer> {
    let state = &svc.renders;
    // Read before any record: what is resolved below holds while the generation stays.
    let generation = svc.store.generation()?;
    let url_id = resolved_id(&target);
    if let Some(known) = known_url(state, &url_id, generation) {
        if let Some(body) = svc.store.get_render_body(&known.key)? {
            note_hit(svc, known.key);
            return Ok(RenderAnswer::Render {
                body,
                etag: known.etag.clone(),
                content_type: known.content_type.clone(),
                served: Served::Hit,
                headers: known.headers.clone(),
            });
        }
    }
    let org = OrgName::parse(target.org).map_err(|_| not_found("organization"))?;
    let query = (!target.query.is_empty()).then_some(target.query);
    let req: RenderRequest = url::parse_render_path(target.path, query).map_err(url_error)?;
    let max_operations = svc.config.limits.max_operations;
    super::stacks::check_operation_count(req.operations.len(), max_operations)?;
    let organization = svc
        .store
        .get_org(org.as_str())?
        .ok_or_else(|| not_found("organization"))?;
    let image = find_image(svc, &org, &req.image)?;
    if image.is_font() {
        return Err(Error::Invalid(format!(
            "the source image '{}' is a font: fonts are used by the text operation and cannot be rendered",
            image.hash
        )));
    }
    // An alias URL renders exactly as the hash URL (same key, same rules), but its answer
    // changes when the alias is re-pointed: it is remembered as served under the alias.
    let alias = match &req.image {
        ImageRef::Alias(name) => Some(name.clone()),
        _ => None,
    };
    let alias_served = alias
        .as_ref()
        .filter(|_| !target.via_api)
        .map(|_| target.served.clone());
    let mutable = |mut headers: AnswerHeaders| -> Result<AnswerHeaders> {
        if let Some(name) = &alias {
            if let Some(served) = &alias_served {
                super::aliases::note_served(&*svc.store, &org, name, served)?;
            }
            headers.max_age = Some(svc.config.render.alias_max_age_secs);
        }
        Ok(headers)
    };

    let links = match &req.stack {
        StackRef::Dynamic => Vec::new(),
        StackRef::Named(name) => {
            let stored = svc
                .store
                .get_stack(org.as_str(), name)?
                .ok_or_else(|| not_found("stack"))?;
            super::stacks::chain(
                &*svc.store,
                org.as_str(),
                name,
                stored.revision,
                &stored.definition,
            )?
        }
    };
    let stack_name = links.last().map(|l| l.name.clone());
    let chain: Vec<&StackDefinition> = links.iter().map(|l| &l.definition).collect();
    let dynamic = matches!(req.stack, StackRef::Dynamic);
    super::stacks::check_operation_count(
        chain.iter().map(|d| d.operations.len()).sum::<usize>() + req.operations.len(),
        max_operations,
    )?;

    // Signatures are checked before any work that depends on the URL's options.
    let stack_protected = chain
        .last()
        .is_some_and(|d| d.options.get("protected") == Some(&serde_json::Value::Bool(true)));
    let verify = || -> Result<()> {
        let keys: Vec<&str> = organization
            .signing_keys
            .iter()
            .map(String::as_str)
            .collect();
        url::verify_signature(
            target.path,
            query,
            target.org_prefix,
            &keys,
            crate::model::time::now_unix(),
        )
        .map_err(|e| Error::Forbidden(format!("this render URL needs a valid signature: {e}")))
    };
    let mut signed = image.protected
        || stack_protected
        || (dynamic && organization.options.protect_dynamic_stack);
    if signed && !target.via_api {
        verify()?;
    }

    let mut pipeline = resolve::resolve(&ResolveInput {
        chain: &chain,
        url_operations: &req.operations,
        url_options: &req.options,
        url_variables: &req.variables,
        dynamic,
        context: &ResolveContext::of(&image, target.save_data),
    })
    .map_err(|e| Error::Invalid(e.message()))?;
    super::stacks::check_operation_count(pipeline.operations.len(), max_operations)?;
    // Layers made by other stacks (`composition.secondary_stack`), resolved like this render.
    let mut layers = Vec::new();
    let mut visiting: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
    stack_layers(
        svc,
        &org,
        &image,
        &mut pipeline,
        target.save_data,
        &mut visiting,
        &mut layers,
    )?;
    let reads_request = pipeline.reads_request || layers.iter().any(|l| l.pipeline.reads_request);
    // Every other image the render reads follows the same rules as the primary one: it must
    // exist, not be deleted, and a protected one needs the signature too; so does a layer
    // made by a protected stack.
    let mut secondaries = secondary_images(svc, &org, &pipeline)?;
    for layer in &layers {
        for found in secondary_images(svc, &org, &layer.pipeline)? {
            if !secondaries.iter().any(|(given, _)| *given == found.0) {
                secondaries.push(found);
            }
        }
    }
    let layer_protected = layers.iter().any(|l| l.protected || l.image.protected);
    if !signed && (layer_protected || secondaries.iter().any(|(_, rec)| rec.protected)) {
        if !target.via_api {
            verify()?;
        }
        signed = true;
    }
    let negotiated = resolve::negotiate_format(&req.format, &pipeline.options, target.accept)
        .map_err(|e| Error::Invalid(e.message()))?;
    let format = OutputFormat::from_ext(negotiated.format)
        .ok_or_else(|| Error::Invalid(format!("unsupported output format '{}'", req.format)))?;

    let mut tags = vec![format!("org-{org}"), format!("image-{}", image.hash)];
    if let Some(s) = &stack_name {
        tags.push(format!("stack-{org}-{s}"));
    }
    if let Some(a) = &alias {
        tags.push(format!("alias-{org}-{a}"));
    }
    let attachment = (pipeline
        .options
        .get("content_disposition")
        .and_then(|v| v.as_str())
        == Some("attachment"))
    .then(|| {
        format!(
            "{}.{}",
            req.slug.clone().unwrap_or_else(|| image.hash.clone()),
            format.ext()
        )
    });

    // A `source_file` stack delivers the original bytes; its `.blur` is still the BlurHash,
    // of the source as decoded (such a stack has no operations).
    if format.is_image()
        && pipeline.options.get("source_file") == Some(&serde_json::Value::Bool(true))
    {
        return Ok(RenderAnswer::Original {
            blob: image.blob.clone(),
            mimetype: image.mimetype.clone(),
            size: image.size,
            etag: format!("\"{}\"", image.binary_hash),
            headers: Arc::new(mutable(AnswerHeaders::new(
                false,
                attachment.map(|_| image.name.clone()),
                &tags,
            ))?),
        });
    }

    let shape = SourceShape {
        oriented: oriented_size(&image),
        jpeg: image.mimetype == "image/jpeg",
        bytes: image.size,
        frames: u64::from(image.frames.max(1)),
    };
    // Layers are planned first (a nested one before the layer that uses it), each within the
    // limits; the render's plan then knows their sizes.
    let mut layer_sizes: Vec<(String, (u32, u32))> = Vec::new();
    let mut layer_work = 0.0;
    for layer in &layers {
        let size_of = |id: &str| size_for(id, &secondaries, &layer_sizes);
        let layer_plan = pipeline::plan(
            &layer.pipeline,
            OutputFormat::Png,
            SourceShape {
                oriented: oriented_size(&layer.image),
                jpeg: layer.image.mimetype == "image/jpeg",
                bytes: layer.image.size,
                // A layer is one picture: an animation's first frame.
                frames: 1,
            },
            &size_of,
        )?;
        layer_plan.check(&svc.limits(), OutputFormat::Png)?;
        layer_work += layer_plan.work;
        let (w, h) = layer_plan.output;
        layer_sizes.push((
            format!("{STACK_LAYER}{}", layer.id),
            (
                u32::try_from(w).unwrap_or(u32::MAX),
                u32::try_from(h).unwrap_or(u32::MAX),
            ),
        ));
    }
    let secondary_size = |id: &str| size_for(id, &secondaries, &layer_sizes);
    let mut plan = pipeline::plan(&pipeline, format, shape, &secondary_size)?;
    plan.work += layer_work;
    plan.check(&svc.limits(), format)?;
    let class = JobClass::new(
        &[org.as_str(), stack_name.as_deref().unwrap_or("dynamic")],
        plan.is_heavy(),
    );

    let alpha_format = negotiated.alpha_format.and_then(OutputFormat::from_ext);
    let mut canonical = pipeline.canonical_bytes();
    if let Some(alpha) = alpha_format {
        // The render's bytes depend on the format transparency switches to.
        canonical.extend_from_slice(b"\0alpha:");
        canonical.extend_from_slice(alpha.ext().as_bytes());
    }
    let key = render_key(
        &org,
        &image.hash,
        &canonical,
        format,
        negotiated.lossless,
        req.version,
    );
    let meta = RenderMeta {
        content_type: format.mime().to_string(),
        etag: String::new(),
        organization: org.to_string(),
        image: image.hash.clone(),
        // The stacks of its layers too: changing one of them invalidates this render.
        stacks: {
            let mut stacks: Vec<StackRevision> = links
                .iter()
                .map(|l| StackRevision {
                    name: l.name.clone(),
                    revision: l.revision,
                })
                .collect();
            for s in layers.iter().flat_map(|l| &l.stacks) {
                if !stacks.iter().any(|known| known.name == s.name) {
                    stacks.push(s.clone());
                }
            }
            stacks
        },
    };
    let job = RenderJob {
        image,
        secondaries,
        layers,
        class,
        pipeline,
        format,
        lossless: negotiated.lossless,
        alpha_format,
        meta,
        // An empty path is recorded nowhere (see `via_api`).
        served: if target.via_api {
            ServedPath::default()
        } else {
            target.served
        },
    };
    let mut headers = AnswerHeaders::new(negotiated.vary_accept, attachment, &tags);
    headers.vary_save_data = reads_request;
    let (render, served) = fetch_or_render(svc, state, key, job, target.client_gone).await?;
    // A JPEG render with transparency may have been written as WebP or PNG: the file name of
    // an attachment says what it holds.
    if let (Some(name), Some(alpha)) = (&mut headers.attachment, alpha_format) {
        if render.meta.content_type == alpha.mime() {
            if let Some(dot) = name.rfind('.') {
                name.truncate(dot + 1);
                name.push_str(alpha.ext());
            }
        }
    }
    let etag = bytes::Bytes::from(render.meta.etag.clone());
    let content_type = bytes::Bytes::from(render.meta.content_type.clone());
    let headers = Arc::new(mutable(headers)?);
    // A signed URL is checked on every request: its signature may expire. A preview is
    // remembered under an identity of its own, which only an authorized caller reaches.
    if !signed || target.via_api {
        remember_url(
            state,
            url_id,
            Resolved {
                generation,
                key,
                etag: etag.clone(),
                content_type: content_type.clone(),
                headers: headers.clone(),
            },
        );
    }
    Ok(RenderAnswer::Render {
        body: render.into_body(),
        etag,
        content_type,
        served,
        headers,
    })
}

/// What identifies a render URL's resolution: the host (for the host form and for the
/// served-path record), the path with its query, and `Accept` (format negotiation).
fn resolved_id(target: &RenderTarget<'_>) -> Box<str> {
    // Stack expressions may read `Save-Data`: requests with it resolve on their own.
    let accept = match (target.accept.unwrap_or_default(), target.save_data) {
        (a, false) => std::borrow::Cow::Borrowed(a),
        (a, true) => std::borrow::Cow::Owned(format!("{a}\u{1}save-data")),
    };
    let accept = accept.as_ref();
    let mut id = String::with_capacity(
        target.served.host.len() + target.served.path.len() + accept.len() + 3,
    );
    // No header value or path holds this byte, so a public URL never shares a preview's entry.
    if target.via_api {
        id.push('\u{2}');
    }
    // Header values and paths cannot hold a newline.
    for (i, part) in [
        target.served.host.as_str(),
        target.served.path.as_str(),
        accept,
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            id.push('\n');
        }
        id.push_str(part);
    }
    id.into_boxed_str()
}

fn known_url(state: &RenderState, id: &str, generation: u64) -> Option<Arc<Resolved>> {
    let resolved = state.resolved.lock().ok()?;
    resolved
        .get(id)
        .filter(|r| r.generation == generation)
        .cloned()
}

fn remember_url(state: &RenderState, id: Box<str>, entry: Resolved) {
    if let Ok(mut resolved) = state.resolved.lock() {
        if resolved.len() >= RESOLVED_CAP && !resolved.contains_key(&id) {
            // Entries of older generations go first; a full table of live ones starts over.
            resolved.retain(|_, r| r.generation == entry.generation);
            if resolved.len() >= RESOLVED_CAP {
                resolved.clear();
            }
        }
        resolved.insert(id, Arc::new(entry));
    }
}

/// Counts a hit and notes its access for the render store budget.
fn note_hit(svc: &Services, key: RenderKey) {
    svc.renders.hits.fetch_add(1, Ordering::Relaxed);
    if svc.config.render_cache.max_bytes > 0 {
        note_access(&svc.renders, key);
    }
}

/// The render key over everything that determines the bytes (design §4).
pub fn render_key(
    org: &OrgName,
    hash: &str,
    canonical: &[u8],
    format: OutputFormat,
    lossless: bool,
    version: Option<u64>,
) -> RenderKey {
    let mut h = blake3::Hasher::new();
    for part in [
        org.as_str().as_bytes(),
        hash.as_bytes(),
        canonical,
        format.ext().as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(&[u8::from(lossless)]);
    h.update(&version.map_or([0xff; 8], u64::to_be_bytes));
    *h.finalize().as_bytes()
}

/// Remembers that a render was served now; written in batches by [`maintain_cache`].
pub(super) fn note_access(state: &RenderState, key: RenderKey) {
    if let Ok(mut accessed) = state.accessed.lock() {
        if accessed.len() < ACCESS_CAP || accessed.contains_key(&key) {
            accessed.insert(key, crate::storage::edge::now_ms());
        }
    }
}

/// Writes the access times gathered since the last pass and, with a budget
/// (`render_cache.max_bytes`), evicts the least recently used renders past it. Runs every
/// few seconds off the request path.
pub fn maintain_cache(svc: &Services) -> Result<crate::storage::Purged> {
    let accessed: Vec<(RenderKey, u64)> = {
        let mut map = svc
            .renders
            .accessed
            .lock()
            .map_err(|_| Error::internal("render state poisoned"))?;
        map.drain().collect()
    };
    svc.store.touch_renders(&accessed)?;
    match svc.config.render_cache.max_bytes {
        0 => Ok(Default::default()),
        max => match svc.store.exclusive("render-eviction")? {
            // One node evicts at a time; the others leave it this turn.
            Some(_evicting) => Ok(svc.store.evict_renders(max, EVICT_PER_PASS)?),
            None => Ok(Default::default()),
        },
    }
}

/// What a miss renders.
struct RenderJob {
    image: ImageRecord,
    /// The other images the pipeline names, as named and as found.
    secondaries: Vec<(String, ImageRecord)>,
    /// The layers other stacks make (`composition.secondary_stack`), nested ones first.
    layers: Vec<StackLayer>,
    class: JobClass,
    pipeline: crate::model::resolved::ResolvedPipeline,
    format: OutputFormat,
    lossless: bool,
    alpha_format: Option<OutputFormat>,
    meta: RenderMeta,
    served: ServedPath,
}

async fn fetch_or_render(
    svc: &Services,
    state: &Arc<RenderState>,
    key: RenderKey,
    job: RenderJob,
    client_gone: &dyn Fn() -> bool,
) -> Result<(StoredRender, Served)> {
    if let Some(hit) = svc.store.get_render(&key)? {
        note_hit(svc, key);
        svc.store.note_served_path(&key, &job.served)?;
        return Ok((hit, Served::Hit));
    }
    if let Some(err) = remembered_failure(state, &key) {
        return Err(err);
    }
    let served = job.served.clone();
    let (flight, ran) = {
        let mut inflight = state
            .inflight
            .lock()
            .map_err(|_| Error::internal("render state poisoned"))?;
        match inflight.get(&key) {
            // A cancelled flight is on its way out; its result would be the cancellation.
            Some(f) if !f.cancel.is_cancelled() => {
                f.waiters.fetch_add(1, Ordering::AcqRel);
                (f.clone(), false)
            }
            _ => {
                let f = Arc::new(Flight::new());
                inflight.insert(key, f.clone());
                (f, true)
            }
        }
    };
    let waiting = Waiting {
        state: state.clone(),
        key,
        flight: flight.clone(),
    };
    let mut answer = flight.result.subscribe();
    if ran {
        if let Err(e) = start_render(svc, key, flight.clone(), job) {
            finish(state, key, &flight, Err(e.clone()));
            return Err(e);
        }
    }
    let timeout = svc.pool.timeout();
    let deadline = tokio::time::Instant::now() + timeout;
    let result = loop {
        let wake = (tokio::time::Instant::now() + CLIENT_CHECK).min(deadline);
        match tokio::time::timeout_at(wake, answer.wait_for(Option::is_some)).await {
            Ok(Err(_)) => break Err(Error::internal("the render was dropped")),
            Ok(Ok(value)) => {
                break value
                    .clone()
                    .unwrap_or_else(|| Err(Error::internal("the render ended without a result")))
            }
            Err(_) if tokio::time::Instant::now() >= deadline => {
                break Err(crate::pool::PoolError::Timeout(timeout.as_millis() as u64).into())
            }
            Err(_) if client_gone() => {
                break Err(Error::Busy {
                    message: "the client closed the connection".into(),
                    retry_after_secs: 1,
                })
            }
            Err(_) => {}
        }
    };
    // Stops the render when this was the last request waiting for it (timeout included).
    drop(waiting);
    let render = result?;
    if !ran {
        // The render was stored with the path of the request that ran it; this one may have
        // come by another URL, which an invalidation must reach too.
        svc.store.note_served_path(&key, &served)?;
    }
    Ok((
        render,
        if ran {
            Served::Rendered
        } else {
            Served::Joined
        },
    ))
}

/// One render in progress. Every request for its key waits for the same result; when the
/// last of them stops waiting (its client went away, or its deadline passed) before the
/// result is there, the render is cancelled and its thread given back.
struct Flight {
    cancel: Cancel,
    /// Requests waiting; changed only under the `inflight` lock.
    waiters: AtomicUsize,
    result: tokio::sync::watch::Sender<Option<Result<StoredRender>>>,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            cancel: Cancel::new(),
            waiters: AtomicUsize::new(1),
            result: tokio::sync::watch::Sender::new(None),
        }
    }
}

/// A request's interest in a flight, given up when the request's future ends for any reason
/// (answered, timed out, or dropped because the client disconnected).
struct Waiting {
    state: Arc<RenderState>,
    key: RenderKey,
    flight: Arc<Flight>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut inflight = match self.state.inflight.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let last = self.flight.waiters.fetch_sub(1, Ordering::AcqRel) == 1;
        if last && self.flight.result.borrow().is_none() {
            self.flight.cancel.cancel();
            if inflight
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                inflight.remove(&self.key);
            }
        }
    }
}

/// Records a flight's result: failures that will repeat are remembered, the flight leaves the
/// in-flight table (the render is in the store by now), and its waiters wake up.
fn finish(state: &RenderState, key: RenderKey, flight: &Arc<Flight>, result: Result<StoredRender>) {
    match &result {
        Err(e) => remember_failure(state, key, e),
        Ok(_) => {
            state.rendered.fetch_add(1, Ordering::Relaxed);
        }
    }
    {
        let mut inflight = match state.inflight.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if inflight.get(&key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            inflight.remove(&key);
        }
    }
    flight.result.send_replace(Some(result));
}

/// Admits the render of `job` to the CPU pool; the flight gets its result.
fn start_render(svc: &Services, key: RenderKey, flight: Arc<Flight>, job: RenderJob) -> Result<()> {
    let (store, blobs) = (svc.store.clone(), svc.blobs.clone());
    let state = svc.renders.clone();
    let mezzanines = svc.config.render.mezzanine;
    let limits = svc.limits();
    let started = Instant::now();
    let class = job.class;
    let (org, hash) = (job.image.organization.clone(), job.image.hash.clone());
    let cancel = flight.cancel.clone();
    // The store step runs on the runtime's blocking threads, not on the CPU pool: on a shared
    // backend it waits for a database round trip, and the pool's thread can meanwhile start
    // the next render. Without a runtime (none here outside a server) it runs in place.
    let runtime = tokio::runtime::Handle::try_current().ok();
    let (records, job_state) = (store.clone(), state.clone());
    // Mezzanines a render builds are stored the same way, while the render goes on.
    let keeper = super::mezzanine::Keeper {
        store,
        blobs,
        runtime: runtime.clone(),
    };
    svc.pool
        .submit(
            class,
            cancel,
            move |cancel| render_job(&keeper, &job_state, mezzanines, limits, job, cancel),
            move |outcome| {
                let rendered = match outcome {
                    None => Err(RenderError::Cancelled.into()),
                    Some(Err(panic)) => {
                        Err(Error::Internal(format!("the render panicked: {panic}")))
                    }
                    Some(Ok(r)) => r,
                };
                let store_and_finish = move || {
                    // Off the pool, a panic would leave the flight unanswered: it is an error.
                    let result = rendered.and_then(|r| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            records.put_render(&key, &r.meta, r.bytes.into(), &r.served)
                        }))
                        .map_err(|_| Error::internal("storing the render panicked"))?
                        .map_err(Error::from)
                    });
                    finish_render(&state, key, &flight, result, &org, &hash, started);
                };
                match runtime {
                    Some(runtime) => drop(runtime.spawn_blocking(store_and_finish)),
                    None => store_and_finish(),
                }
            },
        )
        .map_err(Error::from)
}

/// Logs a render's outcome and hands it to its flight ([`finish`]).
fn finish_render(
    state: &RenderState,
    key: RenderKey,
    flight: &Arc<Flight>,
    result: Result<StoredRender>,
    org: &str,
    hash: &str,
    started: Instant,
) {
    match &result {
        Ok(stored) => log::info!(
            "rendered {org}/{hash} in {} ms ({} bytes)",
            started.elapsed().as_millis(),
            stored.bytes().len()
        ),
        Err(Error::Busy { .. }) => {
            state.cancelled.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "render of {org}/{hash} stopped after {} ms: nobody waits for it",
                started.elapsed().as_millis()
            )
        }
        Err(_) => {}
    }
    finish(state, key, flight, result);
}

/// A render made, to be stored.
struct Rendered {
    meta: RenderMeta,
    bytes: Vec<u8>,
    served: ServedPath,
}

/// The CPU part of a miss: read, decode (through the image's mezzanine when `mezzanines`),
/// operate, encode.
fn render_job(
    keeper: &super::mezzanine::Keeper,
    state: &Arc<RenderState>,
    mezzanines: bool,
    limits: crate::render::limits::Limits,
    job: RenderJob,
    cancel: &Cancel,
) -> Result<Rendered> {
    let blobs = &*keeper.blobs;
    let source =
        super::mezzanine::source(state, blobs, &job.image.blob).map_err(Error::internal)?;
    let (secondaries, layers) = (&job.secondaries, &job.layers);
    let secondary = |id: &str| -> crate::render::error::Result<image::DynamicImage> {
        load_secondary(blobs, secondaries, layers, id, &limits, cancel)
    };
    let font = |hash: &str| load_font(blobs, secondaries, hash);
    let image = &job.image;
    let mezzanines = (mezzanines && super::mezzanine::applies(image)).then_some(state);
    let shared = |denominator: u32, hint| {
        let decode = || crate::render::codecs::decode(&source, &limits, hint);
        match mezzanines {
            Some(state) => super::mezzanine::decoded(keeper, state, image, denominator, &decode),
            None => decode().map(Arc::new),
        }
    };
    let input = RenderInput {
        pipeline: &job.pipeline,
        format: job.format,
        lossless: job.lossless,
        alpha_format: job.alpha_format,
        limits,
        oriented_size: oriented_size(&job.image),
        dynamic_metadata: &job.image.dynamic_metadata,
        secondary: &secondary,
        font: &font,
        cancel,
        shared_decode: mezzanines
            .is_some()
            .then_some(&shared as &pipeline::SharedDecode),
    };
    let (out, written) = pipeline::render_as(&source, &input)?;
    let mut meta = job.meta;
    meta.content_type = written.mime().to_string();
    meta.etag = format!("\"{}\"", &blake3::hash(&out).to_hex()[..32]);
    Ok(Rendered {
        meta,
        bytes: out,
        served: job.served,
    })
}

/// The images other than the primary one that `pipeline` reads, each as named in its
/// option and as found: they must exist and not be deleted, like the primary image.
fn secondary_images(
    svc: &Services,
    org: &OrgName,
    pipeline: &crate::model::resolved::ResolvedPipeline,
) -> Result<Vec<(String, ImageRecord)>> {
    let mut out: Vec<(String, ImageRecord)> = Vec::new();
    for op in &pipeline.operations {
        for (option, hash) in crate::model::schema::image_references(&op.name, &op.options) {
            if out.iter().any(|(given, _)| given == hash) {
                continue;
            }
            let rec = find_image(svc, org, &ImageRef::Hash(hash.to_string())).map_err(|_| {
                Error::Invalid(format!("{}.{option}: image '{hash}' not found", op.name))
            })?;
            // `text.font` names a font; every other reference an image.
            let wants_font = op.name == "text" && option == "font";
            if wants_font != rec.is_font() {
                let what = if wants_font { "a font" } else { "an image" };
                return Err(Error::Invalid(format!(
                    "{}.{option}: '{hash}' is not {what}",
                    op.name
                )));
            }
            out.push((hash.to_string(), rec));
        }
    }
    Ok(out)
}

/// The size a composition's secondary layer starts from: a layer's planned output, or
/// another image's oriented size.
fn size_for(
    id: &str,
    secondaries: &[(String, ImageRecord)],
    layers: &[(String, (u32, u32))],
) -> Option<(u32, u32)> {
    if id.starts_with(STACK_LAYER) {
        return layers.iter().find(|(l, _)| l == id).map(|(_, size)| *size);
    }
    secondaries
        .iter()
        .find(|(given, _)| given == id)
        .map(|(_, rec)| oriented_size(rec))
}

/// A layer made by another stack for `composition.secondary_stack`: that stack's pipeline,
/// resolved for the image it runs on.
struct StackLayer {
    /// Its id in the composition's `secondary_stack` option once resolved: the stack name and
    /// a digest of the image and the pipeline, so the render key follows both.
    id: String,
    image: ImageRecord,
    pipeline: crate::model::resolved::ResolvedPipeline,
    /// The stack and its basestacks, with their revisions, for the render index.
    stacks: Vec<StackRevision>,
    /// The stack asks for signed URLs.
    protected: bool,
}

/// Most `secondary_stack` layers one render may build, nested ones included.
const MAX_LAYERS: usize = 8;

/// Resolves every `composition.secondary_stack` of `pipeline` (and of the layers' own
/// pipelines) into [`StackLayer`]s, nested ones first, and rewrites each such option to its
/// layer id. `visiting` holds the stacks on the way here: naming one of them again is a cycle.
fn stack_layers(
    svc: &Services,
    org: &OrgName,
    primary: &ImageRecord,
    pipeline: &mut crate::model::resolved::ResolvedPipeline,
    save_data: bool,
    visiting: &mut Vec<String>,
    layers: &mut Vec<StackLayer>,
) -> Result<()> {
    for op in pipeline
        .operations
        .iter_mut()
        .filter(|op| op.name == "composition")
    {
        let Some(name) = op
            .options
            .get("secondary_stack")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
        else {
            continue;
        };
        if visiting.contains(&name) {
            return Err(Error::Invalid(format!(
                "composition.secondary_stack '{name}' forms a cycle (stacks: {} → {name})",
                visiting.join(" → ")
            )));
        }
        if layers.len() >= MAX_LAYERS {
            return Err(Error::Invalid(format!(
                "the render needs more than {MAX_LAYERS} secondary_stack layers"
            )));
        }
        let stored = svc.store.get_stack(org.as_str(), &name)?.ok_or_else(|| {
            Error::Invalid(format!(
                "composition.secondary_stack: stack '{name}' does not exist"
            ))
        })?;
        let links = super::stacks::chain(
            &*svc.store,
            org.as_str(),
            &name,
            stored.revision,
            &stored.definition,
        )?;
        let image = match op
            .options
            .get("secondary_image")
            .and_then(serde_json::Value::as_str)
        {
            Some(hash) => {
                find_image(svc, org, &ImageRef::Hash(hash.to_string())).map_err(|_| {
                    Error::Invalid(format!(
                        "composition.secondary_image: image '{hash}' not found"
                    ))
                })?
            }
            None => primary.clone(),
        };
        let variables = layer_variables(op.options.get("secondary_stack_variables"));
        let chain: Vec<&StackDefinition> = links.iter().map(|l| &l.definition).collect();
        let mut nested = resolve::resolve(&ResolveInput {
            chain: &chain,
            url_operations: &[],
            url_options: &[],
            url_variables: &variables,
            dynamic: false,
            context: &ResolveContext::of(&image, save_data),
        })
        .map_err(|e| Error::Invalid(format!("secondary_stack '{name}': {}", e.message())))?;
        visiting.push(name.clone());
        stack_layers(svc, org, &image, &mut nested, save_data, visiting, layers)?;
        visiting.pop();
        let mut digest = blake3::Hasher::new();
        digest.update(image.hash.as_bytes());
        digest.update(&nested.canonical_bytes());
        let id = format!("{name}#{}", &digest.finalize().to_hex()[..16]);
        op.options.insert(
            "secondary_stack".into(),
            serde_json::Value::String(id.clone()),
        );
        op.options.remove("secondary_stack_variables");
        let protected = chain
            .last()
            .is_some_and(|d| d.options.get("protected") == Some(&serde_json::Value::Bool(true)));
        if !layers.iter().any(|l| l.id == id) {
            layers.push(StackLayer {
                id,
                image,
                pipeline: nested,
                stacks: links
                    .iter()
                    .map(|l| StackRevision {
                        name: l.name.clone(),
                        revision: l.revision,
                    })
                    .collect(),
                protected,
            });
        }
    }
    Ok(())
}

/// `secondary_stack_variables`: URL query parameters (`c=00FF00&w=20`) as the option, or an
/// object as an operation expression gives it.
fn layer_variables(
    given: Option<&serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    match given {
        Some(serde_json::Value::Object(v)) => v.clone(),
        Some(serde_json::Value::String(query)) => query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k), serde_json::Value::String(decode(v)))
            })
            .collect(),
        _ => serde_json::Map::new(),
    }
}

/// Decodes another image of the organization for `composition`, from the records resolved
/// (and checked) with the request; or renders a `secondary_stack` layer on its image.
fn load_secondary(
    blobs: &dyn crate::storage::Bytes,
    secondaries: &[(String, ImageRecord)],
    layers: &[StackLayer],
    id: &str,
    limits: &crate::render::limits::Limits,
    cancel: &Cancel,
) -> crate::render::error::Result<image::DynamicImage> {
    if let Some(layer_id) = id.strip_prefix(STACK_LAYER) {
        let Some(layer) = layers.iter().find(|l| l.id == layer_id) else {
            return Err(RenderError::Internal(format!(
                "layer '{layer_id}' was not resolved with the request"
            )));
        };
        let bytes = blobs
            .read(&layer.image.blob)
            .map_err(|e| RenderError::Internal(e.to_string()))?;
        let nested =
            |inner: &str| load_secondary(blobs, secondaries, layers, inner, limits, cancel);
        let font = |hash: &str| load_font(blobs, secondaries, hash);
        let input = RenderInput {
            pipeline: &layer.pipeline,
            format: OutputFormat::Png,
            lossless: true,
            alpha_format: None,
            limits: *limits,
            oriented_size: oriented_size(&layer.image),
            dynamic_metadata: &layer.image.dynamic_metadata,
            secondary: &nested,
            font: &font,
            cancel,
            shared_decode: None,
        };
        return pipeline::render_layer(&bytes, &input);
    }
    let rec = secondary_record(secondaries, id)?;
    let bytes = blobs
        .read(&rec.blob)
        .map_err(|e| RenderError::Internal(e.to_string()))?;
    Ok(crate::render::codecs::decode(&bytes, limits, None)?.image)
}

/// The bytes of a font the request resolved (`text.font`).
fn load_font(
    blobs: &dyn crate::storage::Bytes,
    secondaries: &[(String, ImageRecord)],
    hash: &str,
) -> crate::render::error::Result<Vec<u8>> {
    let rec = secondary_record(secondaries, hash)?;
    blobs
        .read(&rec.blob)
        .map_err(|e| RenderError::Internal(e.to_string()))
}

/// The record of another image the request resolved, by the hash its option named.
fn secondary_record<'a>(
    secondaries: &'a [(String, ImageRecord)],
    hash: &str,
) -> crate::render::error::Result<&'a ImageRecord> {
    secondaries
        .iter()
        .find(|(given, _)| given == hash)
        .map(|(_, rec)| rec)
        .ok_or_else(|| {
            RenderError::Internal(format!("image '{hash}' was not resolved with the request"))
        })
}

fn remembered_failure(state: &RenderState, key: &RenderKey) -> Option<Error> {
    let failures = state.failures.lock().ok()?;
    failures
        .get(key)
        .filter(|(at, _)| at.elapsed() < FAILURE_TTL)
        .map(|(_, e)| e.clone())
}

/// Only failures that will repeat are remembered: client errors, not a full queue or a
/// timeout.
fn remember_failure(state: &RenderState, key: RenderKey, e: &Error) {
    if !(400..500).contains(&e.status()) {
        return;
    }
    if let Ok(mut failures) = state.failures.lock() {
        if failures.len() >= FAILURE_CAP {
            failures.retain(|_, (at, _)| at.elapsed() < FAILURE_TTL);
            if failures.len() >= FAILURE_CAP {
                failures.clear();
            }
        }
        failures.insert(key, (Instant::now(), e.clone()));
    }
}

//! Criterion benchmarks of the render paths, without HTTP and without starting a server: a
//! 12-megapixel JPEG to a 300 px JPEG (q80), a 1200 px WebP and a 300 px AVIF; a 2000×1500
//! RGBA PNG to a 300 px PNG, WebP and AVIF; a cache hit through the render listener's own
//! service (routing, URL parse, resolution or its remembered result, store lookup, response
//! around the stored bytes; everything but the socket); and the URL parser alone.
//!
//! Inputs are made at start-up and nothing is downloaded. With `BENCH_DATA=DIR` the first
//! `*.jpg` and `*.png` found in `DIR`, `DIR/jpeg` and `DIR/png` are used (the layout that
//! `make_dataset.py` of the peer tools writes); a folder with only JPEGs gets its PNG made
//! from the photo (2000×1500 with a vignette alpha). Without it a detailed 4000×3000 image is
//! synthesised: gradients, edges, fine texture and sensor-like noise, saved at q90 4:2:0.
//! Real photos give more representative numbers: JPEG decoding cost grows with the
//! entropy-coded size, and a synthetic image matches a camera file only roughly.
//!
//! `cargo bench --bench render`; a filter narrows it: `cargo bench --bench render -- hit`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::io::Write;

use actix_web::test::{self, TestRequest};
use actix_web::{web, App};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use darkroom::config::Config;
use darkroom::model::ids::OrgName;
use darkroom::model::image::ImageRecord;
use darkroom::model::resolve::{negotiate_format, resolve, ResolveInput};
use darkroom::model::resolved::ResolvedPipeline;
use darkroom::pool::CpuPool;
use darkroom::render::codecs::OutputFormat;
use darkroom::render::limits::Limits;
use darkroom::render::pipeline::{render, RenderInput};
use darkroom::service::accounts::create_org;
use darkroom::service::Services;
use darkroom::storage::Storage;
use darkroom::url::{parse_render_path, RenderRequest, StackRef};
use image::{DynamicImage, ImageEncoder, RgbImage, RgbaImage};
use serde_json::Map;

const ORG: &str = "bench";
const HASH: &str = "8f7c2e0b9a1d4c3e5f60718293a4b5c6d7e8f901";

/// The source images every render bench starts from, encoded as they would be uploaded.
struct Fixtures {
    jpeg: Vec<u8>,
    jpeg_size: (u32, u32),
    png: Vec<u8>,
    png_size: (u32, u32),
    origin: String,
}

fn fixtures() -> Fixtures {
    let dir = std::env::var_os("BENCH_DATA").map(PathBuf::from);
    let found = dir.as_deref().map(|d| (find(d, "jpg"), find(d, "png")));
    let (jpeg, origin) = match found.as_ref().and_then(|(j, _)| j.as_ref()) {
        Some(path) => (read(path), path.display().to_string()),
        None => {
            if let Some(d) = &dir {
                eprintln!("BENCH_DATA={}: no .jpg found, synthesising", d.display());
            }
            (synthetic_jpeg(4000, 3000), "synthetic".to_string())
        }
    };
    let photo = image::load_from_memory(&jpeg).expect("the JPEG fixture decodes");
    let jpeg_size = (photo.width(), photo.height());
    let png = match found.as_ref().and_then(|(_, p)| p.as_ref()) {
        Some(path) => read(path),
        None => rgba_png_from(&photo, 2000, 1500),
    };
    let png_img = image::load_from_memory(&png).expect("the PNG fixture decodes");
    let png_size = (png_img.width(), png_img.height());
    eprintln!(
        "fixtures: JPEG {}x{} {:.2} MB, PNG {}x{} {:?} {:.2} MB (from {origin})",
        jpeg_size.0,
        jpeg_size.1,
        jpeg.len() as f64 / 1e6,
        png_size.0,
        png_size.1,
        png_img.color(),
        png.len() as f64 / 1e6,
    );
    Fixtures {
        jpeg,
        jpeg_size,
        png,
        png_size,
        origin,
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The first file (by name) with extension `ext` in `dir`, `dir/jpeg` or `dir/png`.
fn find(dir: &Path, ext: &str) -> Option<PathBuf> {
    let mut all: Vec<PathBuf> = [dir.to_path_buf(), dir.join("jpeg"), dir.join("png")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                x.eq_ignore_ascii_case(ext) || (ext == "jpg" && x.eq_ignore_ascii_case("jpeg"))
            })
        })
        .collect();
    all.sort();
    all.into_iter().next()
}

/// A small deterministic generator (xorshift64*), so every run benches the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Roughly normal, mean 0, standard deviation 1 (sum of four uniforms).
    fn normal(&mut self) -> f32 {
        let v = self.next();
        let s: u32 = (0..4).map(|i| ((v >> (16 * i)) & 0xffff) as u32).sum();
        (s as f32 / 65535.0 - 2.0) * 1.732
    }
}

/// A photo-like image: a sky-to-ground gradient, large soft shapes with hard edges, a band
/// of fine texture (foliage-like), small sharp detail, and noise that is mostly in luma.
/// Saved at JPEG quality 90, 4:2:0, which gives a file size in the range of real 12 MP photos.
fn synthetic_jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut img = RgbImage::new(w, h);
    let (fw, fh) = (w as f32, h as f32);
    let discs: Vec<(f32, f32, f32, [f32; 3])> = (0..40)
        .map(|_| {
            let x = (rng.next() % w as u64) as f32;
            let y = (rng.next() % h as u64) as f32;
            let r = 40.0 + (rng.next() % 400) as f32;
            let c = [
                (rng.next() % 200) as f32 + 30.0,
                (rng.next() % 200) as f32 + 30.0,
                (rng.next() % 200) as f32 + 30.0,
            ];
            (x, y, r, c)
        })
        .collect();
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (u, v) = (x as f32 / fw, y as f32 / fh);
        // sky to ground
        let mut c = if v < 0.45 {
            [110.0 + 90.0 * v, 150.0 + 60.0 * v, 230.0 - 40.0 * v]
        } else {
            [
                90.0 + 40.0 * u,
                110.0 - 30.0 * v,
                60.0 + 20.0 * (u * 9.0).sin(),
            ]
        };
        // fine texture on the ground: several octaves of interfering waves
        if v >= 0.45 {
            let t = (x as f32 * 0.37).sin() * (y as f32 * 0.29).cos()
                + 0.6 * ((x + 2 * y) as f32 * 0.113).sin()
                + 0.4 * ((3 * x) as f32 * 0.051 - y as f32 * 0.071).cos();
            for ch in &mut c {
                *ch += 22.0 * t;
            }
        }
        // large shapes with hard edges and a shaded interior
        for (dx, dy, r, dc) in &discs {
            let d2 = (x as f32 - dx).powi(2) + (y as f32 - dy).powi(2);
            if d2 < r * r {
                let shade = 1.0 - 0.5 * d2 / (r * r);
                c = [dc[0] * shade, dc[1] * shade, dc[2] * shade];
            }
        }
        // thin lines: window frames, branches
        if x % 97 < 2 && v > 0.2 || y % 131 < 2 && u > 0.6 {
            c = [c[0] * 0.3, c[1] * 0.3, c[2] * 0.3];
        }
        let luma = 3.0 * rng.normal();
        let chroma = [rng.normal(), rng.normal(), rng.normal()];
        for (i, ch) in c.iter().enumerate() {
            px.0[i] = (ch + luma + chroma[i]).clamp(0.0, 255.0) as u8;
        }
    }
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.encode(
        img.as_raw(),
        w as u16,
        h as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .expect("the synthetic JPEG encodes");
    out
}

/// A `w`×`h` RGBA PNG made from `photo`, with a vignette alpha (opaque centre, transparent
/// corners), as logos and cut-outs have.
fn rgba_png_from(photo: &DynamicImage, w: u32, h: u32) -> Vec<u8> {
    let small = photo
        .resize_exact(w, h, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let rgba = RgbaImage::from_fn(w, h, |x, y| {
        let p = small.get_pixel(x, y).0;
        let dx = (x as f32 - w as f32 / 2.0) / (w as f32 / 2.0);
        let dy = (y as f32 - h as f32 / 2.0) / (h as f32 / 2.0);
        let a = ((1.3 - (dx * dx + dy * dy).sqrt()).clamp(0.0, 1.0) * 255.0) as u8;
        image::Rgba([p[0], p[1], p[2], a])
    });
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgba.as_raw(), w, h, image::ExtendedColorType::Rgba8)
        .expect("the PNG fixture encodes");
    out
}

/// A parsed, resolved render URL: what the service renders for it.
struct Planned {
    pipeline: ResolvedPipeline,
    format: OutputFormat,
    lossless: bool,
}

fn plan(path: &str) -> Planned {
    let req = parse_render_path(path, None).expect("the bench URL parses");
    let (pipeline, format, lossless) = resolved(&req);
    Planned {
        pipeline,
        format,
        lossless,
    }
}

fn resolved(req: &RenderRequest) -> (ResolvedPipeline, OutputFormat, bool) {
    let pipeline = resolve(&ResolveInput {
        chain: &[],
        url_operations: &req.operations,
        url_options: &req.options,
        url_variables: &req.variables,
        dynamic: matches!(req.stack, StackRef::Dynamic),
        context: &Default::default(),
    })
    .expect("the bench URL resolves");
    let negotiated =
        negotiate_format(&req.format, &pipeline.options, None).expect("a supported format");
    let format = OutputFormat::from_ext(negotiated.format).expect("a known format");
    (pipeline, format, negotiated.lossless)
}

fn run(source: &[u8], size: (u32, u32), planned: &Planned) -> Vec<u8> {
    let metadata = Map::new();
    let secondary = |_: &str| -> darkroom::render::error::Result<DynamicImage> {
        unreachable!("no composition in the bench pipelines")
    };
    let font = |_: &str| -> darkroom::render::error::Result<Vec<u8>> {
        unreachable!("no text in the bench pipelines")
    };
    let input = RenderInput {
        pipeline: &planned.pipeline,
        format: planned.format,
        lossless: planned.lossless,
        alpha_format: None,
        limits: Limits::default(),
        oriented_size: size,
        dynamic_metadata: &metadata,
        secondary: &secondary,
        font: &font,
        cancel: &darkroom::render::cancel::Cancel::new(),
        shared_decode: None,
    };
    render(source, &input).expect("the bench render succeeds")
}

/// (bench name, source, render URL path after the organization).
const RENDERS: &[(&str, Source, &str)] = &[
    (
        "jpeg12mp_to_jpeg300_q80",
        Source::Jpeg,
        "/dynamic/resize-width-300--o-jpg.quality-80/{h}.jpg",
    ),
    (
        "jpeg12mp_to_webp1200",
        Source::Jpeg,
        "/dynamic/resize-width-1200/{h}.webp",
    ),
    (
        "jpeg12mp_to_avif300",
        Source::Jpeg,
        "/dynamic/resize-width-300/{h}.avif",
    ),
    (
        "png_rgba_to_png300",
        Source::Png,
        "/dynamic/resize-width-300/{h}.png",
    ),
    (
        "png_rgba_to_webp300",
        Source::Png,
        "/dynamic/resize-width-300/{h}.webp",
    ),
    (
        "png_rgba_to_avif300",
        Source::Png,
        "/dynamic/resize-width-300/{h}.avif",
    ),
];

#[derive(Clone, Copy)]
enum Source {
    Jpeg,
    Png,
}

fn bench_renders(c: &mut Criterion) {
    let fx = fixtures();
    let mut group = c.benchmark_group("render");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    for (name, source, path) in RENDERS {
        let planned = plan(&path.replace("{h}", HASH));
        let (bytes, size) = match source {
            Source::Jpeg => (&fx.jpeg, fx.jpeg_size),
            Source::Png => (&fx.png, fx.png_size),
        };
        let out = run(bytes, size, &planned);
        eprintln!("{name}: {} bytes out", out.len());
        group.bench_function(*name, |b| {
            b.iter(|| black_box(run(black_box(bytes), size, &planned)))
        });
    }
    group.finish();
    eprintln!("render inputs were {}", fx.origin);
}

/// The render listener's own service (routing, handler, resolution, store, response) over a
/// temporary data folder holding one organization and one uploaded 1200×900 photo: everything
/// a request goes through except the socket.
fn hit_services(dir: &Path) -> web::Data<Services> {
    let storage = Storage::open_embedded(dir, 64, 0).expect("a temporary store");
    let store = &*storage.records;
    let org = OrgName::parse(ORG).expect("a valid organization name");
    create_org(store, &org, "", "").expect("the organization is created");
    let source = synthetic_jpeg(1200, 900);
    let mut staged = storage.bytes.stage().expect("a temporary file");
    staged.write_all(&source).expect("the source is written");
    let received = staged.finish().expect("the source is written");
    storage
        .bytes
        .commit(&received)
        .expect("the source is stored");
    let blob = received.id;
    let record: ImageRecord = serde_json::from_value(serde_json::json!({
        "organization": ORG, "hash": HASH, "binary_hash": "0".repeat(40), "blob": blob,
        "name": "holiday-photo.jpg", "format": "jpg", "mimetype": "image/jpeg",
        "size": source.len(), "width": 1200, "height": 900,
        "created": "2026-01-01T00:00:00+00:00", "created_ns": 1_767_225_600_000_000_000_i128,
        "deleted": false, "user_metadata": {}, "opaque": true, "animated": false
    }))
    .expect("a valid image record");
    store.insert_image(&record).expect("the image is stored");
    let pool = CpuPool::new(2, 16, Duration::from_secs(30)).expect("a render pool");
    web::Data::new(Services::new(Config::default(), storage, pool))
}

fn bench_hit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let rt = actix_rt::Runtime::new().expect("a runtime");
    let services = hit_services(dir.path());
    let app = rt.block_on(test::init_service(
        App::new()
            .app_data(services)
            .configure(darkroom::http::render::routes),
    ));
    let path =
        format!("/{ORG}/dynamic/resize-width-300--o-jpg.quality-80/{HASH}/holiday-photo.jpg");
    // One GET through the service; the body is shared with the store's buffer, not copied.
    let get = |path: &str, host: &str| -> web::Bytes {
        let req = TestRequest::get()
            .uri(path)
            .insert_header(("Host", host))
            .to_request();
        rt.block_on(async {
            let resp = test::call_service(&app, req).await;
            assert!(resp.status().is_success(), "{}", resp.status());
            actix_web::body::to_bytes(resp.into_body())
                .await
                .expect("an in-memory body")
        })
    };
    // The first request renders; every later one is a hit.
    eprintln!("hit: a {} byte render", get(&path, "img.example.com").len());
    let mut group = c.benchmark_group("hit");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    // A URL asked before: its resolution is remembered while nothing it depends on changes.
    group.bench_function("known_url", |b| {
        b.iter(|| get(black_box(&path), "img.example.com"))
    });
    // The first request of a URL whose render is stored (here: under another Host): reads the
    // organization and image records, resolves, looks the render up, notes the path.
    let mut n = 0u64;
    group.bench_function("first_request_of_a_url", |b| {
        b.iter(|| {
            n += 1;
            get(black_box(&path), &format!("h{n}.example.com"))
        })
    });
    group.finish();
}

fn bench_url(c: &mut Criterion) {
    let simple = format!("/dynamic/resize-width-300--o-jpg.quality-80/{HASH}.jpg");
    let rich = format!(
        "/dynamic/resize-width-600-height-400-mode-fill--crop-width-600-height-400-anchor-smart\
         --grayscale--o-jpg.quality-75-dpr-2--v-w-600/{HASH}/a%20holiday-photo-v3.jpg"
    );
    let named = "/thumb/resize-width-200/8f7c2e/ferien.webp".to_string();
    let mut group = c.benchmark_group("url");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for (name, path, query) in [
        ("parse_dynamic_simple", &simple, None),
        ("parse_dynamic_rich", &rich, Some("v=%7B%22h%22%3A400%7D")),
        ("parse_named_short_hash", &named, None),
    ] {
        parse_render_path(path, query).expect("the bench URL parses");
        group.bench_function(name, |b| {
            b.iter(|| parse_render_path(black_box(path), black_box(query)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_url, bench_hit, bench_renders);
criterion_main!(benches);

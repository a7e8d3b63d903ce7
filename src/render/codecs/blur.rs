//! The `blur` output (rokka's `/{stack}/{hash}.blur`): the BlurHash string of the rendered
//! image, a 28-character placeholder that a page draws as a blurred gradient while the real
//! render loads. It is encoded like any other format, at the end of the pipeline and from the
//! rendered pixels, so it follows every operation of the URL and is stored, keyed, purged and
//! collected like an image render. The string comes from the `blurhash` crate; this module
//! prepares its input: the image made opaque and reduced, in linear light, to a small sample.

use std::borrow::Cow;
use std::sync::OnceLock;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{
    create_srgb_mapper, FilterType, PixelComponentMapper, PixelType, ResizeAlg, ResizeOptions,
    Resizer,
};
use image::{DynamicImage, Rgb, RgbImage, RgbaImage};

use crate::render::error::{RenderError, Result};

/// BlurHash components across and down. rokka answers `.blur` with 4×3 and documents no option
/// to choose others, so they are fixed: 4×3 is also the BlurHash authors' default for
/// landscape and square images, and gives a 28-character string (4 + 2 per component).
pub const COMPONENTS: (u32, u32) = (4, 3);

/// The long side of the sample the BlurHash is computed from. The encoder makes twelve passes
/// over every pixel it is given: measured on one core, 280 ms for a 12-megapixel render
/// against 65 ms for reducing it to 128×96 in linear light and 0.2 ms for encoding that.
/// Only the lowest frequencies survive 4×3 components, so the sample decodes to the
/// same placeholder as the full image, though not always character for character: BlurHash's
/// formula samples its cosines at pixel edges (an error in proportion to 1/side) and its
/// square-root quantisation magnifies small differences near zero. Against the full 1200×900
/// image, four test images (a scene, a gradient, fine stripes, two flat halves) decoded 1 to 5
/// levels of 255 apart on average at 128 px, 2 to 5 at 64 px.
pub const SAMPLE_SIDE: u32 = 128;

/// The BlurHash of `img` as UTF-8 bytes (ASCII, no line end).
///
/// BlurHash has no alpha channel, so transparency is composited over `background`: the
/// pipeline passes the colour a JPEG of the same URL is flattened onto (`transparency.color`,
/// else `jpg.transparency.color`, white by default), so that the placeholder looks like the
/// JPEG render and a stack can match it to its page.
///
/// Errors: `Cancelled` when the render was cancelled; `Invalid` for an empty image.
pub fn encode(img: &DynamicImage, background: [u8; 3]) -> Result<Vec<u8>> {
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(RenderError::Invalid(format!(
            "the output image would be empty ({width}x{height})"
        )));
    }
    stop_if_cancelled()?;
    let opaque = opaque_rgb(img, background);
    stop_if_cancelled()?;
    let sample = linear_sample(&opaque)?;
    stop_if_cancelled()?;
    // The encoder reads four bytes a pixel and ignores the fourth.
    let rgba: Vec<u8> = sample
        .pixels()
        .flat_map(|px| [px[0], px[1], px[2], 255])
        .collect();
    let (cx, cy) = COMPONENTS;
    let hash = blurhash::encode(cx, cy, sample.width(), sample.height(), &rgba)
        .map_err(|e| RenderError::Internal(format!("the BlurHash encoder failed: {e}")))?;
    Ok(hash.into_bytes())
}

fn stop_if_cancelled() -> Result<()> {
    if crate::render::cancel::stop_requested() {
        return Err(RenderError::Cancelled);
    }
    Ok(())
}

/// `width` × `height` scaled so that the long side is at most [`SAMPLE_SIDE`], keeping the
/// aspect ratio (at least one pixel a side); smaller images are used as they are.
fn sample_size(width: u32, height: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= SAMPLE_SIDE {
        return (width, height);
    }
    let scale = |side: u32| {
        let scaled =
            (u64::from(side) * u64::from(SAMPLE_SIDE) + u64::from(long) / 2) / u64::from(long);
        u32::try_from(scaled)
            .unwrap_or(SAMPLE_SIDE)
            .clamp(1, SAMPLE_SIDE)
    };
    (scale(width), scale(height))
}

/// The pixels as opaque RGB, transparency composited over `background` in sRGB values as the
/// JPEG encoder flattens it; borrowed when the image is RGB already.
fn opaque_rgb(img: &DynamicImage, background: [u8; 3]) -> Cow<'_, RgbImage> {
    match img {
        DynamicImage::ImageRgb8(buffer) => Cow::Borrowed(buffer),
        DynamicImage::ImageRgba8(buffer) => Cow::Owned(composite(buffer, background)),
        other if other.color().has_alpha() => Cow::Owned(composite(&other.to_rgba8(), background)),
        other => Cow::Owned(other.to_rgb8()),
    }
}

fn composite(rgba: &RgbaImage, background: [u8; 3]) -> RgbImage {
    let over =
        |c: u8, bg: u8, a: u32| ((u32::from(c) * a + u32::from(bg) * (255 - a) + 127) / 255) as u8;
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let a = u32::from(a);
        Rgb([
            over(r, background[0], a),
            over(g, background[1], a),
            over(b, background[2], a),
        ])
    })
}

/// The sRGB ↔ linear tables, built once (the linear-to-sRGB table has 65,536 entries and
/// takes a few milliseconds to fill).
fn srgb_mapper() -> &'static PixelComponentMapper {
    static MAPPER: OnceLock<PixelComponentMapper> = OnceLock::new();
    MAPPER.get_or_init(create_srgb_mapper)
}

/// `rgb` reduced to at most [`SAMPLE_SIDE`] a side by averaging areas in linear light, as
/// BlurHash weighs colours. Averaging the sRGB values instead darkens fine contrast: a pattern
/// of thin black and white stripes came out about 50 levels too dark.
fn linear_sample(rgb: &RgbImage) -> Result<Cow<'_, RgbImage>> {
    let (width, height) = rgb.dimensions();
    let (sample_width, sample_height) = sample_size(width, height);
    if (sample_width, sample_height) == (width, height) {
        return Ok(Cow::Borrowed(rgb));
    }
    let internal = |e: &dyn std::fmt::Display| {
        RenderError::Internal(format!("the BlurHash sample failed: {e}"))
    };
    let mapper = srgb_mapper();
    let source =
        ImageRef::new(width, height, rgb.as_raw(), PixelType::U8x3).map_err(|e| internal(&e))?;
    let mut linear = Image::new(width, height, PixelType::U16x3);
    mapper
        .forward_map(&source, &mut linear)
        .map_err(|e| internal(&e))?;
    stop_if_cancelled()?;
    let mut small = Image::new(sample_width, sample_height, PixelType::U16x3);
    // Box: the area average, which is what BlurHash's sums approximate; no ringing to clip.
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
    Resizer::new()
        .resize(&linear, &mut small, &options)
        .map_err(|e| internal(&e))?;
    let mut out = Image::new(sample_width, sample_height, PixelType::U8x3);
    mapper
        .backward_map(&small, &mut out)
        .map_err(|e| internal(&e))?;
    RgbImage::from_raw(sample_width, sample_height, out.into_vec())
        .map(Cow::Owned)
        .ok_or_else(|| internal(&"buffer size mismatch"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::codecs::testdata;
    use image::Rgba;

    const WHITE: [u8; 3] = [255, 255, 255];

    fn blurhash_of(img: &DynamicImage, background: [u8; 3]) -> String {
        let bytes = encode(img, background).unwrap_or_else(|e| panic!("encode failed: {e:?}"));
        String::from_utf8(bytes).unwrap()
    }

    /// The mean colour of the BlurHash decoded at 32×32.
    fn decoded_mean(hash: &str) -> [f64; 3] {
        let pixels = blurhash::decode(hash, 32, 32, 1.0).unwrap();
        let mut sum = [0.0; 3];
        for px in pixels.chunks_exact(4) {
            for (s, &c) in sum.iter_mut().zip(px) {
                *s += f64::from(c);
            }
        }
        sum.map(|s| s / (32.0 * 32.0))
    }

    fn assert_near(actual: [f64; 3], expected: [u8; 3], tolerance: f64) {
        for (a, e) in actual.iter().zip(expected) {
            assert!(
                (a - f64::from(e)).abs() <= tolerance,
                "{actual:?} is not within {tolerance} of {expected:?}"
            );
        }
    }

    #[test]
    fn the_same_pixels_always_give_the_same_string() {
        let img = DynamicImage::ImageRgb8(testdata::gradient(640, 480));

        let first = blurhash_of(&img, WHITE);
        let second = blurhash_of(&img, WHITE);

        assert_eq!(first, second);
    }

    #[test]
    fn the_string_has_four_by_three_components() {
        for (w, h) in [(640, 480), (480, 640), (1, 1), (64, 3)] {
            let img = DynamicImage::ImageRgb8(testdata::gradient(w, h));

            let hash = blurhash_of(&img, WHITE);

            // The first character is the size flag (x − 1) + (y − 1) × 9 = 21, base 83 'L';
            // then the maximum, four characters of DC and two per AC component.
            assert_eq!(hash.len(), 4 + 2 * 12, "{w}x{h}: {hash}");
            assert!(hash.starts_with('L'), "{w}x{h}: {hash}");
        }
    }

    #[test]
    fn a_solid_colour_decodes_to_that_colour() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 200, Rgb([200, 60, 30])));

        let hash = blurhash_of(&img, WHITE);

        assert_near(decoded_mean(&hash), [200, 60, 30], 3.0);
    }

    /// The mean difference, in levels of 255, between two BlurHashes decoded at 32×32.
    fn decoded_difference(a: &str, b: &str) -> f64 {
        let (a, b) = (
            blurhash::decode(a, 32, 32, 1.0).unwrap(),
            blurhash::decode(b, 32, 32, 1.0).unwrap(),
        );
        let total: u32 = a
            .chunks_exact(4)
            .zip(b.chunks_exact(4))
            .flat_map(|(p, q)| p[..3].iter().zip(&q[..3]))
            .map(|(x, y)| u32::from(x.abs_diff(*y)))
            .sum();
        f64::from(total) / (32.0 * 32.0 * 3.0)
    }

    #[test]
    fn the_sample_decodes_like_the_full_image() {
        let (w, h) = (1200, 900);
        // A picture-like image: a gradient sky over a darker band with a bright disc.
        let scene = RgbImage::from_fn(w, h, |x, y| {
            let (dx, dy) = (f64::from(x) - 800.0, f64::from(y) - 300.0);
            if dx * dx + dy * dy < 120.0 * 120.0 {
                Rgb([250, 220, 120])
            } else if y > 600 {
                Rgb([40, 70 + (x / 20) as u8, 30])
            } else {
                Rgb([90, 140, 200 + (y / 12) as u8])
            }
        });
        // Fine stripes, which an average of sRGB values would make far too dark.
        let stripes = RgbImage::from_fn(w, h, |x, y| {
            if (x / 3 + y / 5) % 2 == 0 {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 40])
            }
        });
        for img in [scene, stripes] {
            let full = DynamicImage::ImageRgb8(img).to_rgba8();

            let sampled = blurhash_of(&DynamicImage::ImageRgba8(full.clone()), WHITE);
            let whole = blurhash::encode(4, 3, w, h, full.as_raw()).unwrap();

            // A few levels of 255 on average; averaging sRGB values was 50 off on the stripes.
            let difference = decoded_difference(&sampled, &whole);
            assert!(difference < 6.0, "{sampled} vs {whole}: {difference}");
        }
    }

    #[test]
    fn transparency_is_composited_over_the_background() {
        let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(100, 50, Rgba([0, 0, 0, 0])));
        let half = DynamicImage::ImageRgba8(RgbaImage::from_pixel(100, 50, Rgba([0, 0, 0, 128])));

        assert_near(
            decoded_mean(&blurhash_of(&clear, [0, 0, 255])),
            [0, 0, 255],
            3.0,
        );
        assert_near(
            decoded_mean(&blurhash_of(&clear, WHITE)),
            [255, 255, 255],
            3.0,
        );
        // Half-transparent black over white is mid grey in sRGB values.
        assert_near(
            decoded_mean(&blurhash_of(&half, WHITE)),
            [127, 127, 127],
            4.0,
        );
    }

    #[test]
    fn a_cancelled_render_stops_before_encoding() {
        let cancel = crate::render::cancel::Cancel::new();
        cancel.cancel();
        let img = DynamicImage::ImageRgb8(testdata::gradient(64, 64));

        let result = crate::render::cancel::scope(&cancel, || encode(&img, WHITE));

        assert!(matches!(result, Err(RenderError::Cancelled)), "{result:?}");
    }

    #[test]
    fn samples_keep_the_aspect_ratio_within_the_long_side() {
        assert_eq!(sample_size(4000, 3000), (128, 96));
        assert_eq!(sample_size(3000, 4000), (96, 128));
        assert_eq!(sample_size(10_000, 10), (128, 1));
        assert_eq!(sample_size(50, 20), (50, 20));
    }
}

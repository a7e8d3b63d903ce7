//! Per-pixel colour operations of the render pipeline: `grayscale`, `sepia`, `modulate` and
//! `multiply`. Each maps the red, green and blue samples of one pixel independently of its
//! neighbours and leaves the alpha channel untouched, so they all share [`map_rgb`]. The sRGB
//! luminance used by `grayscale` (and by `sharpen` in the filter module) lives here too.
//!
//! Luminance follows libvips' sRGB → B_W conversion, which rokka's renderer is built on: decode
//! sRGB to linear light, weight with the Rec.709 primaries (0.2126, 0.7152, 0.0722), encode the
//! result with the sRGB transfer curve. Pure red therefore becomes grey 127, not the 76 of the
//! Rec.601 formula applied to gamma-encoded values.

use std::sync::OnceLock;

use image::{DynamicImage, RgbImage, RgbaImage};

/// Rec.709 / sRGB luminance weights, applied to linear-light samples.
const LUMA_WEIGHTS: [f32; 3] = [0.2126, 0.7152, 0.0722];

/// Resolution of the linear → sRGB table. 65 536 steps keep the dark end (where the sRGB curve
/// is steepest, 12.92 × linear) within 0.05 of an 8-bit level, so rounding is decided by the
/// curve and not by the table.
const ENCODE_STEPS: usize = 65_535;

/// The classic sepia matrix (rows give output red, green and blue), as used by most image
/// tools; applied to gamma-encoded samples. White becomes (255, 255, 239), black stays black.
const SEPIA: [[f32; 3]; 3] = [
    [0.393, 0.769, 0.189],
    [0.349, 0.686, 0.168],
    [0.272, 0.534, 0.131],
];

/// Converts every pixel to its sRGB luminance, keeping the RGB(A) layout with R = G = B and the
/// alpha channel as it was. See the module documentation for the luminance formula.
#[must_use]
pub fn grayscale(img: &DynamicImage) -> DynamicImage {
    map_rgb(img, |rgb| {
        let y = luminance(rgb);
        [y, y, y]
    })
}

/// Sepia toning with the classic matrix (see [`SEPIA`]); alpha is kept.
#[must_use]
pub fn sepia(img: &DynamicImage) -> DynamicImage {
    map_rgb(img, |rgb| {
        let input = rgb.map(f32::from);
        SEPIA.map(|row| {
            let v: f32 = row.iter().zip(input.iter()).map(|(w, c)| w * c).sum();
            to_u8(v)
        })
    })
}

/// Changes brightness, saturation and hue, in that documented sense of rokka:
///
/// - `hue` (degrees) rotates the hue on the HSV colour wheel, so 120 turns pure red into pure
///   green and 180 gives the opposite colour; value and HSV saturation are unchanged.
/// - `saturation` (percent, 100 = unchanged) scales each channel's distance from the pixel's
///   luminance (the [`grayscale`] value): 0 gives exactly the grayscale image, 200 doubles the
///   colourfulness. Scaling all distances by one factor keeps the hue.
/// - `brightness` (percent, 100 = unchanged) multiplies the channels linearly: 0 is black, 200
///   doubles every sample (clamped at 255).
///
/// The steps run in that order on unclamped values and the result is clamped once. Negative or
/// non-finite percentages count as 0 and 100 respectively; alpha is kept.
#[must_use]
pub fn modulate(img: &DynamicImage, brightness: f32, saturation: f32, hue: f32) -> DynamicImage {
    let brightness = percent_factor(brightness);
    let saturation = percent_factor(saturation);
    // Hue is measured in sixths of the wheel to match the HSV sector arithmetic below.
    let hue_sectors = if hue.is_finite() {
        (hue / 60.0).rem_euclid(6.0)
    } else {
        0.0
    };
    if brightness == 1.0 && saturation == 1.0 && hue_sectors == 0.0 {
        return img.clone();
    }
    map_rgb(img, |rgb| {
        let mut c = rgb.map(|v| f32::from(v) / 255.0);
        if hue_sectors != 0.0 {
            c = rotate_hue(c, hue_sectors);
        }
        if saturation != 1.0 {
            let gray = luminance_of_unit(c);
            c = c.map(|v| gray + saturation * (v - gray));
        }
        c.map(|v| to_u8(v * brightness * 255.0))
    })
}

/// Multiplies the colour channels: by `factor` (0..=1) or, when `color` is given, per channel
/// by `color / 255` (the colour wins over the factor, as in rokka's `factor_color`). Results are
/// rounded to the nearest level; alpha is kept. A non-finite factor leaves the image unchanged.
#[must_use]
pub fn multiply(img: &DynamicImage, factor: f32, color: Option<[u8; 3]>) -> DynamicImage {
    let factors = match color {
        Some(rgb) => rgb.map(|v| f32::from(v) / 255.0),
        None if factor.is_finite() => [factor.clamp(0.0, 1.0); 3],
        None => [1.0; 3],
    };
    // One 256-entry table per channel: the work per pixel becomes three lookups.
    let tables = factors.map(|f| {
        let mut table = [0u8; 256];
        for (level, out) in table.iter_mut().enumerate() {
            *out = to_u8(level as f32 * f);
        }
        table
    });
    map_rgb(img, |rgb| {
        let mut out = [0u8; 3];
        for ((o, v), table) in out.iter_mut().zip(rgb).zip(tables.iter()) {
            *o = table.get(usize::from(v)).copied().unwrap_or(v);
        }
        out
    })
}

/// The sRGB-encoded luminance of one pixel (see the module documentation), 0..=255.
pub(crate) fn luminance(rgb: [u8; 3]) -> u8 {
    let linear = decode_table();
    let y: f32 = rgb
        .iter()
        .zip(LUMA_WEIGHTS.iter())
        .map(|(&c, w)| w * linear.get(usize::from(c)).copied().unwrap_or(0.0))
        .sum();
    encode_linear(y)
}

/// Applies `f` to the colour channels of every pixel, keeping the image's RGB or RGBA layout and
/// its alpha channel. Other layouts (never produced by the decoder, but possible in principle)
/// are converted to RGBA or RGB first, depending on whether they carry alpha.
pub(crate) fn map_rgb(img: &DynamicImage, f: impl Fn([u8; 3]) -> [u8; 3]) -> DynamicImage {
    match img {
        DynamicImage::ImageRgb8(buf) => {
            let mut out: RgbImage = buf.clone();
            for px in out.chunks_exact_mut(3) {
                if let [r, g, b] = px {
                    [*r, *g, *b] = f([*r, *g, *b]);
                }
            }
            DynamicImage::ImageRgb8(out)
        }
        DynamicImage::ImageRgba8(buf) => {
            let mut out: RgbaImage = buf.clone();
            for px in out.chunks_exact_mut(4) {
                if let [r, g, b, _] = px {
                    [*r, *g, *b] = f([*r, *g, *b]);
                }
            }
            DynamicImage::ImageRgba8(out)
        }
        other if other.color().has_alpha() => {
            map_rgb(&DynamicImage::ImageRgba8(other.to_rgba8()), f)
        }
        other => map_rgb(&DynamicImage::ImageRgb8(other.to_rgb8()), f),
    }
}

/// Rounds and clamps a sample on the 0..=255 scale.
pub(crate) fn to_u8(v: f32) -> u8 {
    // `as` truncates towards zero, saturates at 0 and 255 and maps NaN to 0, so adding one half
    // rounds to nearest for every input. Unlike `f32::round`, which is a library call on the
    // baseline x86-64 target, this compiles to a single conversion instruction.
    (v + 0.5) as u8
}

/// Turns a percentage option into a factor: 100 → 1.0, negatives → 0, non-finite → 1.0.
fn percent_factor(percent: f32) -> f32 {
    if percent.is_finite() {
        percent.max(0.0) / 100.0
    } else {
        1.0
    }
}

/// sRGB 8-bit level → linear light (0..=1), computed once per process.
fn decode_table() -> &'static [f32; 256] {
    static TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [0.0f32; 256];
        for (level, out) in table.iter_mut().enumerate() {
            let s = level as f64 / 255.0;
            let linear = if s <= 0.04045 {
                s / 12.92
            } else {
                ((s + 0.055) / 1.055).powf(2.4)
            };
            *out = linear as f32;
        }
        table
    })
}

/// Linear light (0..=1) → sRGB 8-bit level, by table lookup.
fn encode_linear(linear: f32) -> u8 {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=ENCODE_STEPS)
            .map(|i| {
                let l = i as f64 / ENCODE_STEPS as f64;
                let s = if l <= 0.003_130_8 {
                    12.92 * l
                } else {
                    1.055 * l.powf(1.0 / 2.4) - 0.055
                };
                (s * 255.0).round().clamp(0.0, 255.0) as u8
            })
            .collect()
    });
    let index = (linear.clamp(0.0, 1.0) * ENCODE_STEPS as f32 + 0.5) as usize;
    table.get(index).copied().unwrap_or(u8::MAX)
}

/// [`luminance`] for a pixel given on the 0..=1 scale (possibly already modified), as 0..=1.
fn luminance_of_unit(c: [f32; 3]) -> f32 {
    f32::from(luminance(c.map(|v| to_u8(v * 255.0)))) / 255.0
}

/// Rotates the HSV hue of a 0..=1 pixel by `sectors` (0..6) sixths of the colour wheel.
/// Written without `rem_euclid`/`floor`, which are library calls in this hot loop.
fn rotate_hue(c: [f32; 3], sectors: f32) -> [f32; 3] {
    let [r, g, b] = c;
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let chroma = max - min;
    if chroma <= 0.0 {
        // Greys have no hue to rotate.
        return c;
    }
    // Hue in sixths of the wheel, 0..6 (or slightly outside before wrapping).
    let mut hue = if max == r {
        (g - b) / chroma
    } else if max == g {
        (b - r) / chroma + 2.0
    } else {
        (r - g) / chroma + 4.0
    } + sectors;
    while hue < 0.0 {
        hue += 6.0;
    }
    while hue >= 6.0 {
        hue -= 6.0;
    }
    // Rebuild from value (max), chroma and the position inside the sector.
    let sector = hue as u8;
    let within = hue - f32::from(sector);
    let rising = chroma * within;
    let falling = chroma * (1.0 - within);
    let (r1, g1, b1) = match sector {
        0 => (chroma, rising, 0.0),
        1 => (falling, chroma, 0.0),
        2 => (0.0, chroma, rising),
        3 => (0.0, falling, chroma),
        4 => (rising, 0.0, chroma),
        _ => (chroma, 0.0, falling),
    };
    [r1 + min, g1 + min, b1 + min]
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, Rgba};

    fn rgb(pixels: &[[u8; 3]]) -> DynamicImage {
        let mut img = RgbImage::new(pixels.len() as u32, 1);
        for (x, p) in pixels.iter().enumerate() {
            img.put_pixel(x as u32, 0, Rgb(*p));
        }
        DynamicImage::ImageRgb8(img)
    }

    fn rgba(pixels: &[[u8; 4]]) -> DynamicImage {
        let mut img = RgbaImage::new(pixels.len() as u32, 1);
        for (x, p) in pixels.iter().enumerate() {
            img.put_pixel(x as u32, 0, Rgba(*p));
        }
        DynamicImage::ImageRgba8(img)
    }

    fn rgb_at(img: &DynamicImage, x: u32) -> [u8; 3] {
        img.to_rgb8().get_pixel(x, 0).0
    }

    #[test]
    fn grayscale_of_pure_red_is_the_srgb_luminance_127() {
        let img = rgb(&[[255, 0, 0]]);

        let out = grayscale(&img);

        assert_eq!(rgb_at(&out, 0), [127, 127, 127]);
    }

    #[test]
    fn grayscale_of_green_and_blue_follows_the_rec709_weights() {
        let img = rgb(&[[0, 255, 0], [0, 0, 255]]);

        let out = grayscale(&img);

        // 0.7152 and 0.0722 in linear light, sRGB-encoded.
        assert_eq!(rgb_at(&out, 0), [220, 220, 220]);
        assert_eq!(rgb_at(&out, 1), [76, 76, 76]);
    }

    #[test]
    fn grayscale_keeps_greys_and_alpha() {
        let img = rgba(&[[0, 0, 0, 10], [128, 128, 128, 200], [255, 255, 255, 255]]);

        let out = grayscale(&img);

        let DynamicImage::ImageRgba8(buf) = out else {
            panic!("expected RGBA output");
        };
        assert_eq!(buf.get_pixel(0, 0).0, [0, 0, 0, 10]);
        assert_eq!(buf.get_pixel(1, 0).0, [128, 128, 128, 200]);
        assert_eq!(buf.get_pixel(2, 0).0, [255, 255, 255, 255]);
    }

    #[test]
    fn sepia_turns_white_cream_and_keeps_black() {
        let img = rgb(&[[255, 255, 255], [0, 0, 0]]);

        let out = sepia(&img);

        assert_eq!(rgb_at(&out, 0), [255, 255, 239]);
        assert_eq!(rgb_at(&out, 1), [0, 0, 0]);
        assert!(matches!(out, DynamicImage::ImageRgb8(_)));
    }

    #[test]
    fn sepia_of_mid_grey_is_warm() {
        let img = rgb(&[[100, 100, 100]]);

        let [r, g, b] = rgb_at(&sepia(&img), 0);

        assert_eq!([r, g, b], [135, 120, 94]);
    }

    #[test]
    fn modulate_brightness_200_doubles_and_clamps() {
        let img = rgb(&[[60, 100, 200]]);

        let out = modulate(&img, 200.0, 100.0, 0.0);

        assert_eq!(rgb_at(&out, 0), [120, 200, 255]);
    }

    #[test]
    fn modulate_brightness_0_is_black() {
        let img = rgba(&[[60, 100, 200, 77]]);

        let out = modulate(&img, 0.0, 100.0, 0.0);

        assert_eq!(out.to_rgba8().get_pixel(0, 0).0, [0, 0, 0, 77]);
    }

    #[test]
    fn modulate_saturation_0_equals_grayscale() {
        let img = rgb(&[[255, 0, 0], [12, 200, 99], [250, 250, 10]]);

        let out = modulate(&img, 100.0, 0.0, 0.0);

        assert_eq!(out, grayscale(&img));
    }

    #[test]
    fn modulate_saturation_200_pushes_channels_away_from_grey() {
        let img = rgb(&[[150, 100, 100]]);

        let [r, g, b] = rgb_at(&modulate(&img, 100.0, 200.0, 0.0), 0);

        assert!(r > 150 && g < 100 && g == b, "{r} {g} {b}");
    }

    #[test]
    fn modulate_hue_120_maps_red_to_green_and_green_to_blue() {
        let img = rgb(&[[255, 0, 0], [0, 255, 0], [128, 128, 128]]);

        let out = modulate(&img, 100.0, 100.0, 120.0);

        assert_eq!(rgb_at(&out, 0), [0, 255, 0]);
        assert_eq!(rgb_at(&out, 1), [0, 0, 255]);
        assert_eq!(rgb_at(&out, 2), [128, 128, 128]);
    }

    #[test]
    fn modulate_hue_180_gives_the_complementary_colour() {
        let img = rgb(&[[255, 128, 0]]);

        let out = modulate(&img, 100.0, 100.0, 180.0);

        assert_eq!(rgb_at(&out, 0), [0, 127, 255]);
    }

    #[test]
    fn modulate_hue_360_and_defaults_leave_the_image_unchanged() {
        let img = rgb(&[[10, 20, 30], [200, 100, 50]]);

        assert_eq!(modulate(&img, 100.0, 100.0, 360.0), img);
        assert_eq!(modulate(&img, 100.0, 100.0, 0.0), img);
    }

    #[test]
    fn multiply_by_factor_scales_colour_and_keeps_alpha() {
        let img = rgba(&[[200, 100, 0, 50]]);

        let out = multiply(&img, 0.5, None);

        assert_eq!(out.to_rgba8().get_pixel(0, 0).0, [100, 50, 0, 50]);
    }

    #[test]
    fn multiply_with_a_colour_multiplies_per_channel_and_wins_over_the_factor() {
        let img = rgb(&[[255, 255, 255], [200, 100, 50]]);

        let out = multiply(&img, 0.0, Some([255, 128, 0]));

        assert_eq!(rgb_at(&out, 0), [255, 128, 0]);
        assert_eq!(rgb_at(&out, 1), [200, 50, 0]);
    }

    #[test]
    fn multiply_clamps_the_factor_to_the_unit_range() {
        let img = rgb(&[[100, 100, 100]]);

        assert_eq!(rgb_at(&multiply(&img, 3.0, None), 0), [100, 100, 100]);
        assert_eq!(rgb_at(&multiply(&img, -1.0, None), 0), [0, 0, 0]);
    }

    #[test]
    fn colour_operations_accept_other_layouts_and_empty_images() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(2, 2, image::Luma([9])));
        let empty = DynamicImage::ImageRgb8(RgbImage::new(0, 0));

        assert!(matches!(sepia(&gray), DynamicImage::ImageRgb8(_)));
        assert_eq!(grayscale(&empty), empty);
    }
}

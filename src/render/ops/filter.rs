//! Neighbourhood filters of the render pipeline: gaussian `blur` and libvips-style `sharpen`.
//! Both rest on one separable convolution engine over fixed-point planes, defined here.
//!
//! Kernel: rokka renders with libvips, whose `gaussblur` and `sharpen` both cut the gaussian
//! mask where it falls below 20 % of its peak (radius ⌊σ·√(2 ln 5)⌋ ≈ 1.79 σ, a 1×1 mask and
//! so no blur at all below σ ≈ 0.56). We build the same mask (with float weights where libvips
//! rounds to integers), so a given `sigma` blurs as much as it does on rokka.
//!
//! Speed: the convolution is separable, a horizontal pass over rows and a vertical pass over
//! strips of columns gathered into contiguous lines, so the work is O(pixels × kernel) and
//! memory access stays sequential. Beyond [`MAX_EXACT_RADIUS`] the exact mask is replaced by
//! three box filters whose total variance equals the mask's (Kovesi, "Fast almost-gaussian
//! filtering", 2010); running sums make that O(pixels) whatever the sigma. `image`'s own
//! `fast_blur` implements the same idea, but it rounds to 8 bits between passes (losing
//! precision exactly where premultiplied alpha needs it), assumes a full rather than libvips'
//! truncated gaussian, and can panic on extreme radii, hence our own engine.
//!
//! Alpha: RGBA images are blurred premultiplied and un-premultiplied afterwards, so transparent
//! pixels (whatever colour they hide) do not bleed dark fringes into opaque ones. Planes hold
//! samples as `u16` with 8 fractional bits (value × 256), half the memory of `f32` planes at a
//! precision far below one 8-bit level; edges are extended by repeating the border pixel, as
//! libvips does.

use image::{DynamicImage, RgbImage, RgbaImage};

use crate::render::ops::color::{luminance, to_u8};

/// libvips truncates gaussian masks below this fraction of the peak.
const MIN_AMPLITUDE: f64 = 0.2;
/// Largest radius convolved with the exact mask; wider masks use three box passes, which are
/// cheaper from about this size on and visually indistinguishable at such sigmas.
const MAX_EXACT_RADIUS: usize = 10;
/// libvips refuses masks wider than this radius; we clamp instead of failing.
const MAX_RADIUS: usize = 5000;
/// Fixed-point scale of plane samples: one 8-bit level is 256 units.
const FIXED_ONE: f32 = 256.0;
/// Columns filtered together by the vertical pass: enough to read rows in long runs, few
/// enough that the gathered lines stay in cache.
const STRIP: usize = 32;

/// Parameters of [`sharpen`], with the meanings of libvips' `vips_sharpen` (all lightness
/// amounts are in L* units, 0..=100):
///
/// - `sigma`: sigma of the gaussian whose difference to the image is the high-pass signal;
/// - `x1`: threshold between "flat" (|difference| < x1) and "jaggy" areas;
/// - `m1`, `m2`: slope applied to the difference in flat and jaggy areas;
/// - `y2`, `y3`: the most a pixel may be brightened and darkened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharpenParams {
    pub sigma: f32,
    pub x1: f32,
    pub y2: f32,
    pub y3: f32,
    pub m1: f32,
    pub m2: f32,
}

impl Default for SharpenParams {
    /// rokka's defaults for its `sharpen` operation.
    fn default() -> Self {
        Self {
            sigma: 0.7,
            x1: 2.0,
            y2: 10.0,
            y3: 20.0,
            m1: 0.4,
            m2: 0.8,
        }
    }
}

/// Gaussian blur with libvips' mask (see the module documentation). `sigma <= 0`, a sigma too
/// small to give a mask wider than one pixel, or a non-finite sigma return a copy. The layout
/// (RGB or RGBA) is kept.
#[must_use]
pub fn blur(img: &DynamicImage, sigma: f32) -> DynamicImage {
    let kernel = gaussian_kernel(sigma);
    if matches!(kernel, Kernel::Identity) || img.width() == 0 || img.height() == 0 {
        return img.clone();
    }
    match img {
        DynamicImage::ImageRgb8(buf) => DynamicImage::ImageRgb8(blur_rgb(buf, &kernel)),
        DynamicImage::ImageRgba8(buf) => DynamicImage::ImageRgba8(blur_rgba(buf, &kernel)),
        other if other.color().has_alpha() => {
            DynamicImage::ImageRgba8(blur_rgba(&other.to_rgba8(), &kernel))
        }
        other => DynamicImage::ImageRgb8(blur_rgb(&other.to_rgb8(), &kernel)),
    }
}

/// Selective unsharp masking after libvips' `vips_sharpen`.
///
/// libvips converts to LAB and sharpens L* only: it blurs L*, passes the difference between L*
/// and its blur through a piecewise-linear curve (slope `m1` within ±`x1`, slope `m2` beyond,
/// clamped to −`y3`..=`y2`) and adds the result back. We apply the same curve to the pixel's
/// sRGB-encoded luminance (the [`grayscale`](crate::render::ops::color::grayscale) value, which
/// tracks L* within a few percent, with 255 ↔ L* 100) and add the correction equally to red,
/// green and blue, which keeps the chroma as adding to L* does. That avoids two LAB conversions
/// per pixel at the cost of small deviations on strongly saturated edges.
///
/// Alpha is not sharpened; the luminance is blurred premultiplied so transparent neighbours do
/// not count, and fully transparent pixels are left as they are. Non-finite parameters return
/// a copy; negative ones count as 0.
#[must_use]
pub fn sharpen(img: &DynamicImage, p: &SharpenParams) -> DynamicImage {
    let Some(curve) = SharpenCurve::new(p) else {
        return img.clone();
    };
    let kernel = gaussian_kernel(p.sigma);
    // Without a mask wider than one pixel the difference is zero everywhere, and so is the
    // correction (the curve passes through the origin).
    if matches!(kernel, Kernel::Identity) || img.width() == 0 || img.height() == 0 {
        return img.clone();
    }
    match img {
        DynamicImage::ImageRgb8(buf) => DynamicImage::ImageRgb8(sharpen_rgb(buf, &kernel, &curve)),
        DynamicImage::ImageRgba8(buf) => {
            DynamicImage::ImageRgba8(sharpen_rgba(buf, &kernel, &curve))
        }
        other if other.color().has_alpha() => {
            DynamicImage::ImageRgba8(sharpen_rgba(&other.to_rgba8(), &kernel, &curve))
        }
        other => DynamicImage::ImageRgb8(sharpen_rgb(&other.to_rgb8(), &kernel, &curve)),
    }
}

/// A one-dimensional smoothing kernel, applied along rows and then along columns.
#[derive(Debug, Clone, PartialEq)]
enum Kernel {
    /// A 1×1 mask: filtering changes nothing.
    Identity,
    /// Normalised weights of an odd-length mask, centre in the middle.
    Exact(Vec<f32>),
    /// Half-widths of three successive box filters approximating a wide mask.
    Boxes([usize; 3]),
}

/// Builds libvips' truncated gaussian for `sigma` (see the module documentation).
fn gaussian_kernel(sigma: f32) -> Kernel {
    if !sigma.is_finite() || sigma <= 0.0 {
        return Kernel::Identity;
    }
    let sig2 = 2.0 * f64::from(sigma) * f64::from(sigma);
    // exp(-x²/sig2) >= MIN_AMPLITUDE  ⇔  x <= sqrt(sig2 · ln(1 / MIN_AMPLITUDE)).
    let reach = (sig2 * (1.0 / MIN_AMPLITUDE).ln()).sqrt();
    // `as` saturates for huge values; the clamp bounds the mask we allocate.
    let radius = (reach.floor() as usize).min(MAX_RADIUS);
    if radius == 0 {
        return Kernel::Identity;
    }
    let raw: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let x = i as f64 - radius as f64;
            (-(x * x) / sig2).exp()
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    if radius <= MAX_EXACT_RADIUS {
        return Kernel::Exact(raw.iter().map(|w| (w / sum) as f32).collect());
    }
    let variance: f64 = raw
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let x = i as f64 - radius as f64;
            w * x * x
        })
        .sum::<f64>()
        / sum;
    Kernel::Boxes(box_half_widths(variance))
}

/// Half-widths of three box filters whose combined variance is as close as odd widths allow to
/// `variance` (a box of width w has variance (w² − 1) / 12; variances of passes add up).
fn box_half_widths(variance: f64) -> [usize; 3] {
    const PASSES: f64 = 3.0;
    let ideal = (12.0 * variance / PASSES + 1.0).sqrt();
    let mut lower = ideal.floor().max(1.0);
    if lower % 2.0 == 0.0 {
        lower -= 1.0;
    }
    let upper = lower + 2.0;
    // How many passes use the lower width so that the variances sum up best.
    let lower_passes =
        ((12.0 * variance - PASSES * lower * lower - 4.0 * PASSES * lower - 3.0 * PASSES)
            / (-4.0 * lower - 4.0))
            .round()
            .clamp(0.0, PASSES);
    let half = |w: f64| ((w - 1.0) / 2.0) as usize;
    let mut widths = [half(upper); 3];
    for (pass, w) in widths.iter_mut().enumerate() {
        if (pass as f64) < lower_passes {
            *w = half(lower);
        }
    }
    widths
}

/// Reusable line buffers of the convolution, so a pass allocates once and not per line.
struct LineScratch<const N: usize> {
    padded: Vec<[f32; N]>,
    ping: Vec<[f32; N]>,
    pong: Vec<[f32; N]>,
}

impl<const N: usize> LineScratch<N> {
    fn new() -> Self {
        Self {
            padded: Vec::new(),
            ping: Vec::new(),
            pong: Vec::new(),
        }
    }
}

/// Blurs a `width` × `height` plane of `N`-channel fixed-point pixels in place.
fn blur_plane<const N: usize>(data: &mut [[u16; N]], width: usize, height: usize, kernel: &Kernel) {
    if width == 0 || height == 0 || data.len() != width * height {
        return;
    }
    let mut scratch = LineScratch::<N>::new();
    let mut line: Vec<[f32; N]> = Vec::with_capacity(width.max(height));
    let mut filtered: Vec<[f32; N]> = Vec::with_capacity(width.max(height));

    for (y, row) in data.chunks_exact_mut(width).enumerate() {
        if y % 64 == 0 && crate::render::cancel::stop_requested() {
            return;
        }
        line.clear();
        line.extend(row.iter().map(|px| px.map(f32::from)));
        filter_line(&line, &mut filtered, kernel, &mut scratch);
        for (px, v) in row.iter_mut().zip(filtered.iter()) {
            *px = v.map(to_fixed);
        }
    }

    // Vertical pass: gather a strip of columns into contiguous lines, filter them, scatter back.
    let mut columns: Vec<Vec<[f32; N]>> = (0..STRIP.min(width))
        .map(|_| Vec::with_capacity(height))
        .collect();
    let mut results: Vec<Vec<[f32; N]>> = (0..STRIP.min(width))
        .map(|_| Vec::with_capacity(height))
        .collect();
    for x0 in (0..width).step_by(STRIP) {
        if crate::render::cancel::stop_requested() {
            return;
        }
        let strip_width = STRIP.min(width - x0);
        for column in columns.iter_mut() {
            column.clear();
        }
        for row in data.chunks_exact(width) {
            let segment = row.iter().skip(x0).take(strip_width);
            for (column, px) in columns.iter_mut().zip(segment) {
                column.push(px.map(f32::from));
            }
        }
        for (column, result) in columns.iter().zip(results.iter_mut()).take(strip_width) {
            filter_line(column, result, kernel, &mut scratch);
        }
        let mut readers: Vec<std::slice::Iter<'_, [f32; N]>> =
            results.iter().take(strip_width).map(|r| r.iter()).collect();
        for row in data.chunks_exact_mut(width) {
            let segment = row.iter_mut().skip(x0).take(strip_width);
            for (reader, px) in readers.iter_mut().zip(segment) {
                if let Some(v) = reader.next() {
                    *px = v.map(to_fixed);
                }
            }
        }
    }
}

/// Convolves one line of pixels with `kernel`, repeating the end pixels beyond the edges.
/// `dst` receives exactly `src.len()` pixels.
fn filter_line<const N: usize>(
    src: &[[f32; N]],
    dst: &mut Vec<[f32; N]>,
    kernel: &Kernel,
    scratch: &mut LineScratch<N>,
) {
    dst.clear();
    match kernel {
        Kernel::Identity => dst.extend_from_slice(src),
        Kernel::Exact(weights) => {
            pad_edges(src, weights.len() / 2, &mut scratch.padded);
            dst.extend(scratch.padded.windows(weights.len()).map(|window| {
                let mut acc = [0.0f32; N];
                for (w, px) in weights.iter().zip(window) {
                    for (a, v) in acc.iter_mut().zip(px) {
                        *a += w * v;
                    }
                }
                acc
            }));
        }
        Kernel::Boxes(halves) => {
            scratch.ping.clear();
            scratch.ping.extend_from_slice(src);
            for &half in halves {
                pad_edges(&scratch.ping, half, &mut scratch.padded);
                box_filter(&scratch.padded, 2 * half + 1, &mut scratch.pong);
                std::mem::swap(&mut scratch.ping, &mut scratch.pong);
            }
            dst.extend_from_slice(&scratch.ping);
        }
    }
}

/// Running-mean filter of width `box_width` over an already padded line: `dst` gets
/// `padded.len() − box_width + 1` pixels.
fn box_filter<const N: usize>(padded: &[[f32; N]], box_width: usize, dst: &mut Vec<[f32; N]>) {
    dst.clear();
    if box_width == 0 || padded.len() < box_width {
        return;
    }
    let scale = 1.0 / box_width as f64;
    // f64 sums: a long line would otherwise accumulate visible drift.
    let mut sum = [0.0f64; N];
    for px in padded.iter().take(box_width) {
        for (s, v) in sum.iter_mut().zip(px) {
            *s += f64::from(*v);
        }
    }
    dst.push(sum.map(|s| (s * scale) as f32));
    for (leaving, entering) in padded.iter().zip(padded.iter().skip(box_width)) {
        for ((s, out), inc) in sum.iter_mut().zip(leaving).zip(entering) {
            *s += f64::from(*inc) - f64::from(*out);
        }
        dst.push(sum.map(|s| (s * scale) as f32));
    }
}

/// Copies `src` into `padded` with `radius` copies of the first and last pixel on either side.
fn pad_edges<const N: usize>(src: &[[f32; N]], radius: usize, padded: &mut Vec<[f32; N]>) {
    padded.clear();
    let (Some(first), Some(last)) = (src.first(), src.last()) else {
        return;
    };
    padded.extend(std::iter::repeat_n(*first, radius));
    padded.extend_from_slice(src);
    padded.extend(std::iter::repeat_n(*last, radius));
}

/// Rounds a plane sample back into its fixed-point cell.
fn to_fixed(v: f32) -> u16 {
    // `as` truncates, saturates and maps NaN to 0: adding one half rounds to nearest without
    // the library call `f32::round` costs on the baseline x86-64 target.
    (v + 0.5) as u16
}

/// A fixed-point sample (8 fractional bits) rounded to an 8-bit level.
fn fixed_to_u8(v: u16) -> u8 {
    ((u32::from(v) + 128) >> 8).min(255) as u8
}

/// An 8-bit level multiplied by `alpha / 255`, in fixed point.
fn premultiply(level: u8, alpha: u8) -> u16 {
    ((u32::from(level) * u32::from(alpha) * 256 + 127) / 255) as u16
}

fn blur_rgb(buf: &RgbImage, kernel: &Kernel) -> RgbImage {
    let (w, h) = buf.dimensions();
    let mut plane: Vec<[u16; 3]> = buf
        .pixels()
        .map(|p| p.0.map(|c| u16::from(c) << 8))
        .collect();
    blur_plane(&mut plane, w as usize, h as usize, kernel);
    let mut out = RgbImage::new(w, h);
    for (px, v) in out.pixels_mut().zip(&plane) {
        px.0 = v.map(fixed_to_u8);
    }
    out
}

fn blur_rgba(buf: &RgbaImage, kernel: &Kernel) -> RgbaImage {
    let (w, h) = buf.dimensions();
    let mut plane: Vec<[u16; 4]> = buf
        .pixels()
        .map(|p| {
            let [r, g, b, a] = p.0;
            [
                premultiply(r, a),
                premultiply(g, a),
                premultiply(b, a),
                u16::from(a) << 8,
            ]
        })
        .collect();
    blur_plane(&mut plane, w as usize, h as usize, kernel);
    // Pixels left fully transparent stay (0, 0, 0, 0) from the zeroed buffer.
    let mut out = RgbaImage::new(w, h);
    for (px, &[r, g, b, a]) in out.pixels_mut().zip(&plane) {
        let alpha = fixed_to_u8(a);
        if alpha == 0 {
            continue;
        }
        // Un-premultiply with the unrounded alpha to keep the colour exact.
        let scale = 255.0 / f32::from(a);
        let unpremultiply = |c: u16| to_u8(f32::from(c) * scale);
        px.0 = [unpremultiply(r), unpremultiply(g), unpremultiply(b), alpha];
    }
    out
}

/// libvips' sharpening curve: maps the difference between a pixel's lightness and its blur to
/// the correction added to the pixel, both in L* units.
#[derive(Debug, Clone, Copy)]
struct SharpenCurve {
    x1: f32,
    y2: f32,
    y3: f32,
    m1: f32,
    m2: f32,
}

impl SharpenCurve {
    fn new(p: &SharpenParams) -> Option<Self> {
        let all = [p.sigma, p.x1, p.y2, p.y3, p.m1, p.m2];
        if all.iter().any(|v| !v.is_finite()) {
            return None;
        }
        Some(Self {
            x1: p.x1.max(0.0),
            y2: p.y2.max(0.0),
            y3: p.y3.max(0.0),
            m1: p.m1.max(0.0),
            m2: p.m2.max(0.0),
        })
    }

    fn apply(&self, diff: f32) -> f32 {
        let y = if diff < -self.x1 {
            (diff + self.x1) * self.m2 - self.x1 * self.m1
        } else if diff < self.x1 {
            diff * self.m1
        } else {
            (diff - self.x1) * self.m2 + self.x1 * self.m1
        };
        // max/min rather than clamp: clamp panics if the bounds were ever inverted.
        y.max(-self.y3).min(self.y2)
    }

    /// The change to apply to 8-bit samples, given a pixel's luminance and its blur, both in
    /// fixed point.
    fn correction(&self, luma: f32, blurred: f32) -> f32 {
        // Fixed point → L*-like 0..=100 scale, through the curve, back to 8-bit levels.
        const FIXED_TO_L: f32 = 100.0 / (255.0 * FIXED_ONE);
        self.apply((luma - blurred) * FIXED_TO_L) * 2.55
    }
}

/// Adds `delta` to an 8-bit sample, rounding and clamping.
fn shift(level: u8, delta: f32) -> u8 {
    to_u8(f32::from(level) + delta)
}

fn sharpen_rgb(buf: &RgbImage, kernel: &Kernel, curve: &SharpenCurve) -> RgbImage {
    let (w, h) = buf.dimensions();
    let luma: Vec<[u16; 1]> = buf
        .pixels()
        .map(|p| [u16::from(luminance(p.0)) << 8])
        .collect();
    let mut blurred = luma.clone();
    blur_plane(&mut blurred, w as usize, h as usize, kernel);
    let mut out = buf.clone();
    for ((px, [l]), [lb]) in out.pixels_mut().zip(&luma).zip(&blurred) {
        let delta = curve.correction(f32::from(*l), f32::from(*lb));
        px.0 = px.0.map(|c| shift(c, delta));
    }
    out
}

fn sharpen_rgba(buf: &RgbaImage, kernel: &Kernel, curve: &SharpenCurve) -> RgbaImage {
    let (w, h) = buf.dimensions();
    let luma: Vec<u8> = buf
        .pixels()
        .map(|p| {
            let [r, g, b, _] = p.0;
            luminance([r, g, b])
        })
        .collect();
    let mut plane: Vec<[u16; 2]> = buf
        .pixels()
        .zip(&luma)
        .map(|(p, &l)| {
            let a = p.0[3];
            [premultiply(l, a), u16::from(a) << 8]
        })
        .collect();
    blur_plane(&mut plane, w as usize, h as usize, kernel);
    let mut out = buf.clone();
    for ((px, &l), &[pl, pa]) in out.pixels_mut().zip(&luma).zip(&plane) {
        let [r, g, b, a] = px.0;
        if a == 0 || pa == 0 {
            continue;
        }
        // Un-premultiplied blurred luminance, in fixed point.
        let blurred = f32::from(pl) * 255.0 / f32::from(pa) * FIXED_ONE;
        let delta = curve.correction(f32::from(l) * FIXED_ONE, blurred);
        px.0 = [shift(r, delta), shift(g, delta), shift(b, delta), a];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, Rgba};

    fn single_white_pixel(size: u32) -> DynamicImage {
        let mut img = RgbImage::new(size, size);
        img.put_pixel(size / 2, size / 2, Rgb([255, 255, 255]));
        DynamicImage::ImageRgb8(img)
    }

    fn channel_sum(img: &DynamicImage) -> u64 {
        img.to_rgb8().pixels().map(|p| u64::from(p.0[0])).sum()
    }

    #[test]
    fn kernel_matches_libvips_radius_and_truncation() {
        // libvips: radius = last x with exp(-x²/2σ²) >= 0.2.
        assert_eq!(gaussian_kernel(0.5), Kernel::Identity);
        let Kernel::Exact(w) = gaussian_kernel(1.0) else {
            panic!("sigma 1 should use the exact mask");
        };
        assert_eq!(w.len(), 3);
        let Kernel::Exact(w) = gaussian_kernel(4.0) else {
            panic!("sigma 4 should use the exact mask");
        };
        assert_eq!(w.len(), 15);
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(matches!(gaussian_kernel(50.0), Kernel::Boxes(_)));
    }

    #[test]
    fn box_widths_match_the_requested_variance() {
        let variance = 400.0;

        let halves = box_half_widths(variance);

        let total: f64 = halves
            .iter()
            .map(|&h| {
                let w = (2 * h + 1) as f64;
                (w * w - 1.0) / 12.0
            })
            .sum();
        assert!(
            (total - variance).abs() / variance < 0.1,
            "{halves:?} {total}"
        );
    }

    #[test]
    fn blur_with_zero_or_tiny_sigma_returns_the_image_unchanged() {
        let img = single_white_pixel(5);

        assert_eq!(blur(&img, 0.0), img);
        assert_eq!(blur(&img, -3.0), img);
        assert_eq!(blur(&img, 0.3), img);
        assert_eq!(blur(&img, f32::NAN), img);
    }

    #[test]
    fn blur_of_a_single_white_pixel_spreads_symmetrically_and_keeps_the_mean() {
        let img = single_white_pixel(21);

        let out = blur(&img, 2.0).to_rgb8();

        let at = |x: u32, y: u32| out.get_pixel(x, y).0[0];
        assert!(at(10, 10) < 255 && at(10, 10) > 0);
        assert!(at(11, 10) > 0 && at(10, 13) > 0);
        for d in 1..=10 {
            assert_eq!(at(10 - d, 10), at(10 + d, 10));
            assert_eq!(at(10, 10 - d), at(10, 10 + d));
            assert_eq!(at(10 - d, 10 - d), at(10 + d, 10 + d));
            assert_eq!(at(10 + d, 10), at(10, 10 + d));
        }
        let sum = channel_sum(&DynamicImage::ImageRgb8(out));
        // Each of the 7×7 touched pixels may round by half a level.
        assert!(sum.abs_diff(255) <= 25, "sum {sum}");
    }

    #[test]
    fn wide_blur_keeps_the_mean_of_an_interior_square() {
        let mut img = RgbImage::new(200, 200);
        for y in 90..110 {
            for x in 90..110 {
                img.put_pixel(x, y, Rgb([200, 200, 200]));
            }
        }
        let img = DynamicImage::ImageRgb8(img);

        let out = blur(&img, 12.0);

        let before = channel_sum(&img) as f64;
        let after = channel_sum(&out) as f64;
        assert!((after - before).abs() / before < 0.02, "{before} {after}");
        let buf = out.to_rgb8();
        assert!(buf.get_pixel(100, 100).0[0] < 200);
        assert_eq!(buf.get_pixel(80, 100), buf.get_pixel(119, 100));
        assert_eq!(buf.get_pixel(100, 80), buf.get_pixel(100, 119));
    }

    #[test]
    fn blur_keeps_a_uniform_image_uniform_at_every_sigma() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(17, 9, Rgba([30, 140, 250, 90])));

        for sigma in [1.0, 4.0, 30.0] {
            assert_eq!(blur(&img, sigma), img, "sigma {sigma}");
        }
    }

    #[test]
    fn blur_does_not_darken_colour_next_to_transparent_pixels() {
        // Left half opaque red, right half transparent black.
        let mut img = RgbaImage::new(20, 3);
        for (x, _, px) in img.enumerate_pixels_mut() {
            *px = if x < 10 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([0, 0, 0, 0])
            };
        }

        let out = blur(&DynamicImage::ImageRgba8(img), 3.0);

        let DynamicImage::ImageRgba8(buf) = out else {
            panic!("expected RGBA output");
        };
        let edge = buf.get_pixel(10, 1).0;
        assert!(edge[3] > 0 && edge[3] < 255, "{edge:?}");
        for px in buf.pixels().filter(|p| p.0[3] > 0) {
            assert_eq!(&px.0[..3], &[255, 0, 0]);
        }
    }

    #[test]
    fn blur_handles_one_pixel_and_one_row_images() {
        let dot = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([7, 8, 9])));
        let row = DynamicImage::ImageRgba8(RgbaImage::from_pixel(5, 1, Rgba([1, 2, 3, 4])));
        let empty = DynamicImage::ImageRgb8(RgbImage::new(0, 3));

        assert_eq!(blur(&dot, 5.0), dot);
        assert_eq!(blur(&dot, 80.0), dot);
        assert_eq!(blur(&row, 2.0), row);
        assert_eq!(blur(&empty, 2.0), empty);
    }

    #[test]
    fn blur_is_deterministic() {
        let mut img = RgbImage::new(40, 30);
        for (x, y, px) in img.enumerate_pixels_mut() {
            *px = Rgb([(x * 6) as u8, (y * 8) as u8, ((x * y) % 251) as u8]);
        }
        let img = DynamicImage::ImageRgb8(img);

        assert_eq!(blur(&img, 3.0), blur(&img, 3.0));
        assert_eq!(blur(&img, 25.0), blur(&img, 25.0));
    }

    fn step_edge() -> DynamicImage {
        let mut img = RgbImage::new(12, 4);
        for (x, _, px) in img.enumerate_pixels_mut() {
            *px = if x < 6 {
                Rgb([80, 80, 80])
            } else {
                Rgb([160, 160, 160])
            };
        }
        DynamicImage::ImageRgb8(img)
    }

    #[test]
    fn sharpen_increases_contrast_across_an_edge() {
        let img = step_edge();

        let out = sharpen(&img, &SharpenParams::default()).to_rgb8();

        let dark = out.get_pixel(5, 1).0[0];
        let bright = out.get_pixel(6, 1).0[0];
        assert!(dark < 80, "dark side {dark}");
        assert!(bright > 160, "bright side {bright}");
        // Far from the edge nothing changes.
        assert_eq!(out.get_pixel(0, 1).0, [80, 80, 80]);
        assert_eq!(out.get_pixel(11, 1).0, [160, 160, 160]);
    }

    #[test]
    fn sharpen_limits_brightening_to_y2_and_darkening_to_y3() {
        let img = step_edge();
        let params = SharpenParams {
            m2: 100.0,
            y2: 4.0,
            y3: 20.0,
            ..SharpenParams::default()
        };

        let out = sharpen(&img, &params).to_rgb8();

        // y2 = 4 and y3 = 20 L* units are 10.2 and 51 levels.
        assert_eq!(out.get_pixel(6, 1).0[0], 160 + 10);
        assert_eq!(out.get_pixel(5, 1).0[0], 80 - 51);
    }

    #[test]
    fn sharpen_leaves_flat_images_and_alpha_alone() {
        let flat = DynamicImage::ImageRgba8(RgbaImage::from_pixel(6, 6, Rgba([90, 120, 30, 200])));

        assert_eq!(sharpen(&flat, &SharpenParams::default()), flat);
    }

    #[test]
    fn sharpen_ignores_transparent_neighbours() {
        // Opaque grey next to transparent white: the hidden white must not create an edge.
        let mut img = RgbaImage::new(12, 3);
        for (x, _, px) in img.enumerate_pixels_mut() {
            *px = if x < 6 {
                Rgba([100, 100, 100, 255])
            } else {
                Rgba([255, 255, 255, 0])
            };
        }
        let img = DynamicImage::ImageRgba8(img);

        let out = sharpen(&img, &SharpenParams::default());

        assert_eq!(out, img);
    }

    #[test]
    fn sharpen_with_non_finite_parameters_returns_a_copy() {
        let img = step_edge();
        let params = SharpenParams {
            m2: f32::INFINITY,
            ..SharpenParams::default()
        };

        assert_eq!(sharpen(&img, &params), img);
    }

    #[test]
    fn sharpen_handles_a_one_pixel_image() {
        let dot = DynamicImage::ImageRgba8(RgbaImage::from_pixel(1, 1, Rgba([1, 2, 3, 4])));

        assert_eq!(sharpen(&dot, &SharpenParams::default()), dot);
    }
}

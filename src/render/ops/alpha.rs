//! The `alpha` operation: work on the transparency channel of an image, in rokka's four modes.
//!
//! rokka documents the modes in one line each; this is how we read them:
//!
//! - `mask`: "the alpha channel as grayscale image, removing all other information, including
//!   the actual alpha channel" → an opaque RGB image with R = G = B = alpha.
//! - `extract`: "just the alpha channel" → the alpha channel kept as transparency, all colour
//!   information removed (black): the image's silhouette. Unlike `mask`, the result still has
//!   an alpha channel.
//! - `remove`: "removes the alpha channel" → the colour channels as stored, alpha dropped
//!   (libvips' band extraction, ImageMagick's `-alpha off`); no compositing onto a background,
//!   which is the job of the `transparency.color` stack option.
//! - `apply`: "applies an opacity" → alpha multiplied by `opacity` / 100.
//!
//! An RGB image counts as fully opaque (alpha 255 everywhere): `mask` gives white, `extract`
//! black, `remove` a copy, and `apply` is the one mode that turns RGB into RGBA.

use image::{DynamicImage, Rgb, RgbImage, RgbaImage};

/// The modes of rokka's `alpha` operation (default `Mask`); see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlphaMode {
    #[default]
    Mask,
    Extract,
    Remove,
    Apply,
}

/// Runs the `alpha` operation in `mode`. `opacity` (0..=100, larger values count as 100) is used
/// by [`AlphaMode::Apply`] only. Output layout: `Mask` and `Remove` give RGB; `Extract` keeps
/// the input layout; `Apply` gives RGBA.
#[must_use]
pub fn alpha(img: &DynamicImage, mode: AlphaMode, opacity: u8) -> DynamicImage {
    match img {
        DynamicImage::ImageRgba8(buf) => alpha_rgba(buf, mode, opacity),
        DynamicImage::ImageRgb8(buf) => alpha_rgb(buf, mode, opacity),
        other if other.color().has_alpha() => alpha_rgba(&other.to_rgba8(), mode, opacity),
        other => alpha_rgb(&other.to_rgb8(), mode, opacity),
    }
}

fn alpha_rgba(buf: &RgbaImage, mode: AlphaMode, opacity: u8) -> DynamicImage {
    let (w, h) = buf.dimensions();
    match mode {
        AlphaMode::Mask => {
            let mut out = RgbImage::new(w, h);
            for (o, p) in out.pixels_mut().zip(buf.pixels()) {
                o.0 = [p.0[3]; 3];
            }
            DynamicImage::ImageRgb8(out)
        }
        AlphaMode::Extract => {
            let mut out = RgbaImage::new(w, h);
            for (o, p) in out.pixels_mut().zip(buf.pixels()) {
                o.0[3] = p.0[3];
            }
            DynamicImage::ImageRgba8(out)
        }
        AlphaMode::Remove => {
            let mut out = RgbImage::new(w, h);
            for (o, p) in out.pixels_mut().zip(buf.pixels()) {
                let [r, g, b, _] = p.0;
                o.0 = [r, g, b];
            }
            DynamicImage::ImageRgb8(out)
        }
        AlphaMode::Apply => {
            let opacity = u32::from(opacity.min(100));
            let mut out = buf.clone();
            for px in out.pixels_mut() {
                let [_, _, _, a] = &mut px.0;
                *a = scale_alpha(*a, opacity);
            }
            DynamicImage::ImageRgba8(out)
        }
    }
}

fn alpha_rgb(buf: &RgbImage, mode: AlphaMode, opacity: u8) -> DynamicImage {
    let (w, h) = buf.dimensions();
    match mode {
        AlphaMode::Mask => DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb([255; 3]))),
        AlphaMode::Extract => DynamicImage::ImageRgb8(RgbImage::new(w, h)),
        AlphaMode::Remove => DynamicImage::ImageRgb8(buf.clone()),
        AlphaMode::Apply => {
            let a = scale_alpha(u8::MAX, u32::from(opacity.min(100)));
            let mut out = RgbaImage::new(w, h);
            for (o, p) in out.pixels_mut().zip(buf.pixels()) {
                let [r, g, b] = p.0;
                o.0 = [r, g, b, a];
            }
            DynamicImage::ImageRgba8(out)
        }
    }
}

/// `alpha × opacity / 100`, rounded to nearest.
fn scale_alpha(alpha: u8, opacity: u32) -> u8 {
    ((u32::from(alpha) * opacity + 50) / 100).min(255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    fn sample_rgba() -> DynamicImage {
        let mut img = RgbaImage::new(3, 1);
        img.put_pixel(0, 0, Rgba([200, 10, 20, 255]));
        img.put_pixel(1, 0, Rgba([30, 40, 50, 128]));
        img.put_pixel(2, 0, Rgba([60, 70, 80, 0]));
        DynamicImage::ImageRgba8(img)
    }

    fn sample_rgb() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([10, 20, 30])))
    }

    #[test]
    fn mask_turns_the_alpha_channel_into_an_opaque_grey_image() {
        let out = alpha(&sample_rgba(), AlphaMode::Mask, 50);

        let DynamicImage::ImageRgb8(buf) = out else {
            panic!("mask should give RGB");
        };
        assert_eq!(buf.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(buf.get_pixel(1, 0).0, [128, 128, 128]);
        assert_eq!(buf.get_pixel(2, 0).0, [0, 0, 0]);
    }

    #[test]
    fn extract_keeps_only_the_alpha_channel_as_a_black_silhouette() {
        let out = alpha(&sample_rgba(), AlphaMode::Extract, 50);

        let DynamicImage::ImageRgba8(buf) = out else {
            panic!("extract should keep RGBA");
        };
        assert_eq!(buf.get_pixel(0, 0).0, [0, 0, 0, 255]);
        assert_eq!(buf.get_pixel(1, 0).0, [0, 0, 0, 128]);
        assert_eq!(buf.get_pixel(2, 0).0, [0, 0, 0, 0]);
    }

    #[test]
    fn remove_drops_the_alpha_channel_and_keeps_the_colours() {
        let out = alpha(&sample_rgba(), AlphaMode::Remove, 50);

        let DynamicImage::ImageRgb8(buf) = out else {
            panic!("remove should give RGB");
        };
        assert_eq!(buf.get_pixel(0, 0).0, [200, 10, 20]);
        assert_eq!(buf.get_pixel(1, 0).0, [30, 40, 50]);
        assert_eq!(buf.get_pixel(2, 0).0, [60, 70, 80]);
    }

    #[test]
    fn apply_scales_the_existing_alpha_by_the_opacity() {
        let out = alpha(&sample_rgba(), AlphaMode::Apply, 50);

        let DynamicImage::ImageRgba8(buf) = out else {
            panic!("apply should keep RGBA");
        };
        assert_eq!(buf.get_pixel(0, 0).0, [200, 10, 20, 128]);
        assert_eq!(buf.get_pixel(1, 0).0, [30, 40, 50, 64]);
        assert_eq!(buf.get_pixel(2, 0).0, [60, 70, 80, 0]);
    }

    #[test]
    fn apply_with_full_or_excessive_opacity_changes_nothing() {
        let img = sample_rgba();

        assert_eq!(alpha(&img, AlphaMode::Apply, 100), img);
        assert_eq!(alpha(&img, AlphaMode::Apply, 250), img);
    }

    #[test]
    fn rgb_input_counts_as_fully_opaque() {
        let img = sample_rgb();

        assert_eq!(
            alpha(&img, AlphaMode::Mask, 50),
            DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([255, 255, 255])))
        );
        assert_eq!(
            alpha(&img, AlphaMode::Extract, 50),
            DynamicImage::ImageRgb8(RgbImage::new(2, 2))
        );
        assert_eq!(alpha(&img, AlphaMode::Remove, 50), img);
    }

    #[test]
    fn apply_on_rgb_input_adds_an_alpha_channel_with_the_opacity() {
        let out = alpha(&sample_rgb(), AlphaMode::Apply, 30);

        let DynamicImage::ImageRgba8(buf) = out else {
            panic!("apply should give RGBA");
        };
        assert!(buf.pixels().all(|p| p.0 == [10, 20, 30, 77]));
    }

    #[test]
    fn every_mode_accepts_an_empty_image() {
        let empty = DynamicImage::ImageRgba8(RgbaImage::new(0, 0));

        for mode in [
            AlphaMode::Mask,
            AlphaMode::Extract,
            AlphaMode::Remove,
            AlphaMode::Apply,
        ] {
            let out = alpha(&empty, mode, 40);
            assert_eq!((out.width(), out.height()), (0, 0));
        }
    }
}

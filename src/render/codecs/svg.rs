//! SVG sources, rasterised with resvg. An SVG has no pixels of its own: its record carries the
//! intrinsic size (the `width`/`height` attributes, or the `viewBox`), and a render rasterises
//! it at the size the pipeline needs, so that a logo resized to 2000 px is drawn at 2000 px
//! rather than enlarged from a small bitmap.
//!
//! SVG is XML from the outside world, so the parser is held short: nothing outside the
//! document is ever read (no external images, no nested SVG in `data:` URLs, no external
//! entities, no style sheets from files), the node count is bounded, entity expansion is
//! refused past roxmltree's billion-laughs guard, gzip-compressed SVG is not accepted, and the
//! intrinsic size and the raster size are checked against [`Limits`] before any pixel buffer
//! exists.

use image::metadata::Orientation;
use image::{DynamicImage, RgbaImage};
use resvg::{tiny_skia, usvg};

use super::decode::{check_dimensions, Purpose, Source};
use super::format::SourceFormat;
use crate::render::error::{RenderError, Result};
use crate::render::limits::Limits;

/// Most XML nodes an SVG may have. Large illustrations have tens of thousands; far more is
/// either a mistake or an attempt to make the parser and the rasteriser work for minutes.
const MAX_NODES: u32 = 250_000;

/// Longest side of the raster made to check an upload: enough to run every drawing step and
/// to see whether the image has transparency, cheap for any intrinsic size.
const CHECK_SIDE: f64 = 256.0;

/// Parses, checks and rasterises an SVG. `need` is the smallest raster the pipeline needs
/// (oriented pixels, which for SVG are the stored ones): the drawing is scaled so that it
/// covers `need` in both directions, above or below its intrinsic size. Without `need` it is
/// drawn at its intrinsic size.
pub(crate) fn read(
    bytes: &[u8],
    limits: &Limits,
    need: Option<(u32, u32)>,
    purpose: Purpose,
) -> Result<Source> {
    let tree = parse(bytes)?;
    let (width, height) = pixel_size(&tree);
    check_dimensions(width, height, limits)?;
    let (rw, rh) = match (purpose, need) {
        (Purpose::Check, _) => {
            let side = CHECK_SIDE.min(f64::from(width.max(height))) as u32;
            raster_size((width, height), (side, side), false)
        }
        (Purpose::Render, Some(need)) => raster_size((width, height), need, true),
        (Purpose::Render, None) => (width, height),
    };
    check_dimensions(rw, rh, limits)?;
    // Checked at the intrinsic size too, so that an upload the check accepts can be
    // rendered at that size.
    check_memory(&tree, (width, height), (width, height), limits)?;
    check_memory(&tree, (width, height), (rw, rh), limits)?;
    let image = rasterise(&tree, rw, rh)?;
    let opaque = image.pixels().all(|p| p.0[3] == 255);
    let image = if opaque {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(image).to_rgb8())
    } else {
        DynamicImage::ImageRgba8(image)
    };
    Ok(Source {
        format: SourceFormat::Svg,
        width,
        height,
        orientation: Orientation::NoTransforms,
        exif: None,
        icc: None,
        image,
        opaque,
        scaled: (rw, rh) != (width, height),
    })
}

/// The raster size of an SVG of `intrinsic` size drawn for a pipeline that needs `need`:
/// scaled to cover `need` in both directions when `cover`, to fit inside it otherwise, with
/// the aspect ratio kept and every side rounded up. A zero in `need` means the intrinsic size.
pub(crate) fn raster_size(intrinsic: (u32, u32), need: (u32, u32), cover: bool) -> (u32, u32) {
    let (fw, fh) = (f64::from(intrinsic.0.max(1)), f64::from(intrinsic.1.max(1)));
    if need.0 == 0 || need.1 == 0 {
        return intrinsic;
    }
    let (sx, sy) = (f64::from(need.0) / fw, f64::from(need.1) / fh);
    let scale = if cover { sx.max(sy) } else { sx.min(sy) };
    // Rounding guards against 119.99999 becoming 120 + 1 pixel.
    let side = |v: f64| {
        ((v * scale * 1e6).round() / 1e6)
            .ceil()
            .clamp(1.0, f64::from(u32::MAX)) as u32
    };
    (side(fw), side(fh))
}

/// Refuses to draw the SVG of `intrinsic` size at `raster` size when its layers would take
/// more memory than a render may.
fn check_memory(
    tree: &usvg::Tree,
    intrinsic: (u32, u32),
    raster: (u32, u32),
    limits: &Limits,
) -> Result<()> {
    let (rw, rh) = raster;
    let canvas = f64::from(rw) * f64::from(rh);
    let scale = f64::from(rw) / f64::from(intrinsic.0.max(1));
    let needed = (canvas + layers(tree.root(), scale, canvas)) * 4.0 * 2.0;
    if needed > limits.max_render_memory as f64 {
        return Err(RenderError::TooLarge(format!(
            "drawing the SVG at {rw}x{rh} would need about {} MiB for its layers, filters, masks and patterns; at most {} MiB are allowed",
            (needed / f64::from(1u32 << 20)).ceil(),
            limits.max_render_memory >> 20
        )));
    }
    Ok(())
}

/// The most pixels resvg holds at once, besides the canvas and the final RGBA copy, to draw
/// `group` at `scale`: a group that needs a layer of its own (opacity, clip path, mask,
/// filter) allocates one the size of its bounds while its children draw, up to 25 times the
/// canvas with filters (resvg's own cap), and every filter primitive keeps a result of that
/// size; masks, clip paths and pattern tiles are drawn into buffers of their own. Nested
/// layers add up; siblings are drawn one after the other. Without this, a small file whose
/// filter region is many times the canvas, or a thousand nested translucent groups, would
/// allocate gigabytes before any limit could say no.
fn layers(group: &usvg::Group, scale: f64, canvas: f64) -> f64 {
    let area = |r: usvg::NonZeroRect| f64::from(r.width()) * f64::from(r.height()) * scale * scale;
    let mut own = 0.0;
    if group.should_isolate() {
        let bounds = area(group.abs_layer_bounding_box()).min(canvas * 25.0) + 1.0;
        let results: usize = group.filters().iter().map(|f| f.primitives().len()).sum();
        own += bounds * (1.0 + 2.0 * results as f64);
        if group.clip_path().is_some() || group.mask().is_some() {
            // A clip path or mask buffer the size of the layer, plus its own content.
            own += bounds;
        }
    }
    let mut inner: f64 = 0.0;
    if let Some(clip) = group.clip_path() {
        inner = inner.max(layers(clip.root(), scale, canvas));
    }
    if let Some(mask) = group.mask() {
        inner = inner.max(layers(mask.root(), scale, canvas));
    }
    for node in group.children() {
        let child = match node {
            usvg::Node::Group(g) => layers(g, scale, canvas),
            usvg::Node::Path(path) => {
                let paints = path
                    .fill()
                    .map(|f| f.paint())
                    .into_iter()
                    .chain(path.stroke().map(|s| s.paint()));
                paints
                    .map(|paint| match paint {
                        usvg::Paint::Pattern(p) => {
                            let t = p.transform();
                            let stretch = f64::from((t.sx * t.sy - t.kx * t.ky).abs()).max(1.0);
                            area(p.rect()) * stretch + layers(p.root(), scale, canvas)
                        }
                        _ => 0.0,
                    })
                    .fold(0.0, f64::max)
            }
            _ => 0.0,
        };
        inner = inner.max(child);
    }
    own + inner
}

/// Parses the document with every outside resource refused.
fn parse(bytes: &[u8]) -> Result<usvg::Tree> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(RenderError::Unsupported(
            "compressed SVG (svgz) is not accepted; upload the uncompressed SVG".to_owned(),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| RenderError::Unprocessable("the SVG is not valid UTF-8 text".to_owned()))?;
    let xml_options = usvg::roxmltree::ParsingOptions {
        // A DOCTYPE is common in exported SVG (Illustrator declares namespaces as entities);
        // roxmltree refuses entity loops and exponential expansion, and with no entity
        // resolver an external entity is an error, never a file or URL read.
        allow_dtd: true,
        nodes_limit: MAX_NODES,
        ..Default::default()
    };
    let document = usvg::roxmltree::Document::parse_with_options(text, xml_options)
        .map_err(|e| RenderError::Unprocessable(format!("the SVG is not valid XML: {e}")))?;
    let options = usvg::Options {
        resources_dir: None,
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data: Box::new(|_, _, _| None),
            resolve_string: Box::new(|_, _| None),
        },
        ..usvg::Options::default()
    };
    usvg::Tree::from_xmltree(&document, &options)
        .map_err(|e| RenderError::Unprocessable(format!("the SVG cannot be drawn: {e}")))
}

fn pixel_size(tree: &usvg::Tree) -> (u32, u32) {
    let size = tree.size();
    let side = |v: f32| {
        let v = f64::from(v).ceil();
        if v.is_finite() {
            v.clamp(1.0, f64::from(u32::MAX)) as u32
        } else {
            u32::MAX
        }
    };
    (side(size.width()), side(size.height()))
}

/// Draws the tree stretched to `width` × `height` and returns straight (not premultiplied)
/// RGBA.
fn rasterise(tree: &usvg::Tree, width: u32, height: u32) -> Result<RgbaImage> {
    let mut pixmap = tiny_skia::Pixmap::new(width, height).ok_or_else(|| {
        RenderError::TooLarge(format!("an SVG raster of {width}x{height} cannot be made"))
    })?;
    let size = tree.size();
    let transform = tiny_skia::Transform::from_scale(
        width as f32 / size.width(),
        height as f32 / size.height(),
    );
    resvg::render(tree, transform, &mut pixmap.as_mut());
    let mut rgba = Vec::with_capacity(pixmap.data().len());
    for px in pixmap.pixels() {
        let c = px.demultiply();
        rgba.extend_from_slice(&[c.red(), c.green(), c.blue(), c.alpha()]);
    }
    RgbaImage::from_raw(width, height, rgba)
        .ok_or_else(|| RenderError::Internal("the SVG raster has the wrong length".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `width` × `height` SVG: a red rectangle over the left half, the rest transparent.
    pub(crate) fn svg_logo(width: u32, height: u32) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">
  <rect x="0" y="0" width="{}" height="{height}" fill="red"/>
</svg>
"#,
            width / 2
        )
        .into_bytes()
    }

    /// The billion-laughs document: ten levels of ten references each.
    pub(crate) fn svg_entity_bomb() -> Vec<u8> {
        let mut dtd = String::from("<!ENTITY lol \"lol\">\n");
        for level in 1..=9 {
            let previous = if level == 1 {
                "lol".to_owned()
            } else {
                format!("lol{}", level - 1)
            };
            let refs = format!("&{previous};").repeat(10);
            dtd.push_str(&format!("<!ENTITY lol{level} \"{refs}\">\n"));
        }
        format!(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE svg [\n{dtd}]>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><text>&lol9;</text></svg>"
        )
        .into_bytes()
    }

    fn render(bytes: &[u8], need: Option<(u32, u32)>) -> Result<Source> {
        read(bytes, &Limits::default(), need, Purpose::Render)
    }

    #[test]
    fn an_svg_has_its_intrinsic_size_and_is_drawn_at_it() {
        let source = render(&svg_logo(120, 80), None).unwrap();

        assert_eq!((source.width, source.height), (120, 80));
        assert_eq!((source.image.width(), source.image.height()), (120, 80));
        assert!(!source.scaled);
        // The left half is a red rectangle, the right half transparent.
        let rgba = source.image.to_rgba8();
        assert_eq!(rgba.get_pixel(10, 40).0, [255, 0, 0, 255]);
        assert_eq!(rgba.get_pixel(110, 40).0[3], 0);
        assert!(!source.opaque);
    }

    #[test]
    fn a_view_box_alone_gives_the_size() {
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 32"><rect width="64" height="32" fill="blue"/></svg>"#;

        let source = render(svg, None).unwrap();

        assert_eq!((source.width, source.height), (64, 32));
        assert!(source.opaque);
    }

    #[test]
    fn an_svg_is_drawn_at_the_size_the_pipeline_needs() {
        let larger = render(&svg_logo(120, 80), Some((600, 400))).unwrap();
        let smaller = render(&svg_logo(120, 80), Some((30, 10))).unwrap();

        assert_eq!((larger.image.width(), larger.image.height()), (600, 400));
        assert_eq!((larger.width, larger.height), (120, 80));
        assert!(larger.scaled);
        // Covers 30x10 in both directions, keeping the aspect ratio.
        assert_eq!((smaller.image.width(), smaller.image.height()), (30, 20));
    }

    #[test]
    fn a_huge_canvas_is_refused_before_any_pixel_exists() {
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"><rect width="10" height="10"/></svg>"#;

        let result = render(svg, None);

        assert!(
            matches!(&result, Err(RenderError::TooLarge(m)) if m.contains("100000x100000")),
            "{:?}",
            result.err()
        );
    }

    #[test]
    fn a_raster_size_beyond_the_limits_is_refused() {
        let result = render(&svg_logo(120, 80), Some((60_000, 40_000)));

        assert!(matches!(result, Err(RenderError::TooLarge(_))));
    }

    #[test]
    fn entity_expansion_bombs_are_refused() {
        let result = render(&svg_entity_bomb(), None);

        assert!(
            matches!(&result, Err(RenderError::Unprocessable(_))),
            "{:?}",
            result.err()
        );
    }

    #[test]
    fn external_entities_and_images_are_never_read() {
        let entity = br#"<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&secret;</text></svg>"#;
        let image = br#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10"><image width="10" height="10" xlink:href="/etc/passwd"/><image width="10" height="10" href="http://127.0.0.1:1/x.png"/></svg>"#;

        assert!(matches!(
            render(entity, None),
            Err(RenderError::Unprocessable(_))
        ));
        let drawn = render(image, None).unwrap();
        assert!(drawn.image.to_rgba8().pixels().all(|p| p.0[3] == 0));
    }

    #[test]
    fn truncated_and_compressed_svgs_are_refused() {
        let logo = svg_logo(120, 80);

        assert!(matches!(
            render(&logo[..logo.len() / 2], None),
            Err(RenderError::Unprocessable(_))
        ));
        assert!(matches!(
            render(b"\x1f\x8b\x08\0\0\0\0\0", None),
            Err(RenderError::Unsupported(_))
        ));
    }

    #[test]
    fn too_many_nodes_are_refused() {
        let mut svg =
            String::from(r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">"#);
        for _ in 0..MAX_NODES {
            svg.push_str("<g/>");
        }
        svg.push_str("</svg>");

        assert!(matches!(
            render(svg.as_bytes(), None),
            Err(RenderError::Unprocessable(_))
        ));
    }

    #[test]
    fn layers_beyond_the_memory_limit_are_refused_before_drawing() {
        let limits = Limits {
            max_render_memory: 64 << 20,
            ..Limits::default()
        };
        let huge_filter = br#"<svg xmlns="http://www.w3.org/2000/svg" width="2000" height="500"><filter id="f" x="-10" y="-10" width="20" height="20"><feGaussianBlur stdDeviation="5"/></filter><rect width="2000" height="500" filter="url(#f)"/></svg>"#;
        let mut nested =
            String::from(r#"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="1000">"#);
        for _ in 0..200 {
            nested.push_str(r#"<g opacity="0.99"><rect width="1000" height="1000" fill="red"/>"#);
        }
        nested.push_str(&"</g>".repeat(200));
        nested.push_str("</svg>");

        for (name, svg) in [("filter", &huge_filter[..]), ("nested", nested.as_bytes())] {
            let result = read(svg, &limits, None, Purpose::Render);
            assert!(
                matches!(&result, Err(RenderError::TooLarge(m)) if m.contains("MiB")),
                "{name}: {:?}",
                result.err()
            );
        }
        // The same drawing at a tenth of the size is fine.
        let small = br#"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="50" viewBox="0 0 2000 500"><filter id="f" x="-10" y="-10" width="20" height="20"><feGaussianBlur stdDeviation="5"/></filter><rect width="2000" height="500" filter="url(#f)"/></svg>"#;
        assert!(read(small, &limits, None, Purpose::Render).is_ok());
    }

    #[test]
    fn use_element_bombs_are_refused() {
        // Nine levels of ten `<use>` each would expand to a billion rectangles.
        let mut svg = String::from(
            r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10"><defs><rect id="l0" width="1" height="1"/>"#,
        );
        for level in 1..=9 {
            svg.push_str(&format!(r#"<g id="l{level}">"#));
            for _ in 0..10 {
                svg.push_str(&format!(r##"<use xlink:href="#l{}"/>"##, level - 1));
            }
            svg.push_str("</g>");
        }
        svg.push_str(r##"</defs><use xlink:href="#l9"/></svg>"##);

        assert!(matches!(
            render(svg.as_bytes(), None),
            Err(RenderError::Unprocessable(_))
        ));
    }
}

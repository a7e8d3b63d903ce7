//! Decoding and rendering limits. Source limits are checked from the image header before any
//! pixel buffer is allocated; output and memory limits are checked against the render's plan
//! (see [`crate::render::plan`]) before the source is decoded, because their values come from
//! public URLs.

/// Upper bounds on what a render may allocate and produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted width or height, in pixels (sources and every canvas).
    pub max_dimension: u32,
    /// Largest accepted width × height of a source image and of any canvas.
    pub max_pixels: u64,
    /// Largest width × height of a render's result.
    pub max_output_pixels: u64,
    /// Largest result of an AVIF render: its encoder is far slower per pixel than the others
    /// (a stopped render still spent its core until the deadline), so its work is bounded up
    /// front to what can finish within the render timeout.
    pub max_avif_output_pixels: u64,
    /// Largest estimated peak memory of one render, in bytes.
    pub max_render_memory: u64,
    /// Most frames of an animation rendered to an animated output.
    pub max_frames: u32,
    /// Largest canvas width × height × frame count of an animation rendered to an animated
    /// output: what decoding every frame costs, however few frames there are.
    pub max_animation_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_dimension: 30_000,
            max_pixels: 100_000_000,
            max_output_pixels: 40_000_000,
            max_avif_output_pixels: 16_000_000,
            max_render_memory: 1024 * 1024 * 1024,
            max_frames: 1000,
            max_animation_pixels: 150_000_000,
        }
    }
}

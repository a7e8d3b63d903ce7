//! Decoding limits, checked from the image header before any pixel buffer is allocated.

/// Upper bounds on what a decode may allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted width or height, in pixels.
    pub max_dimension: u32,
    /// Largest accepted width × height.
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_dimension: 30_000,
            max_pixels: 100_000_000,
        }
    }
}

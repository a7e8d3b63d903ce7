//! The AVIF encoder: rav1e through `image`. rav1e encodes a still image in one call with no
//! way to stop it, so a render that the service may have to cancel (its deadline passed, its
//! client went away) runs the encoder in a child process, `darkroom encode-avif`, that is
//! killed when the render's signal is set: the thread and the core are back at once. The
//! child runs the same encoder with the same settings, so the bytes do not depend on where it
//! ran. Without a helper executable (the library in tests and benchmarks, the command line)
//! the encoder runs in this process.
//!
//! The child reads one request from stdin (the magic `DRAVIF1\0`, then width and height as
//! `u32` big-endian, channels (3 or 4), quality, the pixels) and writes the AVIF file to
//! stdout; any failure is a message on stderr and a non-zero exit.

use crate::render::error::{RenderError, Result};
use image::codecs::avif::AvifEncoder;
use image::{ExtendedColorType, ImageEncoder};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// rav1e speed preset (1 slowest … 10 fastest). Speed 8 keeps a 300 px render at a few hundred
/// milliseconds of one core while compressing close to the slower presets.
const SPEED: u8 = 8;

const MAGIC: &[u8; 8] = b"DRAVIF1\0";

/// How often a waiting render looks at its signal while the child encodes.
const POLL: Duration = Duration::from_millis(10);

/// The executable that encodes in a child process, once the service set it.
static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Makes every later AVIF encode run in a child process of `exe` (`exe encode-avif`).
pub fn use_helper(exe: PathBuf) {
    let _ = HELPER.set(exe);
}

/// Encodes 8-bit RGB (3 channels) or RGBA (4) pixels at `quality` (1..=100).
pub fn encode(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    quality: u8,
) -> Result<Vec<u8>> {
    match HELPER.get() {
        Some(exe) => encode_in_child(exe, pixels, width, height, channels, quality),
        None => encode_here(pixels, width, height, channels, quality),
    }
}

/// The encoder itself, in this process.
fn encode_here(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    quality: u8,
) -> Result<Vec<u8>> {
    let color = match channels {
        3 => ExtendedColorType::Rgb8,
        4 => ExtendedColorType::Rgba8,
        n => return Err(internal(format!("{n} channels"))),
    };
    let mut out = Vec::new();
    // One thread: ravif otherwise sizes its tiling from the rayon pool, which would make the
    // bytes depend on the machine's core count.
    AvifEncoder::new_with_speed_quality(&mut out, SPEED, quality.clamp(1, 100))
        .with_num_threads(Some(1))
        .write_image(pixels, width, height, color)
        .map_err(|e| internal(e.to_string()))?;
    Ok(out)
}

fn encode_in_child(
    exe: &PathBuf,
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    quality: u8,
) -> Result<Vec<u8>> {
    let mut child = Command::new(exe)
        .arg("encode-avif")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| internal(format!("cannot start {}: {e}", exe.display())))?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(internal("the child process has no pipes"));
    };
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> std::io::Result<()> {
            stdin.write_all(MAGIC)?;
            stdin.write_all(&width.to_be_bytes())?;
            stdin.write_all(&height.to_be_bytes())?;
            stdin.write_all(&[channels, quality])?;
            stdin.write_all(pixels)
            // Dropping stdin closes it: the child has its whole request.
        });
        let reader = scope.spawn(move || -> std::io::Result<Vec<u8>> {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out)?;
            Ok(out)
        });
        let status = loop {
            if crate::render::cancel::stop_requested() {
                // Killing the child closes its pipes, so both threads end.
                let _ = child.kill();
                let _ = child.wait();
                let _ = writer.join();
                let _ = reader.join();
                return Err(RenderError::Cancelled);
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(internal(e.to_string()));
                }
            }
        };
        let written = writer
            .join()
            .map_err(|_| internal("the writer thread panicked"))?;
        let out = reader
            .join()
            .map_err(|_| internal("the reader thread panicked"))?
            .map_err(|e| internal(e.to_string()))?;
        if !status.success() {
            return Err(internal(format!("the child process failed ({status})")));
        }
        written.map_err(|e| internal(e.to_string()))?;
        Ok(out)
    })
}

/// `darkroom encode-avif`: one request from stdin, the AVIF file to stdout.
pub fn child_main() -> std::result::Result<(), String> {
    let mut input = std::io::stdin().lock();
    let mut head = [0u8; 18];
    input
        .read_exact(&mut head)
        .map_err(|e| format!("encode-avif: a short request: {e}"))?;
    if head.get(..8) != Some(MAGIC.as_slice()) {
        return Err("encode-avif: not an encode request".into());
    }
    let word = |at: usize| {
        head.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_be_bytes)
    };
    let (width, height) = (word(8), word(12));
    let (channels, quality) = (head[16], head[17]);
    let len = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(usize::from(channels)))
        .ok_or("encode-avif: the image is too large")?;
    let mut pixels = vec![0u8; len];
    input
        .read_exact(&mut pixels)
        .map_err(|e| format!("encode-avif: short pixels: {e}"))?;
    let out = encode_here(&pixels, width, height, channels, quality).map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("encode-avif: {e}"))
}

fn internal(m: impl Into<String>) -> RenderError {
    RenderError::Internal(format!("the avif encoder: {}", m.into()))
}

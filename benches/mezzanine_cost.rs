//! What keeping a mezzanine costs and saves, per DCT scale, for one JPEG: the decode it
//! replaces, the size it takes in the render store, and the time to write and read it back,
//! against raw samples. Medians of `RUNS` (default 5) runs, one thread.
//!
//! Usage: `SOURCE=photo.jpg cargo bench --bench mezzanine_cost`
use darkroom::render::codecs::{decode, DecodeHint, Decoded};
use darkroom::render::limits::Limits;
use darkroom::render::mezzanine;
use std::time::Instant;

/// Median milliseconds of `runs` calls of `f`, and its last answer.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::with_capacity(runs);
    let mut out = f();
    for _ in 0..runs {
        let started = Instant::now();
        out = f();
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], out)
}

fn main() {
    let Ok(path) = std::env::var("SOURCE") else {
        eprintln!("SOURCE=<a JPEG> cargo bench --bench mezzanine_cost");
        return;
    };
    let runs = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let bytes = std::fs::read(&path).expect("the source");
    let limits = Limits::default();
    let (full, decoded) = time(runs, || decode(&bytes, &limits, None).expect("a JPEG"));
    let (w, h) = (decoded.image.width(), decoded.image.height());
    println!(
        "{path}: {w}x{h}, {} bytes; full-size decode {full:.1} ms",
        bytes.len()
    );
    println!(
        "scale  pixels      JPEG decode | raw MB  copy ms | stored MB (of raw)  write ms  read ms"
    );
    for d in [2u32, 4, 8] {
        let hint = Some(DecodeHint {
            min_width: w.div_ceil(d),
            min_height: h.div_ceil(d),
        });
        let (dt, dec): (f64, Decoded) =
            time(runs, || decode(&bytes, &limits, hint).expect("a JPEG"));
        let raw = dec.image.as_bytes();
        let (copy, _) = time(runs, || raw.to_vec());
        let qoi = mezzanine::Samples::Qoi;
        let (write, stored) = time(runs, || {
            mezzanine::encode(&dec, qoi).expect("8-bit samples")
        });
        let (read, back) = time(runs, || mezzanine::parse(&stored).expect("a mezzanine"));
        assert!(
            back.image == dec.image,
            "the mezzanine gives back what was decoded"
        );
        println!(
            "1/{d}    {:>4}x{:<4}  {dt:>8.1} ms | {:>6.2}  {copy:>7.2} | {:>9.2} ({:>3.0} %)  {write:>8.1}  {read:>7.1}",
            dec.image.width(),
            dec.image.height(),
            raw.len() as f64 / 1e6,
            stored.len() as f64 / 1e6,
            100.0 * stored.len() as f64 / raw.len() as f64,
        );
    }
}

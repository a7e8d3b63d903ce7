//! Fuzz harnesses that run on stable Rust as ordinary tests: each one replays its checked-in
//! corpus (`tests/fuzz/corpus/<harness>/`) and then mutates inputs for `DARKROOM_FUZZ_SECS`
//! seconds (default 1, so `cargo test` stays quick; `.ci/run` gives each 30). The engine is in
//! `engine.rs`; each other module fuzzes one entry point that hostile input reaches: `url`
//! (render URLs, signatures), `stack` (stack bodies and dynamic URLs through resolution and a
//! real render), `upload` (multipart bodies through the server), `decode` (every source
//! decoder) and `expr` (the stack expression language).

mod alloc;
mod decode;
mod engine;
mod expr;
mod stack;
mod upload;
mod url;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

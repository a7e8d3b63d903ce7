//! Fuzz harnesses that run on stable Rust as ordinary tests: each one replays its checked-in
//! corpus (`tests/fuzz/corpus/<harness>/`) and then mutates inputs for `DARKROOM_FUZZ_SECS`
//! seconds (default 1, so `cargo test` stays quick; `.ci/run` gives each 30). The engine is in
//! `engine.rs`; each other module fuzzes one entry point that hostile input reaches.
//!
//! Not covered yet: the stack expression language, which has no parser so far (stacks that use
//! expressions are refused by `model::resolve`). Its harness belongs here once it exists.

mod alloc;
mod decode;
mod engine;
mod stack;
mod upload;
mod url;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

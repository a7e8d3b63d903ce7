//! Darkroom: a self-hosted image rendering appliance. Source images are uploaded once; named
//! stacks of operations turn them into renders under immutable URLs that any cache may keep
//! forever. This crate is the whole appliance; `main.rs` only parses the command line.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod gc;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod render;
pub mod service;
pub mod storage;
pub mod url;

//! One integration-test binary: every test starts the real appliance on port 0 over its own
//! temporary data folder and talks HTTP to it.

mod accounts;
mod aliases;
mod animation;
mod avif;
mod backup;
mod blur;
mod cli;
mod control;
mod crash;
mod dashboard;
mod disk;
mod edge;
mod edge_queue;
mod gc;
mod helpers;
mod hostile_renders;
mod images;
mod import_rokka;
mod invalidation;
mod layers;
mod listing;
mod metrics;
mod output_options;
mod quirks;
mod render_cache;
mod renders;
mod scale_out;
mod shutdown;
mod sources;
mod stacks;
mod stats;
mod systemd;
mod tokens;
mod uploads;
mod zip;

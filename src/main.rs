//! The `darkroom` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    let cli = darkroom::cli::Cli::parse();
    if let Err(message) = darkroom::cli::run(cli) {
        eprintln!("darkroom: {message}");
        std::process::exit(1);
    }
}

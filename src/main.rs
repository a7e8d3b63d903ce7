//! The `darkroom` binary: parse the command line and hand over to the library.

fn main() {
    let cli = darkroom::cli::parse();
    if let Err(message) = darkroom::cli::run(cli) {
        eprintln!("darkroom: {message}");
        std::process::exit(1);
    }
}

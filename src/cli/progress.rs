//! Progress of long admin commands: a bar (count, rate, ETA) on a terminal, a plain line
//! every few seconds otherwise, so that logs of scripted runs show that work goes on.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed when stdout is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The progress of one step of a command ("bytes written", "images checked", …). Steps whose
/// name starts with "bytes" count bytes.
pub struct Meter {
    step: String,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_line: Instant,
    /// The count the last plain line showed.
    shown: Option<u64>,
    done: u64,
    total: Option<u64>,
}

impl Meter {
    pub fn new(step: &str) -> Meter {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::no_length();
            let counts = if step.starts_with("bytes") {
                "{bytes}/{total_bytes} {binary_bytes_per_sec}"
            } else {
                "{human_pos}/{human_len} {per_sec}"
            };
            let template = format!("{{spinner}} {step} [{{bar:30}}] {counts} ETA {{eta}}");
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let now = Instant::now();
        Meter {
            step: step.to_string(),
            bar,
            started: now,
            last_line: now,
            shown: None,
            done: 0,
            total: None,
        }
    }

    pub fn step(&self) -> &str {
        &self.step
    }

    /// Notes `done` units so far, of `total` when known.
    pub fn update(&mut self, done: u64, total: Option<u64>) {
        self.done = done;
        self.total = total.or(self.total);
        match &self.bar {
            Some(bar) => {
                if let Some(t) = self.total {
                    bar.set_length(t);
                }
                bar.set_position(done);
            }
            None if self.last_line.elapsed() >= LINE_EVERY => self.print_line(),
            None => {}
        }
    }

    fn print_line(&mut self) {
        self.last_line = Instant::now();
        if self.shown != Some(self.done) {
            self.shown = Some(self.done);
            println!("{}", self.line());
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let count = |n: u64| {
            if self.step.starts_with("bytes") {
                indicatif::HumanBytes(n).to_string()
            } else {
                n.to_string()
            }
        };
        let of = self
            .total
            .map(|t| format!(" of {}", count(t)))
            .unwrap_or_default();
        let per_sec = if self.step.starts_with("bytes") {
            format!("{}/s", indicatif::HumanBytes(rate as u64))
        } else {
            format!("{rate:.0}/s")
        };
        format!("{}: {}{of} ({per_sec})", self.step, count(self.done))
    }

    /// Ends the step: the bar goes away; without a terminal, a last line is printed if the
    /// step ran long enough to have printed any.
    pub fn finish(mut self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.started.elapsed() >= LINE_EVERY => self.print_line(),
            None => {}
        }
    }
}

/// A writer that reports the bytes through it to `note`.
pub struct Counted<'a, W> {
    pub inner: W,
    pub done: u64,
    pub note: &'a mut dyn FnMut(u64),
}

impl<W: std::io::Write> std::io::Write for Counted<'_, W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.done += n as u64;
        (self.note)(self.done);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

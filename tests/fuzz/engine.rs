//! A small mutation fuzzer that runs on stable Rust as an ordinary test. Each harness gives it
//! seeds, a dictionary and a function that runs one input; the engine first replays the seeds
//! and the checked-in corpus (`tests/fuzz/corpus/<harness>/`), so every crash ever found stays a
//! regression test, then mutates inputs for `DARKROOM_FUZZ_SECS` seconds (default 1).
//!
//! There is no coverage feedback on stable, so the engine uses a cheap stand-in: the function
//! names the *outcome* of an input (`Err(TooLarge)`, `Ok(3 operations)`), and an input with an
//! outcome not seen before joins the working corpus. That keeps inputs that reach deeper
//! branches around for further mutation instead of always starting from the seeds.
//!
//! A finding is a panic that escapes the function, an `Err` from it (a broken property such as a
//! 5xx answer), or a thread that held more than the harness's allocation cap (usually
//! [`crate::alloc::THREAD_CAP`]) at once while running the input. Findings are written to
//! `<target tmp>/fuzz-crashes/<harness>/` and the harness fails listing them; copy one into the
//! corpus folder once it is fixed. An outcome label that starts with `known:` marks an input
//! that shows a reported, not yet fixed problem: such inputs are counted and printed, and do
//! not fail the run, so that the harness keeps guarding everything else meanwhile.
//!
//! A run is repeatable from its seed only up to timing: the budget is wall-clock time, and the
//! upload harness also depends on what the server stored before.
//!
//! `DARKROOM_FUZZ_SEED` fixes the random seed (the run prints the one it used), and
//! `DARKROOM_FUZZ_TOTALS` names a file to which each harness appends
//! `<harness> <executions> <findings>`, which `.ci/run` adds up.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

/// Most inputs kept in the working corpus, so that a long run does not grow without bound.
const MAX_CORPUS: usize = 512;

/// Most findings recorded before a harness stops early: one bug tends to repeat.
const MAX_FINDINGS: usize = 10;

thread_local! {
    /// Whether this thread is inside a fuzzed call: its panics are findings, not test failures,
    /// and must not flood the log with the default hook's message.
    static FUZZING: Cell<bool> = const { Cell::new(false) };
    /// Panics raised on this thread during the current input, caught or not: some decoders
    /// panic on hostile data and the code under test catches that on purpose.
    static PANICS: Cell<u64> = const { Cell::new(0) };
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// What one input did: a label of its outcome, or a broken property.
pub type Outcome = Result<String, String>;

/// A harness's settings.
pub struct Harness<'a> {
    /// Name of the harness: its corpus folder and its line in the totals.
    pub name: &'a str,
    /// Inputs to start from (valid, or nearly valid, examples).
    pub seeds: Vec<Vec<u8>>,
    /// Tokens that mutation inserts or overwrites with (keywords, magic numbers).
    pub dictionary: Vec<Vec<u8>>,
    /// Longest input produced by mutation.
    pub max_len: usize,
    /// Repairs an input after mutation (for example recomputes checksums) on half of the
    /// mutations, so that mutated fields get past integrity checks to the parser behind them.
    pub fixup: Option<fn(&mut [u8])>,
    /// Makes a fresh input from the grammar of the target; when given, it is used on one draw
    /// in two instead of mutating a kept input.
    pub generate: Option<fn(&mut Rng) -> Vec<u8>>,
    /// Most bytes one thread may hold while it runs one input.
    pub alloc_cap: u64,
}

/// The random number generator of a run, seeded once and shared by the mutation steps.
pub struct Rng(fastrand::Rng);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.0.usize(..n)
        }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn u32(&mut self) -> u32 {
        self.0.u32(..)
    }
}

/// Seconds each harness runs for, from `DARKROOM_FUZZ_SECS`.
pub fn budget() -> Duration {
    let secs = std::env::var("DARKROOM_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    std::env::var("DARKROOM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if FUZZING.with(Cell::get) {
                PANICS.with(|p| p.set(p.get() + 1));
                LAST_PANIC.with(|l| *l.borrow_mut() = info.to_string());
            } else {
                default(info);
            }
        }));
    });
}

/// Runs `input` once with panics recorded and the allocation peak measured.
fn execute(run: &mut dyn FnMut(&[u8]) -> Outcome, input: &[u8], cap: u64) -> (Outcome, u64) {
    FUZZING.with(|f| f.set(true));
    PANICS.with(|p| p.set(0));
    crate::alloc::reset_peak();
    let result = panic::catch_unwind(AssertUnwindSafe(|| run(input)));
    let peak = crate::alloc::peak();
    FUZZING.with(|f| f.set(false));
    let caught_inside = PANICS.with(Cell::get);
    let outcome = match result {
        Ok(Ok(label)) if peak > cap => Err(format!(
            "held {peak} bytes at once ({label}); the limits should have refused it"
        )),
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "panicked: {}",
            LAST_PANIC.with(|l| l.borrow().clone())
        )),
    };
    (outcome, caught_inside)
}

fn corpus_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(name)
}

fn crash_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-crashes")
        .join(name)
}

/// The checked-in corpus of a harness, in file-name order.
fn stored_corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(corpus_dir(name)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("a corpus file can be read");
            (p.display().to_string(), bytes)
        })
        .collect()
}

/// Applies one to eight random edits to `input`.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>], h: &Harness) {
    const INTERESTING: &[u32] = &[
        0,
        1,
        2,
        7,
        8,
        16,
        0x7f,
        0x80,
        0xff,
        0x100,
        0x7fff,
        0x8000,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
    ];
    let steps = 1 + rng.below(8);
    for _ in 0..steps {
        let len = input.len();
        match rng.below(12) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = *rng.pick(INTERESTING) as u8;
            }
            2 if len > 1 => {
                // A 16- or 32-bit field, either byte order: image headers are full of them.
                let value = *rng.pick(INTERESTING);
                let wide = rng.chance(2);
                let bytes = match (wide, rng.chance(2)) {
                    (true, true) => value.to_be_bytes().to_vec(),
                    (true, false) => value.to_le_bytes().to_vec(),
                    (false, true) => (value as u16).to_be_bytes().to_vec(),
                    (false, false) => (value as u16).to_le_bytes().to_vec(),
                };
                let i = rng.below(len);
                for (k, b) in bytes.into_iter().enumerate() {
                    if let Some(slot) = input.get_mut(i + k) {
                        *slot = b;
                    }
                }
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let delta = 1 + rng.below(35) as u8;
                input[i] = if rng.chance(2) {
                    input[i].wrapping_add(delta)
                } else {
                    input[i].wrapping_sub(delta)
                };
            }
            4 if len > 1 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                input.drain(at..at + n);
            }
            5 if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(64));
                let chunk = input[from..from + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            6 | 7 if !h.dictionary.is_empty() => {
                let token = rng.pick(&h.dictionary).clone();
                let at = rng.below(len + 1);
                if rng.chance(2) {
                    input.splice(at..at, token);
                } else {
                    let end = (at + token.len()).min(len);
                    input.splice(at..end, token);
                }
            }
            8 if len > 0 => {
                input.truncate(rng.below(len));
            }
            9 if !others.is_empty() => {
                // Splice: the head of this input and the tail of another.
                let other = rng.pick(others);
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            10 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(16);
                let byte = input[i];
                input.splice(i..i, std::iter::repeat_n(byte, n));
            }
            _ if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.u32() as u8;
            }
            _ => input.push(rng.u32() as u8),
        }
    }
    input.truncate(h.max_len);
    if let Some(fix) = h.fixup {
        if rng.chance(2) {
            fix(input);
        }
    }
}

/// Replays the seeds and the stored corpus, then fuzzes for the budget; panics (fails the
/// test) if any input broke a property.
pub fn fuzz(h: Harness, run: &mut dyn FnMut(&[u8]) -> Outcome) {
    install_panic_hook();
    let seed = seed();
    let mut rng = Rng(fastrand::Rng::with_seed(seed));
    let started = Instant::now();
    let mut findings: Vec<(String, String)> = Vec::new();
    let mut outcomes: HashSet<String> = HashSet::new();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut executions: u64 = 0;
    let mut caught_inside: u64 = 0;
    let mut known: u64 = 0;

    let record = |input: &[u8], message: String, findings: &mut Vec<(String, String)>| {
        let dir = crash_dir(h.name);
        std::fs::create_dir_all(&dir).expect("the crash folder can be created");
        let file = dir.join(format!("crash-{}", &blake3::hash(input).to_hex()[..16]));
        std::fs::write(&file, input).expect("a crash input can be written");
        findings.push((file.display().to_string(), message));
    };

    // Regression part: every seed and stored input, always, whatever the budget.
    let stored = stored_corpus(h.name);
    let replay = h
        .seeds
        .iter()
        .map(|s| ("seed".to_owned(), s.clone()))
        .chain(stored);
    for (origin, input) in replay {
        executions += 1;
        let (outcome, caught) = execute(run, &input, h.alloc_cap);
        caught_inside += caught;
        match outcome {
            Ok(label) => {
                known += u64::from(label.starts_with("known:"));
                outcomes.insert(label);
            }
            Err(message) => record(&input, format!("{origin}: {message}"), &mut findings),
        }
        corpus.push(input);
    }
    let replayed = executions;

    let deadline = started + budget();
    while Instant::now() < deadline && findings.len() < MAX_FINDINGS {
        let input = match h.generate {
            Some(make) if rng.chance(2) || corpus.is_empty() => make(&mut rng),
            _ => {
                let mut input = rng.pick(&corpus).clone();
                mutate(&mut rng, &mut input, &corpus, &h);
                input
            }
        };
        executions += 1;
        let (outcome, caught) = execute(run, &input, h.alloc_cap);
        caught_inside += caught;
        match outcome {
            Ok(label) => {
                known += u64::from(label.starts_with("known:"));
                if outcomes.insert(label) && corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
            }
            Err(message) => record(&input, message, &mut findings),
        }
    }

    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {}: {executions} executions ({replayed} replayed) in {secs:.1}s, {} outcomes, \
         {} findings, {known} inputs showing known issues, {caught_inside} panics caught by \
         the code under test, seed {seed}",
        h.name,
        outcomes.len(),
        findings.len(),
    );
    if let Ok(path) = std::env::var("DARKROOM_FUZZ_TOTALS") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the totals file can be opened");
        writeln!(file, "{} {executions} {}", h.name, findings.len())
            .expect("the totals file can be written");
    }
    let report: Vec<String> = findings
        .iter()
        .map(|(file, message)| format!("{file}: {message}"))
        .collect();
    assert!(
        findings.is_empty(),
        "fuzz {} found {} problem(s) (seed {seed}):\n{}",
        h.name,
        findings.len(),
        report.join("\n")
    );
}

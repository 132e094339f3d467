//! What the commands share: exit codes and errors, argument parsers, opening
//! a log for a command that changes it, progress bars, signals.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use durq::{Error, Log, Options};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a command that ran to its end finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: problems found, or a partial failure already reported.
    Problems,
    /// Exit 130: interrupted by a signal.
    Interrupted,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Problems => 1,
            Outcome::Interrupted => 130,
        }
    }
}

/// A failure: printed as one line on stderr, with its exit code.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    msg: String,
    /// stdout was closed by its reader (`| head`): exit quietly.
    broken_pipe: bool,
}

impl CliError {
    /// Exit 2: usage, I/O, locked, not a log; nothing was changed.
    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError {
            code: 2,
            msg: msg.into(),
            broken_pipe: false,
        }
    }

    /// Exit 1: the command stopped midway; what was done before stands.
    pub fn partial(msg: impl Into<String>) -> CliError {
        CliError {
            code: 1,
            msg: msg.into(),
            broken_pipe: false,
        }
    }

    /// A failed write to stdout.
    pub fn stdout(e: io::Error) -> CliError {
        CliError {
            code: 2,
            broken_pipe: e.kind() == io::ErrorKind::BrokenPipe,
            msg: format!("could not write to stdout: {e}"),
        }
    }

    /// Prints the error (unless stdout's reader went away) and returns the
    /// exit code.
    pub fn report(&self) -> ExitCode {
        if self.broken_pipe {
            // Like ripgrep: the reader has what it wanted.
            return ExitCode::SUCCESS;
        }
        let one_line = self.msg.replace('\n', " ");
        eprintln!("durq: error: {one_line}");
        ExitCode::from(self.code)
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> CliError {
        CliError::usage(describe(&e))
    }
}

/// An engine error in words, with a hint where one helps.
pub fn describe(e: &Error) -> String {
    match e {
        Error::Locked { .. } => {
            format!("{e}; wait for it to close (stat, verify, dump and cursor list work meanwhile)")
        }
        Error::UnsupportedVersion { found: 2, path, .. }
            if path
                .parent()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .is_none_or(|n| durq::names::parse_group_dir_name(n).is_none()) =>
        {
            // A format-2 segment where format 2 kept them: in the log
            // directory, not in a group.
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            format!(
                "{e}; this is a log of format version 2: `durq upgrade {}` converts it in place \
                 (see docs/format.md, \"Older formats\")",
                dir.display()
            )
        }
        e if e.is_corruption() => format!(
            "{e}; the log needs `durq recover` (see docs/recovery.md; `durq verify` lists all damage)"
        ),
        Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => e.to_string(),
        _ => e.to_string(),
    }
}

/// Checks that `dir` is an existing log directory, without creating or
/// writing anything.
pub fn require_log(dir: &Path) -> Result<(), CliError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CliError::usage(format!(
            "log directory {} does not exist",
            dir.display()
        ))),
        Err(e) => Err(CliError::usage(format!(
            "cannot access log directory {}: {e}",
            dir.display()
        ))),
        Ok(m) if !m.is_dir() => Err(CliError::usage(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Ok(_) if !durq::inspect::is_log_dir(dir) => Err(CliError::usage(format!(
            "{} is not a durq log: it holds no segment group directory (segment files live in \
             group directories of the log directory: BASE-GROUP.group/BASE-SEQ.seg)",
            dir.display()
        ))),
        Ok(_) => Ok(()),
    }
}

/// Opens an existing log for a command that changes it (locks it). New
/// segments get the size of the newest existing one; no spare segment is
/// prepared in the background (these commands do not append).
pub fn open_existing(dir: &Path) -> Result<Log, CliError> {
    require_log(dir)?;
    open_existing_raw(dir).map_err(CliError::from)
}

/// [`open_existing`] without the directory checks, returning the engine's
/// error as it is.
pub fn open_existing_raw(dir: &Path) -> Result<Log, Error> {
    let size = durq::inspect::existing_segment_size(dir).unwrap_or(durq::DEFAULT_SEGMENT_SIZE);
    Options::new()
        .segment_size(size)
        .background_preallocation(false)
        .open(dir)
}

/// Parses an offset: a non-negative integer.
pub fn parse_offset(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "offset {s:?} is negative; offsets are whole numbers from 0"
        ));
    }
    t.parse::<u64>()
        .map_err(|_| format!("offset {s:?} is not a whole number from 0 to {}", u64::MAX))
}

/// Parses and validates a client name.
pub fn parse_client(s: &str) -> Result<String, String> {
    durq::names::validate_client_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses a size in bytes with an optional K, M or G (binary) suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (digits, mult) = [
        ("kib", 1u64 << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("k", 1 << 10),
        ("m", 1 << 20),
        ("g", 1 << 30),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| lower.strip_suffix(suf).map(|d| (d.trim().to_owned(), *m)))
    .unwrap_or((lower.clone(), 1));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size in bytes (examples: 65536, 64K, 64M, 1G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a duration in seconds (fractions allowed).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(format!(
            "{s:?} is not a number of seconds from 0 to 1000000000"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A byte-counting progress bar on stderr, only if stderr is a terminal.
pub fn progress(total: u64, what: &str) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg:8} [{bar:40}] {bytes}/{total_bytes} {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    Some(pb)
}

/// A record-counting progress bar on stderr, only if stderr is a terminal.
pub fn progress_count(total: u64, what: &str) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg:8} [{bar:40}] {pos}/{len} {eta}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    Some(pb)
}

/// Writes `s` to stdout (which the caller flushes).
pub fn out(w: &mut impl Write, s: &str) -> Result<(), CliError> {
    w.write_all(s.as_bytes()).map_err(CliError::stdout)
}

/// Prints a JSON value and a newline to stdout.
pub fn print_json(v: &serde_json::Value) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut w = stdout.lock();
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::usage(format!("could not encode JSON: {e}")))?;
    out(&mut w, &s)?;
    out(&mut w, "\n")?;
    w.flush().map_err(CliError::stdout)
}

/// Serializes a value for `--json` output.
pub fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signum: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

unsafe extern "C" {
    /// `signal(2)` from the C library the standard library links anyway.
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Makes SIGINT and SIGTERM set a flag (see [`interrupted`]) instead of
/// killing the process, so that a command can stop between two steps.
pub fn catch_interrupts() {
    // SAFETY: `on_signal` only stores to an atomic, which is
    // async-signal-safe; the handler has the C signature signal(2) expects.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

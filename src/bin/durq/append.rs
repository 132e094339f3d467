//! `durq append DIR`: messages from stdin, offsets on stdout once durable.

use std::io::{self, BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{self, SyncSender, TryRecvError};

use durq::Options;

use crate::util::{self, CliError, Outcome};

/// What the stdin reader hands over.
enum Input {
    Message(Vec<u8>),
    /// Message number `index` (from 0) is `len` bytes, more than `max`.
    TooLarge {
        index: u64,
        len: u64,
    },
    Failed(io::Error),
}

pub fn run(
    dir: &Path,
    null: bool,
    batch: usize,
    segment_size: Option<u64>,
) -> Result<Outcome, CliError> {
    if let Ok(m) = std::fs::metadata(dir)
        && !m.is_dir()
    {
        return Err(CliError::usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let is_log = durq::inspect::is_log_dir(dir);
    if !is_log
        && let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        // Checked here, before opening takes the lock (which creates a file).
        return Err(CliError::usage(format!(
            "{} is not a durq log and is not empty; refusing to create a log there",
            dir.display()
        )));
    }
    let size = if is_log {
        let existing = durq::inspect::existing_segment_size(dir);
        match (existing, segment_size) {
            (Some(e), Some(s)) if s != e => {
                return Err(CliError::usage(format!(
                    "--segment-size applies only when creating a log; {} already holds a log \
                     whose segments are {e} bytes",
                    dir.display()
                )));
            }
            (Some(e), _) => e,
            (None, _) => durq::DEFAULT_SEGMENT_SIZE,
        }
    } else {
        segment_size.unwrap_or(durq::DEFAULT_SEGMENT_SIZE)
    };
    // The next segment is prepared in the background once the active one is
    // half full; an invocation that ends first stops that preparation at
    // exit instead of waiting for it.
    let log = Options::new().segment_size(size).open(dir)?;
    let max = log.max_record_size();
    let delim = if null { 0u8 } else { b'\n' };
    let (tx, rx) = mpsc::sync_channel::<Input>(batch.clamp(64, 8192));
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_messages(delim, max, tx))
        .map_err(|e| CliError::usage(format!("could not start the stdin reader: {e}")))?;

    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    let mut appended = 0u64;
    let mut next_index = 0u64;
    let mut line = String::new();
    // `recv` fails at the end of input.
    while let Ok(first) = rx.recv() {
        let mut msgs: Vec<Vec<u8>> = Vec::new();
        let mut stop = None;
        match first {
            Input::Message(m) => msgs.push(m),
            other => stop = Some(other),
        }
        while stop.is_none() && msgs.len() < batch {
            match rx.try_recv() {
                Ok(Input::Message(m)) => msgs.push(m),
                Ok(other) => stop = Some(other),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if !msgs.is_empty() {
            let range = log.append_batch(&msgs).map_err(|e| {
                fail(
                    appended,
                    format!(
                        "appending message {} failed: {}",
                        next_index + 1,
                        util::describe(&e)
                    ),
                )
            })?;
            next_index += msgs.len() as u64;
            appended += msgs.len() as u64;
            line.clear();
            for off in range {
                line.push_str(&off.to_string());
                line.push('\n');
            }
            w.write_all(line.as_bytes()).map_err(CliError::stdout)?;
            w.flush().map_err(CliError::stdout)?;
        }
        match stop {
            None => {}
            Some(Input::TooLarge { index, len }) => {
                return Err(fail(
                    appended,
                    format!(
                        "message {} of stdin is {len} bytes, more than the largest record this log \
                         accepts ({max} bytes); the {appended} message(s) before it were appended \
                         and their offsets printed; nothing after it was appended",
                        index + 1
                    ),
                ));
            }
            Some(Input::Failed(e)) => {
                return Err(fail(
                    appended,
                    format!("reading stdin failed after {appended} message(s) were appended: {e}"),
                ));
            }
            Some(Input::Message(_)) => unreachable!("messages are batched above"),
        }
    }
    Ok(Outcome::Success)
}

/// Exit 1 if something was appended before the failure, 2 if nothing was.
fn fail(appended: u64, msg: String) -> CliError {
    if appended > 0 {
        CliError::partial(msg)
    } else {
        CliError::usage(msg)
    }
}

/// Splits stdin at `delim` (removed), never holding more than `max` bytes
/// of one message in memory.
fn read_messages(delim: u8, max: usize, tx: SyncSender<Input>) {
    let stdin = io::stdin();
    let mut r = stdin.lock();
    let mut cur: Vec<u8> = Vec::new();
    let mut oversize: Option<u64> = None;
    let mut index = 0u64;
    let take = |cur: &mut Vec<u8>, oversize: &mut Option<u64>, index: u64| match oversize.take() {
        Some(len) => Input::TooLarge { index, len },
        None => Input::Message(std::mem::take(cur)),
    };
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Input::Failed(e));
                return;
            }
        };
        if buf.is_empty() {
            if !cur.is_empty() || oversize.is_some() {
                let _ = tx.send(take(&mut cur, &mut oversize, index));
            }
            return;
        }
        let (piece, found, used) = match buf.iter().position(|&b| b == delim) {
            Some(i) => (&buf[..i], true, i + 1),
            None => (buf, false, buf.len()),
        };
        match &mut oversize {
            Some(n) => *n += piece.len() as u64,
            None if cur.len() + piece.len() > max => {
                oversize = Some((cur.len() + piece.len()) as u64);
                cur = Vec::new();
            }
            None => cur.extend_from_slice(piece),
        }
        r.consume(used);
        if found {
            let item = take(&mut cur, &mut oversize, index);
            let stop = !matches!(item, Input::Message(_));
            if tx.send(item).is_err() || stop {
                return;
            }
            index += 1;
        }
    }
}

//! `durq consume DIR --client NAME`: print, flush, then acknowledge.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use durq::{Consumer, Error, Log, Message};

use crate::util::{self, CliError, Outcome};

pub struct Params {
    pub dir: PathBuf,
    pub client: String,
    pub count: Option<u64>,
    pub follow: bool,
    pub timeout: Option<Duration>,
    pub offsets: bool,
    pub null: bool,
    pub batch: usize,
}

/// How often a caught-up `--follow` looks for new messages.
const POLL: Duration = Duration::from_millis(100);

fn open(p: &Params) -> Result<(Log, Consumer), Error> {
    let size = durq::inspect::existing_segment_size(&p.dir).unwrap_or(durq::DEFAULT_SEGMENT_SIZE);
    let log = durq::Options::new()
        .segment_size(size)
        .background_preallocation(false)
        .open(&p.dir)?;
    let consumer = log.consumer(&p.client)?;
    Ok((log, consumer))
}

fn read_hint(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(durq::names::END_HINT_FILE)).ok()?;
    durq::names::decode_end_hint(&bytes)
}

pub fn run(p: Params) -> Result<Outcome, CliError> {
    util::require_log(&p.dir)?;
    util::catch_interrupts();
    // How long to wait for a new message once caught up: `None` forever.
    let idle: Option<Duration> = if p.follow {
        p.timeout
    } else {
        Some(p.timeout.unwrap_or(Duration::ZERO))
    };
    let delim = if p.null { b'\0' } else { b'\n' };
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut session = Some(open(&p)?);
    let mut last_activity = Instant::now();
    loop {
        if util::interrupted() {
            drop(session);
            eprintln!(
                "durq: interrupted after {printed} message(s), each printed and then acknowledged"
            );
            return Ok(Outcome::Interrupted);
        }
        if p.count.is_some_and(|c| printed >= c) {
            return Ok(Outcome::Success);
        }
        let Some((log, consumer)) = &session else {
            unreachable!("a session is open here")
        };
        let want = p
            .count
            .map_or(p.batch as u64, |c| (c - printed).min(p.batch as u64));
        let mut msgs: Vec<Message> = Vec::new();
        let mut failure: Option<Error> = None;
        while (msgs.len() as u64) < want {
            match consumer.next() {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let took = msgs.len();
        if !msgs.is_empty() {
            let mut buf = Vec::new();
            for m in &msgs {
                if p.offsets {
                    buf.extend_from_slice(m.offset().to_string().as_bytes());
                    buf.push(b'\t');
                }
                buf.extend_from_slice(m.payload());
                buf.push(delim);
            }
            // Printed means written and flushed; a failure here drops the
            // messages unacknowledged (they are delivered again).
            w.write_all(&buf).map_err(CliError::stdout)?;
            w.flush().map_err(CliError::stdout)?;
            let n = msgs.len() as u64;
            let end = msgs.last().map_or(0, |m| m.offset() + 1);
            let acked = if msgs.len() == 1 {
                msgs.pop().map_or(Ok(()), |m| m.ack())
            } else {
                let r = consumer.ack_until(end);
                drop(msgs);
                r
            };
            acked.map_err(|e| {
                CliError::partial(format!(
                    "acknowledging offset {} failed after it was printed (it will be delivered \
                     again): {}",
                    end - 1,
                    util::describe(&e)
                ))
            })?;
            printed += n;
            last_activity = Instant::now();
        }
        if let Some(e) = failure {
            let hint = match &e {
                Error::Truncated { .. } => format!(
                    "; move the client with `durq cursor set {} {} --to-start`",
                    p.dir.display(),
                    p.client
                ),
                _ => String::new(),
            };
            let msg = format!(
                "reading the next message for client {} failed after {printed} message(s): {}{hint}",
                p.client,
                util::describe(&e)
            );
            return Err(if printed > 0 || e.is_corruption() {
                CliError::partial(msg)
            } else {
                CliError::usage(msg)
            });
        }
        if took > 0 {
            continue;
        }
        // Caught up.
        let deadline = match idle {
            Some(d) if d.is_zero() => return Ok(Outcome::Success),
            Some(d) => Some(last_activity + d),
            None => None,
        };
        let end_seen = log.end();
        // Release the log while waiting, so that other processes can
        // append; come back when the durable end they publish moves.
        drop(session.take());
        loop {
            if util::interrupted() {
                eprintln!(
                    "durq: interrupted after {printed} message(s), each printed and then acknowledged"
                );
                return Ok(Outcome::Interrupted);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Outcome::Success);
            }
            let nap = deadline.map_or(POLL, |d| (d - now).min(POLL));
            std::thread::sleep(nap);
            if read_hint(&p.dir).is_none_or(|h| h <= end_seen) {
                continue;
            }
            match open(&p) {
                Ok(s) => {
                    session = Some(s);
                    break;
                }
                Err(Error::Locked { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

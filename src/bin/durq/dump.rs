//! `durq dump DIR`: records with their offsets.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use durq::inspect::{Access, Entry, LogView};
use serde_json::json;

use crate::DumpFormat;
use crate::util::{self, CliError, Outcome};

/// Escapes a payload for one line of text: valid UTF-8 is kept except for
/// control characters and backslashes; other bytes become `\xNN`.
pub fn escape(payload: &[u8]) -> String {
    let mut s = String::with_capacity(payload.len());
    for chunk in payload.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                '\r' => s.push_str("\\r"),
                '\\' => s.push_str("\\\\"),
                c if c.is_control() => s.push_str(&format!("\\u{{{:04x}}}", c as u32)),
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

fn hex(payload: &[u8]) -> String {
    let mut s = String::with_capacity(payload.len() * 2);
    for b in payload {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn line(e: &Entry, format: DumpFormat) -> String {
    match (format, &e.payload) {
        (DumpFormat::Json, p) => {
            let (encoding, payload) = match p {
                None => (None, None),
                Some(p) => match std::str::from_utf8(p) {
                    Ok(s) => (Some("utf8"), Some(s.to_owned())),
                    Err(_) => (Some("hex"), Some(hex(p))),
                },
            };
            let v = json!({
                "offset": e.offset,
                "lost": p.is_none(),
                "len": p.as_ref().map(|p| p.len()),
                "encoding": encoding,
                "payload": payload,
                "segment": e.segment,
                "position": e.position,
            });
            format!("{v}\n")
        }
        (_, None) => format!("{}\t(lost)\n", e.offset),
        (DumpFormat::Text, Some(p)) => format!("{}\t{}\n", e.offset, escape(p)),
        (DumpFormat::Hex, Some(p)) => format!("{}\t{}\t{}\n", e.offset, p.len(), hex(p)),
    }
}

pub fn run(
    dir: &Path,
    from: Option<u64>,
    count: Option<u64>,
    format: DumpFormat,
) -> Result<Outcome, CliError> {
    util::require_log(dir)?;
    let view = LogView::open(dir, Access::ReadOnly)?;
    let start = from.unwrap_or(0).max(view.first_offset());
    let available = view.end_offset().saturating_sub(start);
    let total = count.map_or(available, |c| c.min(available));
    let pb = if total > 100_000 {
        util::progress_count(total, "dump")
    } else {
        None
    };
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut failure = None;
    for item in view.records(start).take(total as usize) {
        match item {
            Ok(e) => {
                w.write_all(line(&e, format).as_bytes())
                    .map_err(CliError::stdout)?;
                printed += 1;
                if let Some(pb) = &pb
                    && printed.is_multiple_of(4096)
                {
                    pb.set_position(printed);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    w.flush().map_err(CliError::stdout)?;
    if let Some(e) = failure {
        return Err(CliError::partial(format!(
            "stopped after {printed} record(s): {}",
            util::describe(&e)
        )));
    }
    Ok(Outcome::Success)
}

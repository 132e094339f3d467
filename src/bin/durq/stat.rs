//! `durq stat DIR`: segments, offsets, sizes, clients, recovery report.

use std::path::Path;

use durq::inspect::{Access, LogView};
use serde_json::json;

use crate::recover::report_lines;
use crate::util::{self, CliError, Outcome};

pub fn run(dir: &Path, json: bool) -> Result<Outcome, CliError> {
    util::require_log(dir)?;
    let view = LogView::open(dir, Access::ReadOnly)?;
    let segments = view.segments();
    let (clients, clients_error) = match view.clients() {
        Ok(c) => (c, None),
        Err(e) => (Vec::new(), Some(util::describe(&e))),
    };
    let first = view.first_offset();
    let end = view.end_offset();
    if json {
        util::print_json(&json!({
            "dir": view.dir(),
            "writer_active": view.writer_active(),
            "end_hint": view.end_hint(),
            "first_offset": first,
            "end_offset": end,
            "records": end - first,
            "segment_bytes": view.segment_bytes(),
            "segments": util::to_json(&segments),
            "clients": util::to_json(&clients),
            "clients_error": clients_error,
            "recovery": view.report().map(util::to_json),
            "recovery_error": view.recovery_error(),
            "salvage_files": view.salvage_files(),
            "notes": view.notes(),
        }))?;
        return Ok(Outcome::Success);
    }
    let mut t = String::new();
    let state = if view.writer_active() {
        "open by another process: showing records up to the durable end it published"
    } else {
        "not open by any process"
    };
    t.push_str(&format!("log:       {} ({state})\n", view.dir().display()));
    t.push_str(&format!(
        "offsets:   {first}..{end} ({} records)\n",
        end - first
    ));
    t.push_str(&format!(
        "segments:  {} file(s), {} bytes\n",
        segments.len(),
        view.segment_bytes()
    ));
    for s in &segments {
        // Relative to the log directory: the group directory and the file.
        let name = s
            .path
            .strip_prefix(view.dir())
            .unwrap_or(&s.path)
            .display()
            .to_string();
        t.push_str(&format!(
            "  {name}  seq {}  offsets {}..{}  {} bytes\n",
            s.seq, s.first_offset, s.end_offset, s.size_bytes
        ));
    }
    t.push_str(&format!("clients:   {}\n", clients.len()));
    for c in &clients {
        match (&c.acked, &c.lag, &c.error) {
            (Some(a), Some(l), _) => t.push_str(&format!("  {}  acked {a}  lag {l}\n", c.name)),
            (_, _, Some(e)) => t.push_str(&format!("  {}  UNREADABLE: {e}\n", c.name)),
            _ => {}
        }
    }
    if let Some(e) = clients_error {
        t.push_str(&format!("  clients could not be read: {e}\n"));
    }
    if view.writer_active() {
        t.push_str("recovery:  done by the process that has the log open\n");
    } else if let Some(e) = view.recovery_error() {
        t.push_str(&format!(
            "recovery:  opening the log would FAIL: {e}; see `durq verify` and `durq recover`\n"
        ));
    } else if let Some(r) = view.report() {
        let lines = report_lines(r, true);
        if lines.is_empty() {
            t.push_str("recovery:  clean (opening the log would repair nothing)\n");
        } else {
            t.push_str("recovery:  dry run, what opening the log would do:\n");
            for l in lines {
                t.push_str(&format!("  {l}\n"));
            }
        }
    }
    if view.salvage_files() > 0 {
        t.push_str(&format!(
            "salvage:   {} file(s) set aside in {}\n",
            view.salvage_files(),
            dir.join(durq::inspect::SALVAGE_DIR).display()
        ));
    }
    for n in view.notes() {
        t.push_str(&format!("note:      {n}\n"));
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    util::out(&mut w, &t)?;
    std::io::Write::flush(&mut w).map_err(CliError::stdout)?;
    Ok(Outcome::Success)
}

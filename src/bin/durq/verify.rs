//! `durq verify DIR`: every record, checksum and cursor.

use std::path::Path;

use durq::inspect::{Access, LogView};
use serde_json::json;

use crate::util::{self, CliError, Outcome};

pub fn run(dir: &Path, json: bool) -> Result<Outcome, CliError> {
    util::require_log(dir)?;
    let view = LogView::open(dir, Access::ReadOnly)?;
    let pb = util::progress(view.segment_bytes(), "verify");
    let a = view.analyze(&mut |n| {
        if let Some(pb) = &pb {
            pb.inc(n);
        }
    });
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let outcome = if a.is_sound() {
        Outcome::Success
    } else {
        Outcome::Problems
    };
    if json {
        util::print_json(&json!({
            "dir": a.dir,
            "sound": a.is_sound(),
            "writer_active": a.writer_active,
            "first_offset": a.first_offset,
            "end_offset": a.end_offset,
            "segments_checked": a.segments.len(),
            "records_checked": a.records,
            "bytes_checked": a.bytes,
            "clients_checked": a.clients_checked,
            "problems": util::to_json(&a.problems),
            "notes": util::to_json(&a.notes),
            "segments": util::to_json(&a.segments),
        }))?;
        return Ok(outcome);
    }
    let mut t = String::new();
    for p in &a.problems {
        t.push_str(&format!("problem: {p}\n"));
    }
    for n in &a.notes {
        t.push_str(&format!("note: {n}\n"));
    }
    let verdict = if a.is_sound() {
        "sound".to_owned()
    } else {
        format!("{} problem(s) found", a.problems.len())
    };
    let scope = if a.writer_active {
        format!(
            " (open by another process: checked up to its durable end {})",
            a.end_offset
        )
    } else {
        String::new()
    };
    t.push_str(&format!(
        "verify: {}: {} segment(s), {} record(s) (offsets {}..{}), {} client(s) checked{scope}: {verdict}\n",
        a.dir.display(),
        a.segments.len(),
        a.records,
        a.first_offset,
        a.end_offset,
        a.clients_checked,
    ));
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    util::out(&mut w, &t)?;
    std::io::Write::flush(&mut w).map_err(CliError::stdout)?;
    Ok(outcome)
}

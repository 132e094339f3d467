//! `durq recover DIR`: the power-loss runbook.

use std::path::Path;

use durq::RecoveryReport;
use durq::inspect::{Access, LogView, SALVAGE_DIR, SalvageAction, SalvageReport};
use durq::storage::FsStorage;
use serde_json::json;

use crate::util::{self, CliError, Outcome};

/// The lines that describe what open repaired (or, in a dry run, would).
pub fn report_lines(r: &RecoveryReport, dry_run: bool) -> Vec<String> {
    let mut out = Vec::new();
    if r.created {
        out.push("created: a new, empty log".to_owned());
    }
    for t in &r.removed_temp_files {
        let verb = if dry_run { "would remove" } else { "removed" };
        let name = t.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let what = if durq::names::parse_group_dir_name(name).is_some() {
            "an empty segment group left by an interrupted rollover or retention step"
        } else if name.ends_with(durq::cursor::JOURNAL_SUFFIX) {
            "the journal of a client registration that never finished"
        } else {
            "an unfinished segment or cursor replacement"
        };
        out.push(format!(
            "leftover: {verb} {} ({what}; nothing refers to it)",
            t.display()
        ));
    }
    if let Some(t) = &r.torn_tail {
        let verb = if dry_run { "would zero" } else { "zeroed" };
        out.push(format!(
            "torn-tail: {} at byte {}: {}; {verb} {} byte(s) holding the unfinished last write \
             ({} complete record(s) discarded with it, never acknowledged); the log ends at offset {}",
            t.segment.display(),
            t.position,
            t.reason,
            t.bytes_zeroed,
            t.records_discarded,
            t.offset
        ));
    }
    for c in &r.cursors {
        out.push(format!(
            "cursor: client {} ({}): {}",
            c.client,
            c.file.display(),
            c.action
        ));
    }
    for u in &r.unknown_files {
        if u.file_name().is_some_and(|n| n == SALVAGE_DIR) {
            continue;
        }
        out.push(format!(
            "unknown: {} (not a durq file; left alone)",
            u.display()
        ));
    }
    out
}

fn action_line(a: &SalvageAction, executed: bool) -> String {
    let list: Vec<String> = a.lost.iter().map(|s| s.to_string()).collect();
    let lost = match a.lost_records {
        0 => "no offset lost".to_owned(),
        1 => format!(
            "lost offset {} (now a placeholder that consumers skip)",
            list.join(", ")
        ),
        n => format!(
            "lost offsets {} ({n} records, each now a placeholder that consumers skip)",
            list.join(", ")
        ),
    };
    let torn = if a.torn_records_dropped > 0 {
        format!(
            "; {} record(s) of the unfinished last write dropped with the torn tail",
            a.torn_records_dropped
        )
    } else {
        String::new()
    };
    match (a.kind, executed) {
        ("recreated", true) => format!(
            "salvaged: recreated missing segment {}: {lost}",
            a.segment.display()
        ),
        ("recreated", false) => format!(
            "would salvage: recreate missing segment {}: {lost}",
            a.segment.display()
        ),
        (_, true) => format!(
            "salvaged: {}: kept {} record(s) at their offsets, {lost}{torn}; damaged file copied to {}",
            a.segment.display(),
            a.kept_records,
            a.set_aside
                .as_ref()
                .map_or_else(|| "?".to_owned(), |p| p.display().to_string())
        ),
        (_, false) => format!(
            "would salvage: {}: keep {} record(s) at their offsets, {lost}{torn}; copy the damaged file into {}/",
            a.segment.display(),
            a.kept_records,
            SALVAGE_DIR
        ),
    }
}

/// Refuses a log of format version 2, or one whose upgrade to the current
/// format was interrupted: recovery would take the segments still of
/// format 2 for foreign files. `durq upgrade` converts it.
fn refuse_format2(dir: &Path) -> Result<(), CliError> {
    match durq::upgrade::check(&FsStorage, dir) {
        Ok(r) if r.resumed => Err(CliError::usage(format!(
            "an upgrade of the log in {d} to format version {v} was interrupted (some of its \
             segments still lie directly in the log directory, as format {old}); `durq recover` \
             works only once it is finished: run `durq upgrade {d}` again (nothing was changed)",
            d = dir.display(),
            v = durq::upgrade::TO_VERSION,
            old = durq::upgrade::FROM_VERSION,
        ))),
        Ok(r) if !r.already_current => Err(CliError::usage(format!(
            "{d} holds a log of format version {old}; `durq recover` works on format {v} only: \
             run `durq upgrade {d}` first (nothing was changed)",
            d = dir.display(),
            v = durq::upgrade::TO_VERSION,
            old = durq::upgrade::FROM_VERSION,
        ))),
        // A current log, or one the upgrade would refuse: recovery reports
        // what it finds.
        _ => Ok(()),
    }
}

pub fn run(dir: &Path, dry_run: bool, salvage: bool, json: bool) -> Result<Outcome, CliError> {
    util::require_log(dir)?;
    refuse_format2(dir)?;
    let access = if dry_run {
        Access::ReadOnly
    } else {
        Access::Exclusive
    };
    let view = LogView::open(dir, access)?;
    if view.writer_active() {
        return Err(durq::Error::Locked {
            dir: dir.to_owned(),
        }
        .into());
    }
    let pb = util::progress(view.segment_bytes(), "recover");
    let analysis = view.analyze(&mut |n| {
        if let Some(pb) = &pb {
            pb.inc(n);
        }
    });
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let execute = salvage && !dry_run;
    let plan: Option<SalvageReport> = if analysis.needs_salvage() {
        Some(view.salvage(&analysis, execute).map_err(|e| {
            CliError::partial(format!(
                "salvage failed (the log is as it was, or with some segments already rebuilt and \
                 reported in {}): {}",
                dir.join(SALVAGE_DIR).display(),
                util::describe(&e)
            ))
        })?)
    } else {
        None
    };
    let (report, open_error) = if dry_run {
        (
            view.report().cloned(),
            view.recovery_error().map(str::to_owned),
        )
    } else {
        drop(view);
        match util::open_existing_raw(dir) {
            Ok(log) => (Some(log.recovery_report().clone()), None),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    let damage_left = match &plan {
        None => false,
        Some(p) => !p.executed || !p.unsalvageable.is_empty(),
    } || (!dry_run && open_error.is_some());
    let sound = !damage_left && open_error.is_none();
    let outcome = if sound {
        Outcome::Success
    } else {
        Outcome::Problems
    };

    if json {
        util::print_json(&json!({
            "dir": dir,
            "dry_run": dry_run,
            "salvage": salvage,
            "segments_checked": analysis.segments.len(),
            "records_checked": analysis.records,
            "damage": util::to_json(&analysis.problems),
            "salvage_plan": plan.as_ref().map(util::to_json),
            "report": report.as_ref().map(util::to_json),
            "open_error": open_error,
            "first_offset": report.as_ref().map(|r| r.first_offset),
            "end_offset": report.as_ref().map(|r| r.end_offset),
            "sound": sound,
        }))?;
        return Ok(outcome);
    }

    let mut t = String::new();
    t.push_str(&format!(
        "recover: {}{}\n",
        dir.display(),
        if dry_run {
            " (dry run: nothing is changed)"
        } else {
            ""
        }
    ));
    t.push_str(&format!(
        "scanned: {} segment(s), {} record(s), {} byte(s), {} client(s)\n",
        analysis.segments.len(),
        analysis.records,
        analysis.bytes,
        analysis.clients_checked
    ));
    for p in &analysis.problems {
        t.push_str(&format!("damage: {p}\n"));
    }
    if let Some(p) = &plan {
        for a in &p.actions {
            t.push_str(&format!("{}\n", action_line(a, p.executed)));
        }
        for u in &p.unsalvageable {
            t.push_str(&format!("unsalvageable: {u}\n"));
        }
    }
    if let Some(r) = &report {
        for l in report_lines(r, dry_run) {
            t.push_str(&format!("{l}\n"));
        }
    }
    if let Some(e) = &open_error {
        let verb = if dry_run { "would fail" } else { "failed" };
        t.push_str(&format!("open: {verb}: {e}\n"));
    }
    let range = report
        .as_ref()
        .map(|r| format!("offsets {}..{}", r.first_offset, r.end_offset))
        .unwrap_or_else(|| "its records".to_owned());
    let repairs = report
        .as_ref()
        .is_some_and(|r| !report_lines(r, dry_run).is_empty());
    let result = match (&plan, dry_run) {
        (Some(p), true) if !p.actions.is_empty() || !p.unsalvageable.is_empty() => format!(
            "damage found; nothing was changed. `durq recover {} --salvage` would keep every \
             readable record and set the damage aside as listed above",
            dir.display()
        ),
        (Some(p), false) if !p.executed && open_error.is_some() => format!(
            "damage remains and the log cannot be opened until it is salvaged; run `durq recover \
             {} --salvage` to keep every readable record and set the damage aside",
            dir.display()
        ),
        (Some(p), false) if !p.executed => format!(
            "damage remains (the routine repairs listed above were made, and the log opens); run \
             `durq recover {} --salvage` to keep every readable record and set the damage aside",
            dir.display()
        ),
        (Some(p), false) if !p.unsalvageable.is_empty() => {
            "salvage done where possible; damage listed as unsalvageable remains (see docs/recovery.md)"
                .to_owned()
        }
        _ if open_error.is_some() => "the log cannot be opened; see the lines above".to_owned(),
        (Some(_), false) => format!("salvaged: the log is sound and holds {range}"),
        (_, true) if repairs => format!(
            "dry run: the repairs above would be made (routine after a crash); the log would hold {range}"
        ),
        (_, true) => format!("clean: nothing to repair; the log holds {range}"),
        (_, false) if repairs => format!("repaired: the log is sound and holds {range}"),
        (_, false) => format!("clean: nothing to repair; the log holds {range}"),
    };
    t.push_str(&format!("result: {result}\n"));
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    util::out(&mut w, &t)?;
    std::io::Write::flush(&mut w).map_err(CliError::stdout)?;
    Ok(outcome)
}

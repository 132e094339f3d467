//! `durq upgrade DIR`: convert a log of format version 2 into the current
//! format, in place.

use std::path::Path;

use durq::storage::FsStorage;
use durq::upgrade::{self, FROM_VERSION, TO_VERSION, UpgradeReport};

use crate::util::{self, CliError, Outcome};

/// The lines that describe what the upgrade did (or, in a dry run, would).
fn report_lines(r: &UpgradeReport) -> Vec<String> {
    let dry = r.dry_run;
    let mut out = Vec::new();
    for t in &r.removed_temp_files {
        out.push(format!(
            "leftover: {} {} (an unfinished copy or spare segment; nothing refers to it)",
            if dry { "would remove" } else { "removed" },
            t.display()
        ));
    }
    if r.resumed {
        out.push(format!(
            "resumed: an earlier upgrade of this log was interrupted; {} segment(s) were already \
             in their groups",
            r.already_converted
        ));
    }
    for c in &r.completed_copies {
        out.push(format!(
            "completed: {} is a complete copy left by the interrupted upgrade; {} its \
             format-{FROM_VERSION} original",
            c.display(),
            if dry { "would remove" } else { "removed" }
        ));
    }
    for c in &r.replaced_copies {
        out.push(format!(
            "replaced: {} {} from its format-{FROM_VERSION} original (the interrupted upgrade's \
             copy is not known complete)",
            c.display(),
            if dry {
                "would be copied again"
            } else {
                "copied again"
            }
        ));
    }
    for g in &r.groups_created {
        out.push(format!(
            "group: {} {}",
            if dry { "would make" } else { "made" },
            g.display()
        ));
    }
    out.push(format!(
        "converted: {} {} segment(s) ({} bytes) into group directories",
        if dry { "would copy" } else { "copied" },
        r.converted,
        r.bytes_copied
    ));
    out
}

pub fn run(dir: &Path, dry_run: bool, json: bool) -> Result<Outcome, CliError> {
    util::require_log(dir)?;
    // Everything the upgrade refuses is refused here, before anything is
    // changed (the lock aside, which `upgrade` takes).
    let plan = upgrade::check(&FsStorage, dir).map_err(|e| {
        CliError::usage(format!(
            "upgrade refused, nothing was changed: {}",
            refusal(&e)
        ))
    })?;
    // A log already of the current format goes through `upgrade` too: it
    // makes sure an earlier, killed run's last steps are on disk.
    let report = if dry_run {
        plan
    } else {
        let pb = util::progress(plan.bytes_copied, "upgrade");
        let done = upgrade::upgrade_with_progress(&FsStorage, dir, &mut |n| {
            if let Some(pb) = &pb {
                pb.inc(n);
            }
        });
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        match done {
            Ok(r) => r,
            Err(e @ durq::Error::Locked { .. }) => return Err(e.into()),
            Err(e) => {
                return Err(CliError::partial(format!(
                    "upgrade stopped: {e}. What was done is safe (every segment is in its \
                     format-{FROM_VERSION} place or durably in its group); run `durq upgrade {}` \
                     again to finish",
                    dir.display()
                )));
            }
        }
    };

    if json {
        util::print_json(&util::to_json(&report))?;
        return Ok(Outcome::Success);
    }
    let mut t = format!(
        "upgrade: {} (format version {FROM_VERSION} -> {TO_VERSION}){}\n",
        dir.display(),
        if dry_run {
            " (dry run: nothing is changed)"
        } else {
            ""
        }
    );
    if report.already_current {
        t.push_str(&format!(
            "result: already of format version {TO_VERSION}: nothing to do\n"
        ));
    } else {
        for l in report_lines(&report) {
            t.push_str(&format!("{l}\n"));
        }
        let what = format!(
            "{} segment(s) in {} group(s), from offset {}",
            report.segments, report.groups, report.first_offset
        );
        let result = if dry_run {
            format!("dry run: the log would be of format version {TO_VERSION}: {what}")
        } else {
            format!(
                "upgraded: the log is of format version {TO_VERSION}: {what}. Records were \
                 copied byte for byte, unchecked: `durq verify {}` checks them",
                dir.display()
            )
        };
        t.push_str(&format!("result: {result}\n"));
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    util::out(&mut w, &t)?;
    std::io::Write::flush(&mut w).map_err(CliError::stdout)?;
    Ok(Outcome::Success)
}

/// Why the upgrade refused, in words (without the `durq recover` hint that
/// damage in a current log gets: `recover` does not read format 2).
fn refusal(e: &durq::Error) -> String {
    if e.is_corruption() {
        format!(
            "{e}; the format-{FROM_VERSION} log must be sound enough to convert (segments \
             consecutive, headers readable): restore or repair it with the durq release that \
             wrote it (see docs/format.md, \"Older formats\")"
        )
    } else {
        util::describe(e)
    }
}

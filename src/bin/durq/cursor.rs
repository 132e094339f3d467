//! `durq cursor list|set|delete`: client positions.

use std::path::Path;

use durq::inspect::{Access, LogView};
use serde_json::json;

use crate::util::{self, CliError, Outcome};

pub fn list(dir: &Path, json: bool) -> Result<Outcome, CliError> {
    util::require_log(dir)?;
    let view = LogView::open(dir, Access::ReadOnly)?;
    let clients = view.clients()?;
    if json {
        util::print_json(&json!({
            "dir": view.dir(),
            "writer_active": view.writer_active(),
            "first_offset": view.first_offset(),
            "end_offset": view.end_offset(),
            "clients": util::to_json(&clients),
        }))?;
        return Ok(Outcome::Success);
    }
    let mut t = String::new();
    for c in &clients {
        match (c.acked, c.lag) {
            (Some(a), Some(l)) => t.push_str(&format!("{}\t{a}\t{l}\n", c.name)),
            _ => {
                t.push_str(&format!("{}\t-\t-\n", c.name));
                eprintln!(
                    "durq: warning: client {}: {}",
                    c.name,
                    c.error.as_deref().unwrap_or("cursor unreadable")
                );
            }
        }
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    util::out(&mut w, &t)?;
    std::io::Write::flush(&mut w).map_err(CliError::stdout)?;
    Ok(Outcome::Success)
}

/// Where `cursor set` moves a client.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Offset(u64),
    Start,
    End,
}

pub fn set(dir: &Path, client: &str, target: Target, create: bool) -> Result<Outcome, CliError> {
    let log = util::open_existing(dir)?;
    let exists = log.consumers()?.iter().any(|c| c.name == client);
    if !exists {
        if let Some(broken) = log
            .recovery_report()
            .cursors
            .iter()
            .find(|c| c.client == client && c.action.contains("unusable"))
        {
            return Err(CliError::usage(format!(
                "the cursor of client {client} is unreadable ({}); remove it with `durq cursor \
                 delete {} {client}`, then register it again with `durq cursor set {} {client} \
                 OFFSET --create`",
                broken.file.display(),
                dir.display(),
                dir.display()
            )));
        }
        if !create {
            return Err(CliError::usage(format!(
                "no client named {client} in {}; add --create to register it",
                dir.display()
            )));
        }
    }
    let (first, end) = (log.first_offset(), log.end());
    let offset = match target {
        Target::Start => first,
        Target::End => end,
        Target::Offset(o) if o > end => {
            return Err(CliError::usage(format!(
                "offset {o} is past the log's end {end} (the next offset to be written); use \
                 --to-end to skip everything present"
            )));
        }
        Target::Offset(o) if o < first => {
            return Err(CliError::usage(format!(
                "offset {o} is older than the first retained offset {first}; use --to-start"
            )));
        }
        Target::Offset(o) => o,
    };
    let consumer = log.consumer(client)?;
    let before = consumer.acked();
    consumer.seek(offset)?;
    let msg = if exists {
        format!("client {client}: position {before} -> {offset}\n")
    } else {
        format!("client {client}: registered at position {offset}\n")
    };
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    util::out(&mut w, &msg)?;
    std::io::Write::flush(&mut w).map_err(CliError::stdout)?;
    Ok(Outcome::Success)
}

pub fn delete(dir: &Path, client: &str) -> Result<Outcome, CliError> {
    let log = util::open_existing(dir)?;
    if !log.remove_consumer(client)? {
        return Err(CliError::usage(format!(
            "no client named {client} in {}",
            dir.display()
        )));
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    util::out(&mut w, &format!("client {client}: deleted\n"))?;
    std::io::Write::flush(&mut w).map_err(CliError::stdout)?;
    Ok(Outcome::Success)
}

//! `durq`: the command-line tool for durq logs. See `docs/cli.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod append;
mod bench;
mod consume;
mod cursor;
mod dump;
mod recover;
mod stat;
mod upgrade;
mod util;
mod verify;

use util::{CliError, Outcome};

const EXIT_CODES: &str = "\
Exit codes:
  0    success (verify: the log is sound)
  1    problems found (verify, recover) or partial failure: the command
       stopped midway (a damaged record, a record too large); what was
       done before is reported
  2    usage error, I/O error, locked log, missing or non-durq directory,
       bad client name or offset; nothing was changed
  130  interrupted by Ctrl-C (SIGINT) or SIGTERM: consume acknowledged
       nothing it did not print; bench removed its scratch directory";

const TOP_HELP: &str = "\
Examples:
  seq 1 5 | durq append data          # prints offsets 0..4 once durable
  durq consume data --client billing  # prints and acknowledges them
  durq stat data --json
  durq verify data && echo sound
  durq recover data --dry-run         # after a power cut: what would be repaired

Errors go to stderr, one line each: what went wrong and where.
Full documentation: docs/cli.md and docs/recovery.md.";

/// durq: a durable, segmented append-only log that is also a FIFO queue with
/// named clients.
#[derive(Debug, Parser)]
#[command(
    name = "durq",
    version,
    about,
    after_help = format!("{TOP_HELP}\n\n{EXIT_CODES}"),
    arg_required_else_help = true,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append messages read from stdin, printing each offset once durable.
    #[command(after_help = format!("\
A message is one line of stdin (its newline removed), or with -0 one
NUL-terminated piece. Messages are grouped into durable writes of up to
--batch messages, taking only what stdin already offers (never waiting to
fill a batch). Each offset is printed, one per line, only after its write
was fdatasync'ed; stdout is flushed after every durable write. A killed
`durq append` may leave unprinted messages in the log or not; every printed
offset is durable.

Creates DIR and an empty log if DIR does not exist or is empty; an
existing non-empty directory that is not a durq log is refused.

Examples:
  seq 1 100000 | durq append data
  printf 'a\\0b\\0' | durq append -0 data
  tail -F app.log | durq append --batch 1 data   # one fsync per line

{EXIT_CODES}"))]
    Append(AppendArgs),

    /// Print a client's next messages, acknowledging each once printed.
    #[command(after_help = format!("\
Each message is written to stdout followed by a newline (NUL with -0) and
flushed; only then is it acknowledged (durably). A kill redelivers at most
the last printed message (with --batch N, at most the last N). Messages
lost to damage and set aside by `durq recover --salvage` are skipped.

Without --follow, exits once the client has caught up with the durable end
(waiting up to --timeout seconds for more first). With --follow, waits for
new messages; while caught up it releases the log so that other processes
(`durq append`) can write, and picks up what they append.

A new client name is registered at the oldest retained message.

Examples:
  durq consume data --client billing
  durq consume data --client billing --count 10 --offsets
  durq consume data --client billing --follow --timeout 60

{EXIT_CODES}"))]
    Consume(ConsumeArgs),

    /// Show segments, offsets, sizes, clients and their lag, and the
    /// recovery report.
    #[command(after_help = format!("\
Read-only; works while another process has the log open (it then shows
the state up to the durable end that process published). When no process
has the log open, the recovery report is a dry run: what opening the log
would repair.

Examples:
  durq stat data
  durq stat data --json | jq .clients

{EXIT_CODES}"))]
    Stat(StatArgs),

    /// Check every record, checksum and cursor file; exit 0 only if all is
    /// sound.
    #[command(after_help = format!("\
Reads every record of every segment and every cursor and journal file and
checks every checksum. Lists every segment group directory
(DIR/BASE-GROUP.group/, 64 segments each) and checks that each segment is
where the layout puts it: no group or segment missing, none misplaced, no
foreign file among them. Each problem is printed with its file and byte
position, and the offsets it makes unreadable. Notes (a torn tail, leftover
temporary files) are things that opening the log repairs by itself; they
do not make the log unsound. Read-only; works while another process has
the log open (records past its durable end are not checked).

Examples:
  durq verify data
  durq verify data --json | jq '.problems[]'

{EXIT_CODES}"))]
    Verify(VerifyArgs),

    /// The power-loss runbook: repair what open repairs and report it;
    /// salvage damage only with --salvage.
    #[command(after_help = format!("\
Reads the whole log like `verify`, then does what opening the log does:
removes leftover temporary files, cuts a torn tail (the unfinished last
write, never acknowledged), clamps cursors past the end, reporting each
repair on its own line. Damage that is not a torn tail (a bad checksum
in the middle, a missing segment) is reported with the offsets it makes
unreadable and left alone, unless --salvage is given: then every readable
record is kept at its offset, a placeholder marks each lost offset
(consumers skip it), and the damaged file is copied into DIR/salvage/.

The log must not be open elsewhere. See docs/recovery.md.

Examples:
  durq recover data --dry-run     # report only, change nothing
  durq recover data
  durq recover data --salvage

{EXIT_CODES}"))]
    Recover(RecoverArgs),

    /// Convert a log of format version 2 into the current format (3), in
    /// place.
    #[command(after_help = format!("\
Format 2 kept segment files (BASE-SEQ.seg) directly in the log directory;
format 3 keeps them in group directories (BASE-GROUP.group/BASE-SEQ.seg).
Each segment is copied into its group with its header's version set to 3
(records are copied byte for byte), the copy is synced, and only then is
the original removed: a crash or power loss at any point loses nothing,
and running the command again finishes an interrupted upgrade (opening
the log refuses until then). Clients keep their positions.

Checked first, changing nothing if it fails: segment numbers consecutive,
every header readable, of version 2, matching its file name. Records are
not checked: run `durq verify DIR` afterwards (`durq recover` handles
damage in the converted log). A log already of format 3 is left alone
(exit 0). The log must not be open elsewhere; needs free space for one
segment. See docs/format.md (Older formats).

Examples:
  durq upgrade data --dry-run     # what would be done; change nothing
  durq upgrade data && durq verify data

{EXIT_CODES}"))]
    Upgrade(UpgradeArgs),

    /// Print records with their offsets.
    #[command(after_help = format!("\
Formats (one record per line):
  text  OFFSET<TAB>PAYLOAD, bytes outside printable ASCII escaped (\\n, \\xNN)
  hex   OFFSET<TAB>LENGTH<TAB>PAYLOAD-AS-HEX
  json  {{\"offset\":N,\"lost\":false,\"len\":N,\"encoding\":\"utf8\"|\"hex\",\"payload\":\"...\",
         \"segment\":\"FILE\",\"position\":N}}
A placeholder for a record lost to damage prints as `OFFSET<TAB>(lost)` in
text and hex, and with \"lost\":true and a null payload in json.
Read-only; works while another process has the log open.

Examples:
  durq dump data --from 100 --count 5
  durq dump data --format json | jq -r .payload

{EXIT_CODES}"))]
    Dump(DumpArgs),

    /// Inspect and move client positions.
    #[command(subcommand)]
    Cursor(CursorCommand),

    /// Measure this disk's raw fsync rate and durq's throughput side by side.
    #[command(after_help = format!("\
Examples:
  durq bench                  # in a temporary directory
  durq bench /mnt/disk/tmp --duration 5 --json

{EXIT_CODES}"))]
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct AppendArgs {
    /// The log directory (created if missing).
    dir: PathBuf,
    /// Messages are NUL-separated instead of newline-separated.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// Most messages per durable write (group what stdin has ready).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,
    /// Segment file size when creating the log (bytes; K, M, G suffixes).
    #[arg(long, value_name = "BYTES", value_parser = util::parse_size)]
    segment_size: Option<u64>,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    /// The log directory.
    dir: PathBuf,
    /// The client name (1-64 letters, digits, '.', '_', '-').
    #[arg(long, short = 'c', value_name = "NAME", value_parser = util::parse_client)]
    client: String,
    /// Stop after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    /// Keep waiting for new messages instead of exiting once caught up.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Once caught up, wait at most this long for a new message, then exit.
    #[arg(long, value_name = "SECS", value_parser = util::parse_seconds, allow_negative_numbers = true)]
    timeout: Option<std::time::Duration>,
    /// Prefix each message with its offset and a tab.
    #[arg(long)]
    offsets: bool,
    /// Terminate each message with NUL instead of newline.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// Acknowledge up to N printed messages with one durable write (faster;
    /// a kill may redeliver up to N).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,
}

#[derive(Debug, Args)]
struct StatArgs {
    /// The log directory.
    dir: PathBuf,
    /// Print one JSON object (shape in docs/cli.md).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The log directory.
    dir: PathBuf,
    /// Print one JSON object (shape in docs/cli.md).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RecoverArgs {
    /// The log directory.
    dir: PathBuf,
    /// Report what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also salvage damage that is not a torn tail (keeps every readable
    /// record; lost offsets become placeholders; damaged files are copied
    /// into DIR/salvage/).
    #[arg(long)]
    salvage: bool,
    /// Print one JSON object (shape in docs/cli.md).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct UpgradeArgs {
    /// The log directory.
    dir: PathBuf,
    /// Report what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object (shape in docs/cli.md).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DumpFormat {
    Text,
    Hex,
    Json,
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// The log directory.
    dir: PathBuf,
    /// First offset to print (default: the oldest retained).
    #[arg(long, value_name = "N", value_parser = util::parse_offset, allow_negative_numbers = true)]
    from: Option<u64>,
    /// Print at most this many records.
    #[arg(long, short = 'n', value_name = "K")]
    count: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DumpFormat::Text)]
    format: DumpFormat,
}

#[derive(Debug, Subcommand)]
enum CursorCommand {
    /// List clients with their acknowledged positions and lag (read-only).
    #[command(after_help = format!("\
Output: one line per client, NAME<TAB>ACKED<TAB>LAG (`-` for both and the
reason on stderr if its cursor is unreadable).

Examples:
  durq cursor list data
  durq cursor list data --json

{EXIT_CODES}"))]
    List(CursorListArgs),
    /// Move a client's position (durably): replay or skip messages.
    #[command(after_help = format!("\
Every message below the new position counts as acknowledged; messages from
it on are delivered again. OFFSET must lie within the retained offsets
(first..=end, see `durq stat`).

Examples:
  durq cursor set data billing 1200
  durq cursor set data billing --to-end     # skip everything present now
  durq cursor set data audit 0 --create     # register a new client

{EXIT_CODES}"))]
    Set(CursorSetArgs),
    /// Remove a client and its cursor files.
    #[command(after_help = format!("\
Also removes a client whose cursor is unreadable, so that it can be
registered again with `durq cursor set --create`.

Example:
  durq cursor delete data old-client

{EXIT_CODES}"))]
    Delete(CursorDeleteArgs),
}

#[derive(Debug, Args)]
struct CursorListArgs {
    /// The log directory.
    dir: PathBuf,
    /// Print a JSON array (shape in docs/cli.md).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["offset", "to_end", "to_start"])))]
struct CursorSetArgs {
    /// The log directory.
    dir: PathBuf,
    /// The client name.
    #[arg(value_parser = util::parse_client)]
    client: String,
    /// The new position: every offset below it counts as acknowledged.
    #[arg(value_parser = util::parse_offset, allow_negative_numbers = true)]
    offset: Option<u64>,
    /// Move to the log's end (skip everything present now).
    #[arg(long)]
    to_end: bool,
    /// Move to the oldest retained offset (replay everything).
    #[arg(long)]
    to_start: bool,
    /// Register the client if it does not exist.
    #[arg(long)]
    create: bool,
}

#[derive(Debug, Args)]
struct CursorDeleteArgs {
    /// The log directory.
    dir: PathBuf,
    /// The client name.
    #[arg(value_parser = util::parse_client)]
    client: String,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Directory to measure in (default: a temporary directory).
    dir: Option<PathBuf>,
    /// How long to run, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "20",
        value_parser = util::parse_seconds,
        allow_negative_numbers = true
    )]
    duration: std::time::Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn run(cli: Cli) -> Result<Outcome, CliError> {
    match cli.command {
        Command::Append(a) => append::run(&a.dir, a.null, a.batch as usize, a.segment_size),
        Command::Consume(a) => consume::run(consume::Params {
            dir: a.dir,
            client: a.client,
            count: a.count,
            follow: a.follow,
            timeout: a.timeout,
            offsets: a.offsets,
            null: a.null,
            batch: a.batch as usize,
        }),
        Command::Stat(a) => stat::run(&a.dir, a.json),
        Command::Verify(a) => verify::run(&a.dir, a.json),
        Command::Recover(a) => recover::run(&a.dir, a.dry_run, a.salvage, a.json),
        Command::Upgrade(a) => upgrade::run(&a.dir, a.dry_run, a.json),
        Command::Dump(a) => dump::run(&a.dir, a.from, a.count, a.format),
        Command::Cursor(CursorCommand::List(a)) => cursor::list(&a.dir, a.json),
        Command::Cursor(CursorCommand::Set(a)) => {
            let target = if a.to_end {
                cursor::Target::End
            } else if a.to_start {
                cursor::Target::Start
            } else {
                cursor::Target::Offset(a.offset.unwrap_or(0))
            };
            cursor::set(&a.dir, &a.client, target, a.create)
        }
        Command::Cursor(CursorCommand::Delete(a)) => cursor::delete(&a.dir, &a.client),
        Command::Bench(a) => {
            util::catch_interrupts();
            match bench::run(a.dir.as_deref(), a.duration, a.json, util::interrupted) {
                Ok(true) => Ok(Outcome::Success),
                Ok(false) => Ok(Outcome::Interrupted),
                Err(e) => Err(CliError::usage(format!("bench: {e}"))),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(e) => e.report(),
    }
}

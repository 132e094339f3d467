//! The Python original's process-kill scenarios: a child process is
//! SIGKILLed after taking a message but before acking it (the message comes
//! again), or right after `append` returned (the message is there).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "DURQ_QUEUE_CHILD";

/// Not a test of its own: the body of the child process, run when the
/// parent re-executes this test binary with `DURQ_QUEUE_CHILD=mode:dir`.
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, dir) = spec.split_once(':').expect("mode:dir");
    let log = durq::Log::open(dir).expect("child opens the log");
    match mode {
        "take" => {
            let c = log.consumer("worker").unwrap();
            let m = c.next().unwrap().expect("a message to take");
            println!("TOOK {}", m.offset());
        }
        "append" => {
            let off = log.append(b"appended by the child").unwrap();
            println!("APPENDED {off}");
        }
        other => panic!("unknown child mode {other}"),
    }
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    // Wait to be killed, holding the message un-acked / the log open.
    std::thread::sleep(Duration::from_secs(60));
}

/// Runs the child in `mode` on `dir`, waits for its one report line, then
/// SIGKILLs it and returns the line.
fn run_child_and_kill(mode: &str, dir: &Path) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut report = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // The harness may print "test child_entry ... " before our output.
        if let Some(at) = line.find("TOOK ").or_else(|| line.find("APPENDED ")) {
            report = line[at..].trim().to_owned();
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!report.is_empty(), "child reported nothing");
    report
}

#[test]
fn message_taken_but_not_acked_comes_again_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = durq::Log::open(tmp.path()).unwrap();
        log.append(b"job 0").unwrap();
        log.append(b"job 1").unwrap();
        let c = log.consumer("worker").unwrap();
        c.next().unwrap().unwrap().ack().unwrap();
    }
    let report = run_child_and_kill("take", tmp.path());
    assert_eq!(report, "TOOK 1");
    let log = durq::Log::open(tmp.path()).unwrap();
    let c = log.consumer("worker").unwrap();
    let m = c.next().unwrap().expect("the message comes again");
    assert_eq!((m.offset(), m.payload()), (1, &b"job 1"[..]));
}

#[test]
fn message_appended_right_before_sigkill_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    drop(durq::Log::open(tmp.path()).unwrap());
    let report = run_child_and_kill("append", tmp.path());
    let offset: u64 = report.strip_prefix("APPENDED ").unwrap().parse().unwrap();
    let log = durq::Log::open(tmp.path()).unwrap();
    assert_eq!(
        log.read(offset).unwrap().unwrap().to_vec(),
        b"appended by the child"
    );
    let c = log.consumer("reader").unwrap();
    assert_eq!(
        c.next().unwrap().unwrap().payload(),
        b"appended by the child"
    );
}

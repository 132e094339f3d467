//! The `durq` command-line tool (grows with the CLI issue).
fn main() {
    println!("durq {}: see `durq --help`", env!("CARGO_PKG_VERSION"));
}

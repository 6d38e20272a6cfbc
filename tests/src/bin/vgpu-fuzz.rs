//! `vgpu-fuzz`: the structured ioctl fuzzer of vgpu_svm (run in the guest by the `fuzz` job;
//! see `vgpu_tests::fuzz`). Prints the seed first, progress every ~10 s, TAP lines, and one
//! `vgpu-fuzz-summary: {json}` line; exits 1 on any failure.

use std::process::ExitCode;

use vgpu_tests::fuzz::run::{self, Config};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match Config::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    ExitCode::from(run::main(cfg) as u8)
}

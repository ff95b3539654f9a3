//! The `bakapara` command: [`bakapara::app::main`], after a check that must come first.

use std::process::ExitCode;

fn main() -> ExitCode {
    bakapara::app::main(stdout_is_open())
}

/// False when descriptor 1 was not open when the process started (`bakapara ... >&-`).
fn stdout_is_open() -> bool {
    !STDOUT_CLOSED_AT_START.load(std::sync::atomic::Ordering::SeqCst)
        && nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

/// Whether descriptor 1 was closed before Rust's runtime started: the runtime then opens
/// /dev/null on it (so later checks see an open descriptor), which would silently discard
/// every result.
static STDOUT_CLOSED_AT_START: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Runs from the ELF `.init_array`, before Rust's runtime start-up replaces closed standard
/// descriptors. Sound before `main`: it makes one `fcntl` system call and stores into a static
/// atomic, touching nothing that needs the runtime (no allocation, no I/O, no thread-locals
/// but libc's own errno).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CHECK_STDOUT_AT_START: extern "C" fn() = {
    extern "C" fn check() {
        let closed = nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_GETFD).is_err();
        STDOUT_CLOSED_AT_START.store(closed, std::sync::atomic::Ordering::SeqCst);
    }
    check
};

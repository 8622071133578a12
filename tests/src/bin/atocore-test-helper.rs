//! A second process for end-to-end tests: holds a lock until its stdin closes,
//! so tests can prove that locks work across real processes.

use std::io::{Read, Write};

use atocore_backup_core::{BackupDirLock, RuntimePaths, ServiceLock};
use camino::Utf8PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(what), Some(root)) = (args.get(1), args.get(2)) else {
        fail("usage: atocore-test-helper (hold-service-lock | hold-backup-lock) <runtime root>");
    };
    let paths = RuntimePaths::under(&Utf8PathBuf::from(root));
    let guard: Box<dyn std::any::Any> = match what.as_str() {
        "hold-service-lock" => Box::new(ServiceLock::acquire(&paths).unwrap_or_else(|e| fail(&e.chain()))),
        "hold-backup-lock" => Box::new(
            BackupDirLock::acquire(&paths, "test-helper", jiff::Timestamp::now())
                .unwrap_or_else(|e| fail(&e.chain())),
        ),
        other => fail(&format!("unknown action {other}")),
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "locked");
    let _ = stdout.flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(guard);
}

fn fail(message: &str) -> ! {
    let mut stderr = std::io::stderr();
    let _ = writeln!(stderr, "atocore-test-helper: {message}");
    std::process::exit(1)
}

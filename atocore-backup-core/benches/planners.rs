//! Micro-benchmarks of the pure planners and of validation on a small
//! snapshot: `cargo bench -p atocore-backup-core`. Whole operations against
//! the reference tools are in `scripts/bench` (docs/benchmarks.md).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use atocore_backup_core::fixtures::{manifest, restore_facts};
use atocore_backup_core::{
    BackupKind, CreateOptions, NoProgress, PruneCandidate, RestoreOptions, RetentionPolicy, RuntimePaths,
    Stamp, create_backup, plan_prune, plan_restore, seed_runtime, validate_backup,
};
use criterion::{Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Span, Timestamp};

fn history(count: i64) -> Vec<PruneCandidate> {
    let now: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
    (0..count)
        .map(|hours_ago| {
            let at = now - SignedDuration::from_hours(hours_ago);
            PruneCandidate {
                stamp: Stamp::at(at).to_string(),
                created_at: Some(at),
                kind: Some(if hours_ago % 50 == 0 {
                    BackupKind::PreRestore
                } else {
                    BackupKind::Manual
                }),
                problem: None,
            }
        })
        .collect()
}

fn planners(c: &mut Criterion) {
    let manifest = manifest(true, true);
    let facts = restore_facts();
    let options = RestoreOptions {
        include_chroma: None,
        pre_restore_snapshot: true,
        chown: None,
    };
    c.bench_function("plan_restore", |b| {
        b.iter(|| plan_restore(black_box(&manifest), &options, &facts))
    });

    let backups = history(10_000);
    let policy = RetentionPolicy {
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(6),
        keep_within: Some(Span::new().days(2)),
        ..RetentionPolicy::default()
    };
    let now: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
    c.bench_function("plan_prune 10k backups", |b| {
        b.iter(|| plan_prune(black_box(&backups), &policy, now))
    });
}

fn validation(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let root = camino::Utf8Path::from_path(dir.path()).unwrap();
    let paths = RuntimePaths::under(root);
    seed_runtime(&paths, 20_000).unwrap();
    let options = CreateOptions {
        include_chroma: true,
        ..CreateOptions::default()
    };
    let stamp = create_backup(&paths, &options, &NoProgress).unwrap().stamp;
    let mut group = c.benchmark_group("validate");
    group.sample_size(20);
    group.bench_function("validate 8 MiB snapshot", |b| {
        b.iter(|| validate_backup(&paths.backup_dir, black_box(&stamp)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, planners, validation);
criterion_main!(benches);

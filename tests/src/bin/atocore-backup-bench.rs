//! Whole-operation benchmark: `atocore-backup` against what an operator would
//! otherwise use (`sqlite3 .backup`, Python's `sqlite3` backup, `cp`, `b3sum`),
//! interleaved in one run, median of N rounds, with peak memory of our commands.
//!
//! ```sh
//! scripts/bench                     # 1 GiB db, 500 MiB chroma, 5 rounds, plot at 64/256/1024 MiB
//! scripts/bench --db-mib 256 --chroma-mib 100 --rounds 3 --plot-sizes ""
//! scripts/bench --setup-only        # build the 1 GiB runtime in target/bench-work and stop
//! scripts/bench --warm-mib 4096     # touch and free 4 GiB before every timed command (see below)
//! ```
//!
//! It prints a markdown table (seconds, ratios, max RSS) and writes an SVG plot.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a benchmark reports and fails loudly

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;

struct Options {
    work: Utf8PathBuf,
    db_mib: u64,
    chroma_mib: u64,
    rounds: usize,
    plot_sizes: Vec<u64>,
    svg: Utf8PathBuf,
    /// Build the runtime and stop, leaving it for profiling by hand.
    setup_only: bool,
    warm_mib: u64,
}

const USAGE: &str = "usage: atocore-backup-bench [--setup-only] [--work DIR] [--db-mib N] [--chroma-mib N] \
[--rounds N] [--warm-mib N] [--svg PATH] [--plot-sizes N,N,...]
(run through scripts/bench, which builds the workspace and installs the reference tools)";

fn parse_options() -> Options {
    parse_args(std::env::args().skip(1)).unwrap_or_else(|message| {
        eprintln!("atocore-backup-bench: {message}\n{USAGE}");
        std::process::exit(2)
    })
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        work: Utf8PathBuf::from("target/bench-work"),
        db_mib: 1024,
        chroma_mib: 500,
        rounds: 5,
        plot_sizes: vec![64, 256, 1024],
        svg: Utf8PathBuf::from("docs/benchmarks.svg"),
        setup_only: false,
        warm_mib: 0,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            "--setup-only" => {
                options.setup_only = true;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} takes a whole number, not {value:?}"))
        };
        match flag.as_str() {
            "--work" => options.work = value.into(),
            "--db-mib" => options.db_mib = number(&value)?,
            "--chroma-mib" => options.chroma_mib = number(&value)?,
            "--rounds" => options.rounds = number(&value)?.try_into().map_err(|_| "--rounds is too large")?,
            "--warm-mib" => options.warm_mib = number(&value)?,
            "--svg" => options.svg = value.into(),
            "--plot-sizes" => {
                options.plot_sizes = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(number)
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

fn our_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().join("atocore-backup");
    assert!(
        bin.is_file(),
        "{} is missing: build with `cargo build --release --workspace`",
        bin.display()
    );
    bin
}

/// A fast deterministic byte stream for incompressible file contents.
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A runtime under `root`: a WAL db of about `db_mib`, a chroma tree of
/// about `chroma_mib` in ~200 files of mixed sizes plus a chroma.sqlite3, a registry.
fn build_runtime(root: &Utf8Path, db_mib: u64, chroma_mib: u64) {
    let db_dir = root.join("data/db");
    fs::create_dir_all(&db_dir).unwrap();
    let db = db_dir.join("atocore.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA user_version=3;
         CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
         CREATE TABLE memories (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, content TEXT NOT NULL,
                                embedding BLOB NOT NULL, created_at TEXT NOT NULL);
         CREATE INDEX memories_project ON memories(project_id);
         INSERT INTO projects (name) VALUES ('atocore'), ('handbook'), ('ops');",
    )
    .unwrap();
    let target = db_mib << 20;
    // ~2.4 KiB a row: text plus a 1536-dim f32 embedding-sized blob would be
    // 6 KiB; 2 KiB keeps row counts realistic for 1 GiB.
    while fs::metadata(&db).unwrap().len() + fs::metadata(format!("{db}-wal")).map_or(0, |m| m.len()) < target
    {
        conn.execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO memories (project_id, content, embedding, created_at)
             SELECT 1 + i % 3, 'memory ' || i || ': ' || hex(randomblob(160)), randomblob(2048), '2026-11-26T00:00:00Z' FROM n;
             COMMIT;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
    }
    drop(conn);

    let chroma = root.join("data/chroma");
    fs::create_dir_all(&chroma).unwrap();
    let chroma_db = rusqlite::Connection::open(chroma.join("chroma.sqlite3")).unwrap();
    chroma_db
        .execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE embeddings (id INTEGER PRIMARY KEY, segment TEXT, vector BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO embeddings (segment, vector) SELECT 'segment-' || (i % 40), randomblob(1536) FROM n;",
        )
        .unwrap();
    drop(chroma_db);
    // 40 segments x 5 files: data_level0 takes most bytes, as in HNSW.
    let budget =
        (chroma_mib << 20).saturating_sub(fs::metadata(chroma.join("chroma.sqlite3")).unwrap().len());
    let per_segment = budget / 40;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut buffer = vec![0u8; 1 << 20];
    for segment in 0..40 {
        let dir = chroma.join(format!("segment-{segment:04}"));
        fs::create_dir_all(&dir).unwrap();
        // Mixed sizes: large, medium and small segments around the mean
        // (weights 4, 2, 3, 2, 1, mean 2.4); data_level0 and link_lists (an
        // eighth of it) take the segment's share of the budget.
        let weight = [4, 2, 3, 2, 1][segment % 5] as u64;
        let level0 = (per_segment * weight * 10 / 27).max(4096);
        for (name, size) in [
            ("data_level0.bin", level0),
            ("link_lists.bin", level0 / 8),
            ("length.bin", 4096 * weight),
            ("header.bin", 100),
            ("index_metadata.pickle", 2048),
        ] {
            let mut file = fs::File::create(dir.join(name)).unwrap();
            let mut left = size;
            while left > 0 {
                let n = left.min(buffer.len() as u64) as usize;
                rng.fill(&mut buffer[..n]);
                std::io::Write::write_all(&mut file, &buffer[..n]).unwrap();
                left -= n as u64;
            }
        }
    }
    let config = root.join("data/config");
    fs::create_dir_all(&config).unwrap();
    fs::write(
        config.join("project-registry.json"),
        br#"{"projects": [{"id": "atocore"}]}"#,
    )
    .unwrap();
}

/// Runs a command; returns wall seconds and, when wrapped in GNU time, max RSS in KiB.
fn time(mut command: Command, measure_rss: bool) -> (f64, Option<u64>) {
    let rss_file = std::env::temp_dir().join(format!("bench-rss-{}", std::process::id()));
    if measure_rss {
        let mut wrapped = Command::new("/usr/bin/time");
        wrapped
            .args(["-f", "%M", "-o"])
            .arg(&rss_file)
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            if let Some(value) = value {
                wrapped.env(key, value);
            }
        }
        command = wrapped;
    }
    // Every command starts with no dirty pages of the one before to write
    // back (as `hyperfine --prepare sync`): `cp` never fsyncs, and whatever
    // ran next would otherwise pay for its writes.
    let _ = Command::new("sync").status();
    warm_allocator();
    let started = Instant::now();
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rss = measure_rss
        .then(|| fs::read_to_string(&rss_file).ok())
        .flatten()
        .and_then(|text| text.trim().lines().last().and_then(|l| l.parse().ok()));
    (seconds, rss)
}

/// MiB touched and freed before every timed command (`--warm-mib`, default 0).
static WARM_MIB: OnceLock<u64> = OnceLock::new();

/// On a VM that hands free memory back to its host (free page reporting, as
/// on the CI machine), the first touch of each page after that costs a
/// host fault: about 3 s per GiB there. A command that frees pages and
/// reuses them at once (`cp` over a file) then pays less than one that
/// allocates new ones, whatever either does itself. Touching and freeing
/// enough memory just before each command gives every command pages the
/// host already backs, as on a machine without page reporting.
fn warm_allocator() {
    let mib = WARM_MIB.get().copied().unwrap_or(0);
    if mib > 0 {
        let touched = vec![1u8; usize::try_from(mib << 20).unwrap()];
        drop(std::hint::black_box(touched));
    }
}

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

fn ours(root: &Utf8Path, args: &[&str]) -> Command {
    let mut command = Command::new(our_bin());
    command
        .args([
            "--data-dir",
            root.join("data").as_str(),
            "--backup-dir",
            root.join("backups").as_str(),
        ])
        .args(args);
    command
}

fn only_snapshot(root: &Utf8Path) -> String {
    let mut names: Vec<String> = fs::read_dir(root.join("backups/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names.pop().unwrap()
}

fn clear_backups(root: &Utf8Path) {
    let _ = fs::remove_dir_all(root.join("backups/snapshots"));
}

fn scratch(root: &Utf8Path) -> Utf8PathBuf {
    let dir = root.join("scratch");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Default)]
struct Samples {
    seconds: BTreeMap<&'static str, Vec<f64>>,
    rss_kib: BTreeMap<&'static str, u64>,
    notes: BTreeMap<&'static str, String>,
}

impl Samples {
    fn record(&mut self, name: &'static str, (seconds, rss): (f64, Option<u64>)) {
        self.seconds.entry(name).or_default().push(seconds);
        if let Some(rss) = rss {
            let peak = self.rss_kib.entry(name).or_default();
            *peak = (*peak).max(rss);
        }
        eprintln!("  {name}: {seconds:.3} s");
    }

    fn median(&self, name: &str) -> f64 {
        let mut values = self.seconds.get(name).cloned().unwrap_or_default();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

type Measure<'a> = (&'static str, Box<dyn FnOnce() -> (f64, Option<u64>) + 'a>);

/// Runs ours and the references of one comparison; on odd rounds the
/// references go first, so neither side always meets a cache the other warmed.
fn compare(samples: &mut Samples, flip: bool, ours: Measure<'_>, references: Vec<Measure<'_>>) {
    let mut all = vec![ours];
    all.extend(references);
    if flip {
        all.rotate_left(1);
    }
    for (name, measure) in all {
        samples.record(name, measure());
    }
}

/// One round of every measurement, interleaved.
fn round(root: &Utf8Path, samples: &mut Samples, flip: bool) {
    let db = root.join("data/db/atocore.db");
    let chroma = root.join("data/chroma");

    compare(
        samples,
        flip,
        (
            "create (db only)",
            Box::new(|| {
                clear_backups(root);
                time(ours(root, &["create"]), true)
            }),
        ),
        vec![
            (
                "sqlite3 .backup",
                Box::new(|| {
                    let dst = scratch(root).join("copy.db");
                    time(sh(&format!("sqlite3 '{db}' \".backup '{dst}'\"")), false)
                }),
            ),
            (
                "python sqlite3 backup",
                Box::new(|| {
                    let dst = scratch(root).join("copy.db");
                    let script = format!(
                        "python3 -c \"import sqlite3; s=sqlite3.connect('{db}'); d=sqlite3.connect('{dst}'); s.backup(d); d.close()\""
                    );
                    time(sh(&script), false)
                }),
            ),
            (
                "cp db",
                Box::new(|| {
                    let dst = scratch(root).join("copy.db");
                    time(sh(&format!("cp '{db}' '{dst}'")), false)
                }),
            ),
            (
                "cp -r chroma",
                Box::new(|| {
                    let dst = scratch(root).join("chroma");
                    time(sh(&format!("cp -r '{chroma}' '{dst}'")), false)
                }),
            ),
        ],
    );

    compare(
        samples,
        flip,
        (
            "create --include-chroma",
            Box::new(|| {
                clear_backups(root);
                time(ours(root, &["create", "--include-chroma"]), true)
            }),
        ),
        vec![(
            "by hand: .backup + cp -r + b3sum",
            Box::new(|| {
                let dir = scratch(root);
                let script = format!(
                    "sqlite3 '{db}' \".backup '{dir}/copy.db'\" && cp -r '{chroma}' '{dir}/chroma' && find '{dir}' -type f -exec b3sum {{}} + > /dev/null"
                );
                time(sh(&script), false)
            }),
        )],
    );
    let first = only_snapshot(root);

    // The issue's rule confirms every unchanged file's checksum before sharing
    // it, so no second create can beat reading and hashing the live runtime
    // once on every core: that is this reference.
    let data = root.join("data");
    compare(
        samples,
        flip,
        (
            "create --include-chroma (unchanged, 2nd)",
            Box::new(|| time(ours(root, &["create", "--include-chroma"]), true)),
        ),
        vec![(
            "b3sum of the live runtime",
            Box::new(|| {
                time(
                    sh(&format!("find '{data}' -type f -exec b3sum {{}} + > /dev/null")),
                    false,
                )
            }),
        )],
    );
    let du = |path: &Utf8Path| {
        let out = Command::new("du").args(["-sk", path.as_str()]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse::<u64>()
            .unwrap_or(0)
    };
    let both = du(&root.join("backups/snapshots"));
    let first_kib = du(&root.join("backups/snapshots").join(&first));
    samples.notes.insert(
        "second create adds on disk",
        format!(
            "{:.1}% of the first ({} MiB of {} MiB)",
            100.0 * (both - first_kib) as f64 / first_kib as f64,
            (both - first_kib) / 1024,
            first_kib / 1024
        ),
    );

    // The usual case in production: a previous backup, and a db that has
    // changed since (1 % of rows, spread over the whole file). Ours compares
    // with the previous copy until it differs; `.backup` copies as always.
    change_rows(&db);
    compare(
        samples,
        flip,
        (
            "create (db only), db changed",
            Box::new(|| time(ours(root, &["create"]), true)),
        ),
        vec![(
            "sqlite3 .backup, db changed",
            Box::new(|| {
                let dst = scratch(root).join("copy.db");
                time(sh(&format!("sqlite3 '{db}' \".backup '{dst}'\"")), false)
            }),
        )],
    );

    let snapshot = root.join("backups/snapshots").join(&first);
    compare(
        samples,
        flip,
        (
            "validate",
            Box::new(|| time(ours(root, &["validate", &first]), true)),
        ),
        vec![(
            "b3sum -c + integrity_check",
            Box::new(|| {
                let script = format!(
                    "cd '{snapshot}' && b3sum -c --quiet B3SUMS && sqlite3 db/atocore.db 'PRAGMA integrity_check' >/dev/null"
                );
                time(sh(&script), false)
            }),
        )],
    );

    compare(
        samples,
        flip,
        (
            "restore (db + chroma, pre-restore snapshot)",
            Box::new(|| {
                time(
                    ours(root, &["restore", &first, "--confirm-service-stopped"]),
                    true,
                )
            }),
        ),
        vec![(
            "by hand: restore sequence",
            Box::new(|| {
                let dir = scratch(root);
                let script = format!(
                    "sqlite3 '{db}' \".backup '{dir}/safety.db'\" && cp -r '{chroma}' '{dir}/safety-chroma' && cp '{snapshot}/db/atocore.db' '{db}' && rm -rf '{chroma}' && cp -r '{snapshot}/chroma' '{chroma}' && sqlite3 '{db}' 'PRAGMA integrity_check' >/dev/null"
                );
                time(sh(&script), false)
            }),
        )],
    );
    let _ = fs::remove_dir_all(root.join("scratch"));
}

/// Rewrites 1 % of the rows, spread over the whole db, and checkpoints.
fn change_rows(db: &Utf8Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "UPDATE memories SET embedding = randomblob(length(embedding)) WHERE id % 100 = abs(random()) % 100;
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
}

/// Against a writer committing every 2 ms: our create finishes; the paged
/// `.backup` restarts on every commit.
fn hot(root: &Utf8Path, samples: &mut Samples) {
    let db = root.join("data/db/atocore.db");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let db = db.clone();
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(30)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                conn.execute(
                    "INSERT INTO memories (project_id, content, embedding, created_at) VALUES (1, 'hot', randomblob(512), 'now')",
                    [],
                )
                .unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    clear_backups(root);
    samples.record(
        "create (db only), writer every 2 ms",
        time(ours(root, &["create"]), true),
    );
    let dst = scratch(root).join("copy.db");
    let _ = Command::new("sync").status();
    warm_allocator();
    let started = Instant::now();
    let status = Command::new("timeout")
        .args(["60", "sqlite3", db.as_str(), &format!(".backup '{dst}'")])
        .status()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    if status.success() {
        samples.record("sqlite3 .backup, writer every 2 ms", (seconds, None));
    } else {
        samples.notes.insert(
            "sqlite3 .backup, writer every 2 ms",
            "did not finish in 60 s (killed)".to_owned(),
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    clear_backups(root);
}

fn table(samples: &Samples) -> String {
    let ratio = |a: &str, b: &str| samples.median(a) / samples.median(b);
    let mut out = String::from(
        "| operation | median s | reference | reference s | ratio | max RSS |\n|---|---:|---|---:|---:|---:|\n",
    );
    let rows: [(&str, &str); 7] = [
        ("create (db only)", "sqlite3 .backup"),
        ("create (db only), db changed", "sqlite3 .backup, db changed"),
        ("create (db only)", "python sqlite3 backup"),
        ("create (db only)", "cp db"),
        ("create --include-chroma", "by hand: .backup + cp -r + b3sum"),
        ("validate", "b3sum -c + integrity_check"),
        (
            "restore (db + chroma, pre-restore snapshot)",
            "by hand: restore sequence",
        ),
    ];
    for (ours, reference) in rows {
        out.push_str(&format!(
            "| `{ours}` | {:.2} | {reference} | {:.2} | {:.2}x | {} |\n",
            samples.median(ours),
            samples.median(reference),
            ratio(ours, reference),
            samples
                .rss_kib
                .get(ours)
                .map_or("-".to_owned(), |k| format!("{:.1} MiB", *k as f64 / 1024.0)),
        ));
    }
    out.push_str(&format!(
        "| `create --include-chroma (unchanged, 2nd)` | {:.2} | first `create --include-chroma` | {:.2} | {:.2}x | {} |\n",
        samples.median("create --include-chroma (unchanged, 2nd)"),
        samples.median("create --include-chroma"),
        ratio("create --include-chroma (unchanged, 2nd)", "create --include-chroma"),
        samples.rss_kib.get("create --include-chroma (unchanged, 2nd)").map_or("-".to_owned(), |k| format!("{:.1} MiB", *k as f64 / 1024.0)),
    ));
    out.push_str(&format!(
        "| `create --include-chroma (unchanged, 2nd)` | {:.2} | b3sum of the live runtime | {:.2} | {:.2}x | |\n",
        samples.median("create --include-chroma (unchanged, 2nd)"),
        samples.median("b3sum of the live runtime"),
        ratio("create --include-chroma (unchanged, 2nd)", "b3sum of the live runtime"),
    ));
    let hot_ref = samples
        .notes
        .get("sqlite3 .backup, writer every 2 ms")
        .cloned()
        .unwrap_or_else(|| format!("{:.2} s", samples.median("sqlite3 .backup, writer every 2 ms")));
    out.push_str(&format!(
        "| `create (db only)`, writer every 2 ms | {:.2} | sqlite3 .backup, writer every 2 ms | {hot_ref} | | {} |\n",
        samples.median("create (db only), writer every 2 ms"),
        samples.rss_kib.get("create (db only), writer every 2 ms").map_or("-".to_owned(), |k| format!("{:.1} MiB", *k as f64 / 1024.0)),
    ));
    for (name, note) in samples.notes.iter().filter(|(n, _)| !n.starts_with("sqlite3")) {
        out.push_str(&format!("\n{name}: {note}\n"));
    }
    out
}

fn svg(points: &[(u64, Samples)], path: &Utf8Path) {
    let series: [(&str, &str, &str); 6] = [
        ("create (db only)", "#1f77b4", ""),
        ("sqlite3 .backup", "#1f77b4", "6,4"),
        ("validate", "#2ca02c", ""),
        ("b3sum -c + integrity_check", "#2ca02c", "6,4"),
        ("restore (db + chroma, pre-restore snapshot)", "#d62728", ""),
        ("by hand: restore sequence", "#d62728", "6,4"),
    ];
    let (width, height, left, bottom) = (720.0, 420.0, 60.0, 50.0);
    let max_x = points.iter().map(|(s, _)| *s).max().unwrap_or(1) as f64;
    let max_y = points
        .iter()
        .flat_map(|(_, s)| series.iter().map(move |(n, _, _)| s.median(n)))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        * 1.1;
    let x = |v: f64| left + (width - left - 20.0) * v / max_x;
    let y = |v: f64| height - bottom - (height - bottom - 20.0) * v / max_y.max(1e-9);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    out.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"20\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        y(0.0), width - 20.0, y(0.0), y(0.0)
    ));
    for (size, _) in points {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{size} MiB</text>\n",
            x(*size as f64),
            y(0.0) + 18.0
        ));
    }
    for tick in 0..=4 {
        let v = max_y * f64::from(tick) / 4.0;
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.1} s</text>\n",
            left - 6.0,
            y(v) + 4.0
        ));
    }
    for (index, (name, color, dash)) in series.iter().enumerate() {
        let coords: Vec<String> = points
            .iter()
            .map(|(size, s)| format!("{:.1},{:.1}", x(*size as f64), y(s.median(name))))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>\n",
            coords.join(" ")
        ));
        let ly = 34.0 + 16.0 * index as f64;
        out.push_str(&format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            left + 20.0, left + 50.0, left + 56.0, ly + 4.0
        ));
    }
    out.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">db size (chroma held at 1/2 of the db)</text>\n</svg>\n", width / 2.0, height - 8.0));
    fs::write(path, out).unwrap();
}

fn main() {
    let options = parse_options();
    WARM_MIB.set(options.warm_mib).unwrap();
    for tool in ["sqlite3", "python3", "b3sum", "/usr/bin/time", "timeout"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is required (scripts/install-bench-deps installs it)"
        );
    }
    let main_root = options
        .work
        .join(format!("db{}-chroma{}", options.db_mib, options.chroma_mib));
    let _ = fs::remove_dir_all(&main_root);
    eprintln!(
        "building {} MiB db + {} MiB chroma in {main_root}",
        options.db_mib, options.chroma_mib
    );
    build_runtime(&main_root, options.db_mib, options.chroma_mib);
    if options.setup_only {
        eprintln!("runtime left in {main_root}: data/ and backups/");
        return;
    }
    let mut samples = Samples::default();
    for n in 0..options.rounds {
        eprintln!("round {}", n + 1);
        round(&main_root, &mut samples, n % 2 == 1);
    }
    hot(&main_root, &mut samples);
    println!("{}", table(&samples));
    let _ = fs::remove_dir_all(&main_root);

    if !options.plot_sizes.is_empty() {
        let mut points = Vec::new();
        for size in &options.plot_sizes {
            let root = options.work.join(format!("plot-{size}"));
            let _ = fs::remove_dir_all(&root);
            eprintln!("plot point: {size} MiB");
            build_runtime(&root, *size, size / 2);
            let mut point = Samples::default();
            for n in 0..options.rounds {
                round(&root, &mut point, n % 2 == 1);
            }
            let _ = fs::remove_dir_all(&root);
            points.push((*size, point));
        }
        svg(&points, &options.svg);
        println!("plot written to {}", options.svg);
        println!(
            "\n| db MiB | create | sqlite3 .backup | validate | b3sum + integrity | restore | by hand |\n|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (size, s) in &points {
            println!(
                "| {size} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                s.median("create (db only)"),
                s.median("sqlite3 .backup"),
                s.median("validate"),
                s.median("b3sum -c + integrity_check"),
                s.median("restore (db + chroma, pre-restore snapshot)"),
                s.median("by hand: restore sequence")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_args;

    fn parse(args: &[&str]) -> Result<super::Options, String> {
        parse_args(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn flags_set_their_options_and_empty_plot_sizes_mean_no_plot() {
        let options = parse(&[
            "--rounds",
            "9",
            "--db-mib",
            "32",
            "--warm-mib",
            "4096",
            "--plot-sizes",
            "",
        ])
        .unwrap();
        assert_eq!((options.rounds, options.db_mib, options.warm_mib), (9, 32, 4096));
        assert!(options.plot_sizes.is_empty());
        assert_eq!(parse(&["--plot-sizes", "64,256"]).unwrap().plot_sizes, [64, 256]);
    }

    #[test]
    fn a_bad_flag_or_value_is_one_sentence_naming_it() {
        assert_eq!(
            parse(&["--rounds", "x"]).err().unwrap(),
            "--rounds takes a whole number, not \"x\""
        );
        assert_eq!(parse(&["--db-mib"]).err().unwrap(), "--db-mib needs a value");
        assert_eq!(parse(&["--fast", "1"]).err().unwrap(), "unknown flag --fast");
    }
}

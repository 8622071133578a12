//! The restore drill: seed a scratch runtime, back it up, break it, restore
//! it, and prove the restore did exactly what it should.

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::create::{CreateOptions, create_backup};
use crate::durable::Progress;
use crate::error::{Error, Result, sqlite_error};
use crate::execute::restore_backup;
use crate::manifest::{BackupKind, BackupManifest};
use crate::marker::RestoreMarker;
use crate::paths::RuntimePaths;
use crate::plan::RestoreOptions;
use crate::sqlite::open_immutable;
use crate::stamp::Stamp;
use crate::validate::validate_backup;

/// The `user_version` of the seeded schema.
pub const SEED_SCHEMA_VERSION: i64 = 3;
/// Content of the row the drill inserts after the baseline backup.
pub const MUTATION_MARKER: &str = "drill-mutation-marker";
const MUTATION_PROJECT: &str = "drill-mutation";
const EXTRA_CHROMA_FILE: &str = "segment-0001/drill-extra.bin";

/// The drill's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillReport {
    /// The scratch runtime it ran in.
    pub scratch_dir: Utf8PathBuf,
    /// Every step, in order.
    pub steps: Vec<DrillStep>,
    /// The baseline backup restored.
    pub baseline_stamp: Option<Stamp>,
    /// The pre-restore snapshot the restore took.
    pub pre_restore_stamp: Option<Stamp>,
    /// True only if every step passed.
    pub success: bool,
}

/// One drill step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillStep {
    /// What the step does.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it saw.
    pub detail: String,
}

/// Creates an atocore-like runtime at `paths`: a WAL-mode db with `projects`
/// and `memories` (`rows` memories with text and a 256-byte embedding blob),
/// a registry, and a chroma tree with a `chroma.sqlite3` and one segment.
///
/// # Errors
/// I/O and SQLite errors naming the path.
pub fn seed_runtime(paths: &RuntimePaths, rows: u32) -> Result<()> {
    fs::create_dir_all(paths.db_dir())?;
    let conn = Connection::open(&paths.db_path).map_err(sqlite_error(&paths.db_path))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL;
         PRAGMA user_version={SEED_SCHEMA_VERSION};
         CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
         CREATE TABLE memories (
             id INTEGER PRIMARY KEY,
             project_id INTEGER NOT NULL REFERENCES projects(id),
             content TEXT NOT NULL,
             embedding BLOB NOT NULL,
             created_at TEXT NOT NULL
         );
         INSERT INTO projects (name) VALUES ('atocore'), ('handbook'), ('ops');
         BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO memories (project_id, content, embedding, created_at)
         SELECT 1 + i % 3, 'memory ' || i || ': ' || hex(randomblob(48)), randomblob(256), '2026-01-01T00:00:00Z'
         FROM n;
         COMMIT;"
    ))
    .map_err(sqlite_error(&paths.db_path))?;
    drop(conn);

    fs::create_dir_all(crate::paths::parent_or_dot(&paths.registry_path))?;
    let registry = serde_json::json!({
        "projects": [
            {"id": "atocore", "root": "/srv/atocore"},
            {"id": "handbook", "root": "/srv/handbook"},
        ]
    });
    fs::write(
        &paths.registry_path,
        serde_json::to_vec_pretty(&registry).unwrap_or_default(),
    )?;

    let segment = paths.chroma_dir.join("segment-0001");
    fs::create_dir_all(&segment)?;
    let chroma_db = paths.chroma_dir.join("chroma.sqlite3");
    let chroma = Connection::open(&chroma_db).map_err(sqlite_error(&chroma_db))?;
    chroma
        .execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE embeddings (id INTEGER PRIMARY KEY, segment TEXT, vector BLOB);
             INSERT INTO embeddings (segment, vector) VALUES ('segment-0001', randomblob(1536));",
        )
        .map_err(sqlite_error(&chroma_db))?;
    drop(chroma);
    for (name, size) in [
        ("header.bin", 100usize),
        ("data_level0.bin", 64 * 1024),
        ("length.bin", 400),
        ("link_lists.bin", 0),
    ] {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        fs::write(segment.join(name), bytes)?;
    }
    Ok(())
}

/// Runs the whole drill in `scratch` (which must be empty or absent).
///
/// # Errors
/// Only when the scratch directory cannot be used; a failing drill step is a
/// report with `success: false`.
pub fn run_drill(scratch: &Utf8Path, progress: &dyn Progress) -> Result<DrillReport> {
    let paths = RuntimePaths::under(scratch);
    let mut drill = Drill {
        report: DrillReport {
            scratch_dir: scratch.to_owned(),
            steps: Vec::new(),
            baseline_stamp: None,
            pre_restore_stamp: None,
            success: false,
        },
    };
    let outcome = drill.run(&paths, progress);
    if let Err(error) = outcome {
        drill.report.steps.push(DrillStep {
            name: "drill stopped".to_owned(),
            ok: false,
            detail: error,
        });
    }
    drill.report.success = drill.report.steps.iter().all(|s| s.ok);
    Ok(drill.report)
}

struct Drill {
    report: DrillReport,
}

type StepResult = std::result::Result<String, String>;

impl Drill {
    fn step(&mut self, name: &str, outcome: StepResult) -> std::result::Result<(), String> {
        let ok = outcome.is_ok();
        let detail = outcome.unwrap_or_else(|e| e);
        self.report.steps.push(DrillStep {
            name: name.to_owned(),
            ok,
            detail: detail.clone(),
        });
        if ok {
            Ok(())
        } else {
            Err(format!("`{name}` failed: {detail}"))
        }
    }

    fn run(&mut self, paths: &RuntimePaths, progress: &dyn Progress) -> std::result::Result<(), String> {
        let text = |error: Error| error.chain();
        let seeded =
            seed_runtime(paths, 2000).map(|()| "2000 memories, a registry and a chroma tree".to_owned());
        self.step("seed a scratch runtime", seeded.map_err(text))?;
        let baseline_rows = count_rows(&paths.db_path, false).map_err(text)?;

        let options = CreateOptions {
            include_chroma: true,
            kind: BackupKind::Drill,
            restored_from: None,
        };
        let baseline = create_backup(paths, &options, progress).map_err(text);
        if let Ok(manifest) = &baseline {
            self.report.baseline_stamp = Some(manifest.stamp.clone());
        }
        let detail = baseline.as_ref().map(|m| {
            let chroma_files = m.chroma.as_ref().map_or(0, |c| c.file_count);
            format!("`{}`, {chroma_files} chroma files", m.stamp)
        });
        self.step("baseline backup", detail.map_err(Clone::clone))?;
        let baseline = baseline?;

        let report = validate_backup(&paths.backup_dir, &baseline.stamp).map_err(text)?;
        let validated = if report.valid {
            Ok(format!("{} checks passed", report.checks.len()))
        } else {
            Err(report.first_error().to_owned())
        };
        self.step("validate the baseline", validated)?;

        self.step("mutate the runtime", mutate(paths).map_err(text))?;

        let restore_options = RestoreOptions {
            include_chroma: None,
            pre_restore_snapshot: true,
            chown: None,
        };
        let restored =
            restore_backup(paths, &baseline.stamp, &restore_options, true, progress).map_err(text)?;
        self.report.pre_restore_stamp = restored.pre_restore_stamp.clone();
        let outcome = if restored.success {
            Ok(format!("{} steps ran", restored.steps.len()))
        } else {
            Err(restored
                .failed_step()
                .map(|s| format!("{}: {}", s.step.name(), s.detail))
                .unwrap_or_else(|| "integrity check did not return ok".to_owned()))
        };
        self.step("restore the baseline", outcome)?;

        let markers = count_rows(&paths.db_path, true).map_err(text)?;
        self.step(
            "the mutation is gone",
            if markers == 0 {
                Ok("no marker row".to_owned())
            } else {
                Err(format!("{markers} marker rows survived"))
            },
        )?;
        let rows = count_rows(&paths.db_path, false).map_err(text)?;
        self.step(
            "the baseline survived",
            if rows == baseline_rows {
                Ok(format!("{rows} memories"))
            } else {
                Err(format!("{rows} memories, expected {baseline_rows}"))
            },
        )?;
        self.step(
            "integrity_check is ok",
            match restored.integrity_check.as_deref() {
                Some("ok") => Ok("ok".to_owned()),
                other => Err(format!("integrity_check returned {other:?}")),
            },
        )?;
        let registry = fs::read_to_string(&paths.registry_path).map_err(|e| text(e.into()))?;
        self.step(
            "the registry is the baseline's",
            if registry.contains(MUTATION_PROJECT) {
                Err("the mutated registry survived".to_owned())
            } else {
                Ok("mutation gone".to_owned())
            },
        )?;
        let extra = paths.chroma_dir.join(EXTRA_CHROMA_FILE);
        self.step(
            "chroma is the baseline's",
            if extra.exists() {
                Err(format!("`{extra}` survived"))
            } else {
                Ok("extra file gone".to_owned())
            },
        )?;
        let pre = restored.pre_restore_stamp.clone();
        let held = match pre {
            Some(pre) => pre_restore_holds_mutation(paths, &pre),
            None => Err("no pre-restore snapshot was taken".to_owned()),
        };
        self.step("the pre-restore snapshot holds the mutation", held)?;
        let marker = RestoreMarker::read(paths).map_err(text)?;
        self.step(
            "the restore marker is gone",
            match marker {
                None => Ok(format!("`{}` absent", paths.restore_marker_path())),
                Some(marker) => Err(format!("marker for `{}` still present", marker.stamp)),
            },
        )
    }
}

fn mutate(paths: &RuntimePaths) -> Result<String> {
    let conn = Connection::open(&paths.db_path).map_err(sqlite_error(&paths.db_path))?;
    conn.execute(
        "INSERT INTO memories (project_id, content, embedding, created_at) VALUES (1, ?1, x'00', '2026-01-02T00:00:00Z')",
        [MUTATION_MARKER],
    )
    .map_err(sqlite_error(&paths.db_path))?;
    drop(conn);
    let mut registry: serde_json::Value =
        serde_json::from_slice(&fs::read(&paths.registry_path)?).map_err(|source| Error::RegistryJson {
            path: paths.registry_path.clone(),
            source,
        })?;
    if let Some(projects) = registry.get_mut("projects").and_then(|p| p.as_array_mut()) {
        projects.push(serde_json::json!({"id": MUTATION_PROJECT, "root": "/tmp/drill"}));
    }
    fs::write(
        &paths.registry_path,
        serde_json::to_vec_pretty(&registry).unwrap_or_default(),
    )?;
    fs::write(
        paths.chroma_dir.join(EXTRA_CHROMA_FILE),
        b"added after the baseline",
    )?;
    Ok("inserted a marker row, added a registry project, added a chroma file".to_owned())
}

/// Counts memories (or only the drill's marker rows) in a live db.
fn count_rows(db: &Utf8Path, markers_only: bool) -> Result<i64> {
    let conn = Connection::open(db).map_err(sqlite_error(db))?;
    count_in(&conn, db, markers_only)
}

fn count_in(conn: &Connection, db: &Utf8Path, markers_only: bool) -> Result<i64> {
    let sql = if markers_only {
        "SELECT count(*) FROM memories WHERE content = ?1"
    } else {
        "SELECT count(*) FROM memories WHERE content != ?1"
    };
    conn.query_row(sql, [MUTATION_MARKER], |row| row.get(0))
        .map_err(sqlite_error(db))
}

fn pre_restore_holds_mutation(paths: &RuntimePaths, pre: &Stamp) -> StepResult {
    let dir = paths.snapshots_dir().join(pre.as_str());
    let manifest = BackupManifest::load(&dir).map_err(|e| e.chain())?;
    let db = dir.join(&manifest.db.path);
    let conn = open_immutable(&db).map_err(|e| e.chain())?;
    let markers = count_in(&conn, &db, true).map_err(|e| e.chain())?;
    let registry_has = manifest
        .registry
        .as_ref()
        .and_then(|r| fs::read_to_string(dir.join(&r.path)).ok())
        .is_some_and(|text| text.contains(MUTATION_PROJECT));
    let chroma_has = manifest
        .chroma
        .as_ref()
        .is_some_and(|c| c.files.iter().any(|f| f.path == EXTRA_CHROMA_FILE));
    let valid = validate_backup(&paths.backup_dir, pre)
        .map_err(|e| e.chain())?
        .valid;
    if markers == 1 && registry_has && chroma_has && valid {
        Ok(format!(
            "`{pre}` has the marker row, the registry edit and the chroma file, and validates"
        ))
    } else {
        Err(format!(
            "`{pre}`: marker rows {markers}, registry edit {registry_has}, chroma file {chroma_has}, valid {valid}"
        ))
    }
}

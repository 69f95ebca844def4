//! Audit export: events as JSON lines, oldest first, a batch at a time, and the archive the
//! retention job writes before it purges (one gzip JSON-lines file per UTC day).
//!
//! What is deleted afterwards is exactly the ids that were written, once the file is on disk: an
//! event recorded meanwhile, or one a crash kept from the file, stays in the database.

use crate::store::{self, Pool, audit::AuditRow};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Rows read per query.
const BATCH: i64 = 1000;

/// One event as a JSON object: the fields of `ListAuditEvents`' `AuditEvent`, with `details` as
/// the object it holds (not a string), and `null` for what was not recorded.
pub fn to_json(row: &AuditRow) -> Value {
    let details = serde_json::from_str::<Value>(&row.details).unwrap_or_else(|_| Value::String(row.details.clone()));
    json!({
        "id": row.id.to_string(),
        "type": row.event_type,
        "user_id": row.user_id.map(|id| id.to_string()),
        "occurred_at": row.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "ip_address": row.ip_address,
        "user_agent": row.user_agent,
        "outcome": row.outcome,
        "details": details,
    })
}

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// The ids written, in order.
    pub ids: Vec<i64>,
}

/// Writes every event that occurred before `before` to `out`, one JSON object per line, in id
/// order, reading a batch at a time. `out` is not flushed.
pub async fn write_before(pool: &Pool, before: DateTime<Utc>, out: &mut impl Write) -> anyhow::Result<Written> {
    write_range(pool, None, before, out).await
}

/// Writes the events that occurred in `[from, before)` (from the start when `from` is `None`).
async fn write_range(
    pool: &Pool,
    from: Option<DateTime<Utc>>,
    before: DateTime<Utc>,
    out: &mut impl Write,
) -> anyhow::Result<Written> {
    let mut written = Written::default();
    let mut after = 0;
    loop {
        let rows = {
            let mut conn = store::conn(pool).await?;
            store::audit::oldest(&mut conn, from, before, after, BATCH).await?
        };
        for row in &rows {
            serde_json::to_writer(&mut *out, &to_json(row))?;
            out.write_all(b"\n")?;
            written.ids.push(row.id);
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == BATCH => after = last.id,
            _ => return Ok(written),
        }
    }
}

/// Deletes exactly these events, in one transaction (all or none); returns how many went.
pub async fn purge(pool: &Pool, ids: &[i64]) -> anyhow::Result<usize> {
    use diesel_async::AsyncConnection;
    let mut conn = store::conn(pool).await?;
    let deleted = conn
        .transaction::<_, store::StoreError, _>(async |conn| {
            let mut deleted = 0;
            for chunk in ids.chunks(BATCH as usize) {
                deleted += store::audit::delete_ids(conn, chunk).await?;
            }
            Ok(deleted)
        })
        .await?;
    Ok(deleted)
}

/// A file being written: it appears at its path, whole, only when [`Partial::commit`] has synced
/// and renamed it; dropped before that, it is removed.
pub struct Partial {
    file: Option<std::io::BufWriter<std::fs::File>>,
    temporary: PathBuf,
    path: PathBuf,
}

impl Partial {
    /// Creates the temporary file beside `path`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("{} is not a file name", path.display()))?;
        let temporary = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        let file = std::fs::File::create(&temporary)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", temporary.display()))?;
        Ok(Self {
            file: Some(std::io::BufWriter::new(file)),
            temporary,
            path: path.to_path_buf(),
        })
    }

    /// Flushes and syncs the file, renames it to its path and syncs the directory.
    pub async fn commit(mut self) -> anyhow::Result<()> {
        let file = self.file.take().expect("committed once");
        let (temporary, path) = (self.temporary.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::File::open(dir)?.sync_all()?;
            Ok(())
        })
        .await??;
        // Renamed: nothing left to remove.
        self.temporary = PathBuf::new();
        Ok(())
    }
}

impl Write for Partial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.as_mut().expect("not committed").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.temporary.as_os_str().is_empty() {
            self.file = None;
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// The archive of one UTC day.
pub fn archive_path(dir: &Path, day: NaiveDate) -> PathBuf {
    dir.join(format!("audit-{}.jsonl.gz", day.format("%Y-%m-%d")))
}

/// Archives, then purges, every whole UTC day of events that occurred before `cutoff` (so
/// events stay up to a day past the retention): one gzip JSON-lines file per day, written
/// atomically, then that day's events deleted, all or none. A file already there for a day is
/// replaced: its events were either not purged (they are all still here, and written again) or
/// purged (then the day has no events left, and no file is written).
/// Replicas take turns (an advisory lock): two writing one day at once could leave the file of
/// the one that read fewer rows. Returns the events archived and purged.
pub async fn archive_and_purge(pool: &Pool, dir: &Path, cutoff: DateTime<Utc>) -> anyhow::Result<usize> {
    use diesel_async::AsyncConnection;
    const ARCHIVE_LOCK: i64 = 7204;
    let mut holder = store::conn(pool).await?;
    let mut outcome = Ok(0);
    holder
        .transaction::<_, store::StoreError, _>(async |conn| {
            if store::try_lock_for_transaction(conn, ARCHIVE_LOCK).await? {
                outcome = archive_days(pool, dir, cutoff).await;
            }
            Ok(())
        })
        .await?;
    outcome
}

async fn archive_days(pool: &Pool, dir: &Path, cutoff: DateTime<Utc>) -> anyhow::Result<usize> {
    let last_day = cutoff.date_naive();
    let mut purged = 0;
    loop {
        let first = {
            let mut conn = store::conn(pool).await?;
            store::audit::oldest(&mut conn, None, day_start(last_day), 0, 1).await?
        };
        let Some(first) = first.first() else {
            return Ok(purged);
        };
        let day = first.occurred_at.date_naive();
        let (from, until) = (day_start(day), day_start(day.succ_opt().unwrap_or(day)));
        let partial = Partial::create(&archive_path(dir, day))?;
        let mut gzip = flate2::write::GzEncoder::new(partial, flate2::Compression::default());
        let written = write_range(pool, Some(from), until, &mut gzip).await?;
        gzip.finish()?.commit().await?;
        purged += purge(pool, &written.ids).await?;
        tracing::info!(%day, events = written.ids.len(), "audit events archived and purged");
    }
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

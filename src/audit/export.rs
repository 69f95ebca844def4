//! Audit export: events as JSON lines, oldest first, a batch at a time, and the archive the
//! retention job writes before it purges (gzip JSON-lines files, one per UTC day).
//!
//! What is deleted afterwards is exactly the ids that were written, once the file is on disk: an
//! event recorded meanwhile, or one a crash kept from the file, stays in the database. No file
//! is ever replaced: an export refuses a path that exists, and an archive of a day that already
//! has one gets the next free name, so an event may be archived twice, never lost.

use crate::store::{self, Conn, Pool, audit::AuditRow};
use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Rows read per query.
const BATCH: i64 = 1000;
/// Ids deleted per statement.
const DELETE_BATCH: i64 = 10_000;

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

/// The ids an export wrote, as runs of consecutive ids (a sequence's ids nearly always are), so
/// that memory does not grow with the number of events.
#[derive(Debug, Default)]
pub struct Written {
    runs: Vec<(i64, i64)>,
    count: u64,
}

impl Written {
    fn push(&mut self, id: i64) {
        self.count += 1;
        match self.runs.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => self.runs.push((id, id)),
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The first and last id written.
    pub fn span(&self) -> Option<(i64, i64)> {
        Some((self.runs.first()?.0, self.runs.last()?.1))
    }

    /// The runs cut to at most [`DELETE_BATCH`] ids each.
    fn pieces(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.runs.iter().flat_map(|&(first, last)| {
            (first..=last)
                .step_by(DELETE_BATCH as usize)
                .map(move |from| (from, (from + DELETE_BATCH - 1).min(last)))
        })
    }
}

/// Writes every event that occurred in `[from, before)` (from the start when `from` is `None`)
/// to `out`, one JSON object per line, in id order, a batch at a time, on `conn`. Encoding and
/// writing happen off the async workers; `out` comes back, not flushed.
async fn write_range<W: Write + Send + 'static>(
    conn: &mut Conn<'_>,
    from: Option<DateTime<Utc>>,
    before: DateTime<Utc>,
    mut out: W,
) -> anyhow::Result<(Written, W)> {
    let mut written = Written::default();
    // The last id in range, found first: the pages below stop there instead of walking the
    // rest of the table for rows that cannot match.
    let Some(last) = store::audit::last_id_before(conn, from, before).await? else {
        return Ok((written, out));
    };
    let mut after = 0;
    loop {
        let mut rows = store::audit::page(conn, after, last, BATCH).await?;
        let full = rows.len() as i64 == BATCH;
        if let Some(row) = rows.last() {
            after = row.id;
        }
        // Ids follow time but for the few written late: those out of range are left.
        rows.retain(|row| row.occurred_at < before && from.is_none_or(|from| row.occurred_at >= from));
        for row in &rows {
            written.push(row.id);
        }
        out = tokio::task::spawn_blocking(move || -> std::io::Result<W> {
            for row in &rows {
                serde_json::to_writer(&mut out, &to_json(row))?;
                out.write_all(b"\n")?;
            }
            Ok(out)
        })
        .await??;
        if !full {
            return Ok((written, out));
        }
    }
}

/// Writes every event that occurred before `before` to `out`.
pub async fn write_before<W: Write + Send + 'static>(
    pool: &Pool,
    before: DateTime<Utc>,
    out: W,
) -> anyhow::Result<(Written, W)> {
    let mut conn = store::conn(pool).await?;
    write_range(&mut conn, None, before, out).await
}

/// Deletes exactly the events written, a statement of up to 10 000 at a time (each commits on
/// its own: the file already holds them all); returns how many went.
pub async fn purge(pool: &Pool, written: &Written) -> anyhow::Result<u64> {
    let mut conn = store::conn(pool).await?;
    let mut deleted = 0;
    for (first, last) in written.pieces() {
        deleted += store::audit::delete_ids_between(&mut conn, first, last).await? as u64;
    }
    Ok(deleted)
}

/// A file being written, only for its owner (mode 0600: events hold addresses and user
/// agents). It appears at its path, whole, only when [`Partial::commit`] has synced it and
/// linked it there; dropped before that, it is removed.
pub struct Partial {
    file: Option<std::io::BufWriter<std::fs::File>>,
    temporary: PathBuf,
}

impl Partial {
    /// Creates a temporary file, of a name no other writer uses, in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let temporary = dir.join(format!(".authd-export.{}.partial", crate::crypto::random_token()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        Ok(Self {
            file: Some(std::io::BufWriter::new(file)),
            temporary,
        })
    }

    /// Flushes and syncs the file, then gives it the first of `names` that is free (never
    /// replacing a file) and syncs the directory; returns the path it got.
    pub async fn commit(
        mut self,
        names: impl IntoIterator<Item = PathBuf> + Send + 'static,
    ) -> anyhow::Result<PathBuf> {
        let file = self.file.take().expect("committed once");
        let temporary = self.temporary.clone();
        let path = tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", temporary.display()))?;
            for path in names {
                match std::fs::hard_link(&temporary, &path) {
                    Ok(()) => {
                        std::fs::remove_file(&temporary)?;
                        let dir = path
                            .parent()
                            .filter(|d| !d.as_os_str().is_empty())
                            .unwrap_or(Path::new("."));
                        std::fs::File::open(dir)?.sync_all()?;
                        return Ok(path);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
                }
            }
            anyhow::bail!("no free name for the file")
        })
        .await??;
        // Linked and unlinked: nothing left to remove.
        self.temporary = PathBuf::new();
        Ok(path)
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

/// The names a day's archive may take: `audit-YYYY-MM-DD.jsonl.gz`, then `.1`, `.2`… before
/// `.jsonl.gz` when a file for that day is already there.
pub fn archive_names(dir: &Path, day: NaiveDate) -> impl Iterator<Item = PathBuf> + Send + 'static {
    let dir = dir.to_path_buf();
    let day = day.format("%Y-%m-%d").to_string();
    (0..10_000).map(move |n| match n {
        0 => dir.join(format!("audit-{day}.jsonl.gz")),
        n => dir.join(format!("audit-{day}.{n}.jsonl.gz")),
    })
}

/// Fails unless events can be archived in `dir`: it exists (or is made) and takes a file.
pub fn check_archive_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    drop(Partial::create(dir)?);
    Ok(())
}

/// Archives, then purges, every whole UTC day of events that occurred before `cutoff` (so
/// events stay up to a day past the retention), oldest day first: one gzip JSON-lines file per
/// day, synced before the day's events are deleted. Each day is one transaction on one
/// connection, holding an advisory lock that replicas take in turn: its reads and its deletes
/// run under the lock, so a lost connection (and lock) cannot delete anything. Returns the
/// events archived and purged.
pub async fn archive_and_purge(pool: &Pool, dir: &Path, cutoff: DateTime<Utc>) -> anyhow::Result<u64> {
    let mut purged = 0;
    while let Some(n) = archive_oldest_day(pool, dir, cutoff.date_naive()).await? {
        purged += n;
    }
    Ok(purged)
}

/// Archives and purges the oldest day before `last_day`; `None` when there is none, or another
/// replica is at it.
async fn archive_oldest_day(pool: &Pool, dir: &Path, last_day: NaiveDate) -> anyhow::Result<Option<u64>> {
    use diesel_async::AsyncConnection;
    const ARCHIVE_LOCK: i64 = 7204;
    let mut conn = store::conn(pool).await?;
    // A failed archive rolls back: it deletes nothing.
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        if !store::try_lock_for_transaction(conn, ARCHIVE_LOCK).await? {
            return Ok(None);
        }
        archive_day(conn, dir, last_day).await
    })
    .await
}

async fn archive_day(conn: &mut Conn<'_>, dir: &Path, last_day: NaiveDate) -> anyhow::Result<Option<u64>> {
    let Some(oldest) = store::audit::oldest_time(conn).await? else {
        return Ok(None);
    };
    if oldest >= day_start(last_day) {
        return Ok(None);
    }
    let day = oldest.date_naive();
    let next = day.succ_opt().context("the last day there is")?;
    let gzip = flate2::write::GzEncoder::new(Partial::create(dir)?, flate2::Compression::default());
    let (written, gzip) = write_range(conn, Some(day_start(day)), day_start(next), gzip).await?;
    let file = tokio::task::spawn_blocking(move || gzip.finish()).await??;
    let path = file.commit(archive_names(dir, day)).await?;
    let mut deleted = 0;
    for (first, last) in written.pieces() {
        deleted += store::audit::delete_ids_between(conn, first, last).await? as u64;
    }
    tracing::info!(%day, events = deleted, file = %path.display(), "audit events archived and purged");
    Ok(Some(deleted))
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

#[cfg(test)]
mod tests {
    use super::Written;

    #[test]
    fn ids_are_kept_as_runs_and_deleted_in_pieces_of_at_most_ten_thousand() {
        let mut written = Written::default();
        for id in (1..=25_000).chain([25_002, 25_003, 40_000]) {
            written.push(id);
        }
        assert_eq!(written.count(), 25_003);
        assert_eq!(written.runs, [(1, 25_000), (25_002, 25_003), (40_000, 40_000)]);
        assert_eq!(written.span(), Some((1, 40_000)));
        let pieces: Vec<_> = written.pieces().collect();
        assert_eq!(
            pieces,
            [
                (1, 10_000),
                (10_001, 20_000),
                (20_001, 25_000),
                (25_002, 25_003),
                (40_000, 40_000)
            ]
        );
        assert_eq!(Written::default().span(), None);
    }
}

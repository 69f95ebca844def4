//! `authd audit export` and the retention job's archive: what leaves the database is exactly what
//! was written, and only once it is on disk.

use crate::helpers::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::Command;
use std::time::Duration;

fn authd(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AUTHD_DATABASE_URL", database_url);
    command
}

/// `n` events 100 days old, a second apart, 10 of today, and `late` more 100 days old written
/// after those (ids follow time but for such late writes).
async fn fill(database_url: &str, n: u32, late: u32) {
    let mut db = AsyncPgConnection::establish(database_url).await.unwrap();
    db.batch_execute(&format!(
        "INSERT INTO audit_events (type, user_id, occurred_at, ip_address, user_agent, outcome, details)
         SELECT 'login.failed', NULL, now() - interval '100 days' + g * interval '1 second',
                '203.0.113.7', 'curl/8', 'failure', '{{\"n\": ' || g || '}}'
         FROM generate_series(1, {n}) g;
         INSERT INTO audit_events (type, user_id, occurred_at, ip_address, user_agent, outcome, details)
         SELECT 'login.failed', NULL, now(), NULL, NULL, 'failure', '{{}}' FROM generate_series(1, 10);
         INSERT INTO audit_events (type, user_id, occurred_at, ip_address, user_agent, outcome, details)
         SELECT 'login.failed', NULL, now() - interval '100 days', NULL, NULL, 'failure', '{{\"late\": true}}'
         FROM generate_series(1, {late});"
    ))
    .await
    .unwrap();
}

/// A new empty directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("authd-archive-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn ids_left(database_url: &str) -> BTreeSet<i64> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let mut db = AsyncPgConnection::establish(database_url).await.unwrap();
    diesel::sql_query("SELECT id FROM audit_events")
        .load::<Id>(&mut db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.id)
        .collect()
}

/// Every line of an export, parsed, with its id; asserts the fields and the id order.
fn read_lines(reader: impl BufRead) -> Vec<(i64, serde_json::Value)> {
    let mut events = Vec::new();
    for line in reader.lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).expect("a JSON object per line");
        let id: i64 = event["id"].as_str().expect("id as a string").parse().unwrap();
        for field in ["type", "occurred_at", "outcome"] {
            assert!(event[field].is_string(), "{field} in {event}");
        }
        assert!(event["details"].is_object(), "{event}");
        assert!(events.last().is_none_or(|(last, _)| *last < id), "ids in order");
        events.push((id, event));
    }
    events
}

#[tokio::test]
async fn export_then_purge_deletes_exactly_the_events_written() {
    let (_, url) = fresh_database().await;
    fill(&url, 100_000, 5).await;
    let before = ids_left(&url).await;
    let dir = TempDir::new();
    let file = dir.path().join("old.jsonl");
    let out = authd(&url)
        .args(["audit", "export", "--before", "30d", "--purge", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("100005 events"), "{stderr}");

    let events = read_lines(std::io::BufReader::new(std::fs::File::open(&file).unwrap()));
    assert_eq!(events.len(), 100_005);
    assert_eq!(events.iter().filter(|(_, e)| e["details"]["late"] == true).count(), 5);
    let (_, first) = &events[0];
    assert_eq!(first["type"], "login.failed");
    assert_eq!(first["ip_address"], "203.0.113.7");
    assert_eq!(first["user_agent"], "curl/8");
    assert_eq!(first["details"]["n"], 1);
    assert!(first["user_id"].is_null());
    let written: BTreeSet<i64> = events.iter().map(|(id, _)| *id).collect();
    let left = ids_left(&url).await;
    assert_eq!(left.len(), 10, "today's events stay");
    assert!(left.is_disjoint(&written));
    assert_eq!(
        before.difference(&left).copied().collect::<BTreeSet<_>>(),
        written,
        "what went is what was written"
    );
    // Nothing half-written is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("old.jsonl")]);
    assert_eq!(mode(&file), 0o600, "only its owner may read it");

    // Never over an earlier export (its events are gone from the database).
    let out = authd(&url)
        .args(["audit", "export", "--before", "1s", "--purge", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"), "{out:?}");
    assert_eq!(
        read_lines(std::io::BufReader::new(std::fs::File::open(&file).unwrap())).len(),
        100_005
    );
    assert_eq!(ids_left(&url).await.len(), 10);

    // Without --out there is nothing to purge against: refused, nothing deleted.
    let out = authd(&url)
        .args(["audit", "export", "--before", "2020-01-01T00:00:00Z", "--purge"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
    // To standard output, nothing deleted (today's ten are over a second old now).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = authd(&url)
        .args(["audit", "export", "--before", "1s"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(read_lines(&out.stdout[..]).len(), 10);
    // Not a time, an age without its unit (90 would be seconds), the future: refused.
    for before in ["soon", "90", "2999-01-01T00:00:00Z"] {
        let out = authd(&url)
            .args(["audit", "export", "--before", before])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{before}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--before"), "{before}");
    }
    assert_eq!(ids_left(&url).await.len(), 10);
}

#[tokio::test]
async fn an_export_killed_before_its_purge_deletes_nothing() {
    use diesel_async::RunQueryDsl;
    let (_, url) = fresh_database().await;
    fill(&url, 100_000, 0).await;
    // Hold the table against deletes (not reads) so that the purge waits, then kill the export.
    let mut holder = AsyncPgConnection::establish(&url).await.unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE audit_events IN SHARE MODE")
        .await
        .unwrap();
    let dir = TempDir::new();
    let file = dir.path().join("old.jsonl");
    let mut export = authd(&url)
        .args(["audit", "export", "--before", "30d", "--purge", "--out"])
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut watcher = AsyncPgConnection::establish(&url).await.unwrap();
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let started = std::time::Instant::now();
    loop {
        let waiting = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query ILIKE 'DELETE FROM%audit_events%'",
        )
        .get_result::<Waiting>(&mut watcher)
        .await
        .unwrap();
        if waiting.n == 1 {
            break;
        }
        assert!(export.try_wait().unwrap().is_none(), "the export ended without purging");
        assert!(started.elapsed() < Duration::from_secs(60), "the purge never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    export.kill().unwrap();
    export.wait().unwrap();
    holder.batch_execute("COMMIT").await.unwrap();

    assert_eq!(ids_left(&url).await.len(), 100_010, "nothing deleted");
    // The file was whole before the purge began.
    let events = read_lines(std::io::BufReader::new(std::fs::File::open(&file).unwrap()));
    assert_eq!(events.len(), 100_000);
}

/// Waits for the retention job to leave no event older than its 30 days.
async fn past_retention_purged(app: &TestApp) {
    crate::cluster::within(Duration::from_secs(20), || async {
        app.count("SELECT count(*) FROM audit_events WHERE occurred_at < now() - interval '30 days'")
            .await
            == 0
    })
    .await;
}

#[tokio::test]
async fn the_retention_job_archives_each_day_before_it_purges_it() {
    let dir = TempDir::new();
    let archive = dir.path().to_str().unwrap().to_string();
    let app = spawn_app_with(&[
        ("AUTHD_AUDIT_RETENTION", "30d"),
        ("AUTHD_AUDIT_ARCHIVE_DIR", &archive),
        ("AUTHD_HOUSEKEEPING_INTERVAL", "500ms"),
    ])
    .await;
    let mut db = app.db().await;
    // Three old days (noon UTC, 3, 2 and 1 events), one event 29 days old that stays.
    db.batch_execute(
        "INSERT INTO audit_events (type, occurred_at, outcome, details)
         SELECT 'logout', date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                          - d * interval '1 day' + interval '12 hours', 'success', '{}'
         FROM generate_series(40, 42) d, generate_series(1, 43 - d);
         INSERT INTO audit_events (type, occurred_at, outcome, details)
         VALUES ('logout', now() - interval '29 days', 'success', '{}');",
    )
    .await
    .unwrap();
    past_retention_purged(&app).await;
    assert_eq!(
        app.count("SELECT count(*) FROM audit_events WHERE occurred_at < now() - interval '28 days'")
            .await,
        1
    );
    let today = chrono::Utc::now().date_naive();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let expected: Vec<String> = [42, 41, 40]
        .iter()
        .map(|d| format!("audit-{}.jsonl.gz", (today - chrono::Days::new(*d)).format("%Y-%m-%d")))
        .collect();
    assert_eq!(names, expected, "one file per day, nothing half-written");
    let archived = |name: &str| {
        assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
        let file = std::fs::File::open(dir.path().join(name)).unwrap();
        read_lines(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
    };
    for (name, n) in expected.iter().zip([1, 2, 3]) {
        let events = archived(name);
        assert_eq!(events.len(), n, "{name}");
        let day = &name["audit-".len().."audit-".len() + 10];
        assert!(
            events
                .iter()
                .all(|(_, e)| e["occurred_at"].as_str().unwrap().starts_with(day)),
            "{name}"
        );
    }

    // An event of an archived day turns up (a restore, a clock that was wrong): a second file
    // for that day, the first kept whole.
    db.batch_execute(
        "INSERT INTO audit_events (type, occurred_at, outcome, details)
         VALUES ('logout', date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                           - interval '41 days' + interval '13 hours', 'success', '{}')",
    )
    .await
    .unwrap();
    past_retention_purged(&app).await;
    let second = expected[1].replace(".jsonl.gz", ".1.jsonl.gz");
    assert_eq!(archived(&expected[1]).len(), 2);
    assert_eq!(archived(&second).len(), 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
}

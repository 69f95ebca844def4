use crate::helpers::*;
use std::process::Command;

fn authd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
    // A clean environment: only what each test sets.
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// The load generator, `authd-bench`, from its own crate: built here (once per test process) with
/// the same cargo and profile as this test, since cargo builds only this package's binaries.
fn authd_bench() -> Command {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let path = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "authd-bench", "--bin", "authd-bench"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p authd-bench");
        assert!(status.success(), "cargo build -p authd-bench failed");
        std::path::Path::new(env!("CARGO_BIN_EXE_authd"))
            .with_file_name(format!("authd-bench{}", std::env::consts::EXE_SUFFIX))
    });
    let mut command = Command::new(path);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[test]
fn help_works_for_every_command() {
    let out = authd_bench().arg("--help").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Usage"),
        "authd-bench --help"
    );
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["keys", "--help"],
        vec!["keys", "rotate", "--help"],
        vec!["keys", "list", "--help"],
        vec!["users", "--help"],
        vec!["users", "create-admin", "--help"],
        vec!["api-keys", "--help"],
        vec!["api-keys", "create", "--help"],
        vec!["audit", "--help"],
        vec!["audit", "export", "--help"],
        vec!["healthcheck", "--help"],
    ] {
        let out = authd().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[tokio::test]
async fn migrate_twice_then_keys_and_admin_commands() {
    let (_, url) = fresh_database().await;
    let kek = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let run = |args: &[&str], extra: &[(&str, &str)]| {
        let mut command = authd();
        command
            .env("AUTHD_DATABASE_URL", &url)
            .env("AUTHD_KEY_ENCRYPTION_KEY", kek)
            .args(args);
        for (k, v) in extra {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    for _ in 0..2 {
        let out = run(&["migrate"], &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = run(
        &["users", "create-admin", "--email", "ops@example.com"],
        &[("AUTHD_ADMIN_PASSWORD", "ops-password-123")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ops-password-123"));
    let out = run(
        &[
            "api-keys",
            "create",
            "--owner",
            "ops@example.com",
            "--label",
            "gw",
            "--scope",
            "tokens:introspect",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).trim().starts_with("authd_"));
    // Published now, signing after the publish-ahead: the current key stays active meanwhile.
    let out = run(&["keys", "rotate"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["keys", "list"], &[]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(" next ") && listing.contains(" active "), "{listing}");
    assert!(!listing.contains(" retired "), "{listing}");
    // The next key cannot be revoked (from its activation nothing would sign), nor the active one.
    for state in [" next ", " active "] {
        let kid = listing
            .lines()
            .find(|l| l.contains(state))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string();
        let out = run(&["keys", "revoke", &kid], &[]);
        assert!(!out.status.success(), "revoked the{state}key");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("only retired keys can be revoked"), "{stderr}");
    }
    // An emergency rotation signs at once: the others retire.
    let out = run(&["keys", "rotate", "--now"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&run(&["keys", "list"], &[]).stdout).to_string();
    assert_eq!(listing.matches(" active ").count(), 1, "{listing}");
    assert_eq!(listing.matches(" retired ").count(), 2, "{listing}");
    assert!(!listing.contains(" next "), "{listing}");
}

#[test]
fn a_missing_setting_stops_start_up_with_one_line_naming_it() {
    let out = authd()
        .args(["serve"])
        .env("AUTHD_KEY_ENCRYPTION_KEY", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("AUTHD_DATABASE_URL"), "{stderr}");
}

#[test]
fn an_unreachable_database_is_one_clear_line() {
    let out = authd()
        .args(["serve"])
        .env("AUTHD_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env(
            "AUTHD_KEY_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("authd:") && stderr.contains("database"), "{stderr}");
}

/// `authd-bench` sets itself up through the API (an admin's API key, its own users) and runs every
/// scenario against a real server without a failed call. Only that is checked: its figures are
/// measurements, not assertions.
#[tokio::test]
async fn bench_runs_every_scenario_without_a_failed_call() {
    let app = spawn_app().await;
    let mut command = authd_bench();
    command
        .env("AUTHD_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("AUTHD_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .args(["--target", &app.addr.to_string()])
        .args([
            "--duration",
            "0.5",
            // No warm-up: the first call of each worker counts, however slow a login is on a
            // loaded machine (a call sent in the window counts when it ends after it).
            "--warmup",
            "0",
            "--concurrency",
            "2",
            "--connections",
            "1",
        ])
        .args([
            "--distinct-tokens",
            "40",
            "--flood-concurrency",
            "2",
            "--mix-rate",
            "40",
        ]);
    // The server runs on this test's runtime: wait for the generator off it.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in [
        "| health ",
        "| introspect-repeated ",
        "| refresh ",
        "| introspect-distinct ",
        "| login ",
        "| mix: introspect 40/s alone ",
        "| mix: introspect, login flood ",
        "| mix: the login flood ",
    ] {
        let row = stdout
            .lines()
            .find(|line| line.starts_with(scenario))
            .unwrap_or_else(|| panic!("no row {scenario:?} in:\n{stdout}"));
        let columns: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_ne!(columns[2], "0", "{scenario}: no call completed:\n{row}");
        assert_eq!(columns[7], "0", "{scenario}: calls failed:\n{row}");
    }
    assert!(stdout.contains("| Introspect, repeated token |"), "{stdout}");
    assert!(stdout.contains("| Login |"), "{stdout}");
    // The bench's API key is revoked when it is done.
    let admin = app.admin().await;
    let keys = app
        .api_keys()
        .list_api_keys(bearer(authd::proto::ListApiKeysRequest {}, &admin.access_token))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys.iter().all(|key| key.revoked_at.is_some()),
        "the bench left a live API key: {keys:?}"
    );
}

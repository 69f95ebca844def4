//! `authd-chaos`: three authd replicas on highly available Postgres and Redis, under load, with
//! faults injected on a schedule, then the invariants checked over the log of every answer.
//! Run by `scripts/chaos.sh` (as root: the third replica lives in a network namespace).

mod check;
mod cluster;
mod load;
mod log;
mod smtp;

use anyhow::Context;
use base64::Engine as _;
use clap::Parser;
use cluster::{HOST, INSIDE, Namespace, Postgres, Process, free_port, wait_for};
use log::{Entry, Kind, Log};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

#[derive(Parser)]
#[command(about = "Faults under load for authd, and the invariants over the answers")]
enum Cli {
    /// Builds the cluster, runs the load and the faults, prints the invariant table.
    Run(RunArgs),
    /// Checks the invariants over a log written by `run`.
    Check {
        log: PathBuf,
        #[command(flatten)]
        expect: Expect,
    },
}

#[derive(clap::Args)]
struct Expect {
    /// Succeed only if this invariant is violated (for a deliberately broken build): one of
    /// revocation, coverage, refresh, mail, recovery, answers, panics.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(check::IDS))]
    expect: Option<String>,
}

impl Expect {
    /// Prints the table; whether the run passed: no violation at all, or with `--expect` a
    /// violation of that invariant.
    fn verdict(&self, outcomes: &[check::Outcome]) -> bool {
        let (table, clean) = check::report(outcomes);
        println!("{table}");
        let Some(expected) = &self.expect else {
            return clean;
        };
        let caught = outcomes
            .iter()
            .any(|o| o.id == expected.as_str() && !o.violations.is_empty());
        if caught {
            println!("chaos: `{expected}` was violated, as the defect should make it");
        } else {
            println!("chaos: `{expected}` held: the defect was not caught");
        }
        caught
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Seconds of load; the faults are spread over it.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// The authd binary.
    #[arg(long)]
    authd: PathBuf,
    /// PostgreSQL's bin directory.
    #[arg(long)]
    pg_bin: PathBuf,
    /// A directory for the servers' data and logs, and the answer log (`answers.jsonl`).
    #[arg(long)]
    work: PathBuf,
    /// Virtual clients.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[command(flatten)]
    expect: Expect,
}

const ADMIN_EMAIL: &str = "chaos-admin@chaos.example.com";
const ADMIN_PASSWORD: &str = "chaos-admin-password-1234";

/// Exits 0 when every invariant held (with `--expect`: when that one was violated), 1 when not,
/// 2 when the run itself failed or was interrupted. SIGINT or SIGTERM stops the run, and every
/// server it started, at once.
#[tokio::main]
async fn main() {
    let outcome = match Cli::parse() {
        Cli::Run(args) => tokio::select! {
            outcome = run(args) => outcome,
            signal = interrupted() => Err(anyhow::anyhow!("stopped by {signal}")),
        },
        Cli::Check { log, expect } => log::read(&log).map(|entries| expect.verdict(&check::check(&entries))),
    };
    match outcome {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("authd-chaos: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Resolves on SIGINT or SIGTERM (dropping the run then stops its servers and removes the
/// namespace).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

/// The ports of the backends, all on [`HOST`].
struct Ports {
    postgres: [u16; 2],
    redis: [u16; 2],
    sentinels: [u16; 3],
    smtp: u16,
}

/// The run; `Ok(false)` when an invariant was violated.
async fn run(args: RunArgs) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let log = Log::create(&work.join("answers.jsonl"))?;
    let namespace = Namespace::create().context("the network namespace (this needs root)")?;
    let mut ports = Vec::new();
    while ports.len() < 8 {
        let port = free_port(HOST)?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let ports = Ports {
        postgres: [ports[0], ports[1]],
        redis: [ports[2], ports[3]],
        sentinels: [ports[4], ports[5], ports[6]],
        smtp: ports[7],
    };

    eprintln!("chaos: Postgres primary and synchronous standby");
    let primary = Postgres::init_primary(&args.pg_bin, &work, ports.postgres[0])?;
    primary.psql("postgres", "CREATE DATABASE authd")?;
    let standby = Postgres::standby_of(&primary, &work, ports.postgres[1])?;
    primary.require_synchronous_standby()?;
    let _stop_postgres = Finally(|| {
        primary.stop();
        standby.stop();
    });
    wait_for("the standby to be synchronous", Duration::from_secs(30), || {
        primary
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
            )
            .is_ok_and(|n| n.trim() == "1")
    })
    .await?;

    eprintln!(
        "chaos: at {:.1} s, Redis primary, replica and three sentinels",
        log.now() as f64 / 1e6
    );
    let mut redis = [
        cluster::redis(&work, ports.redis[0], None)?,
        cluster::redis(&work, ports.redis[1], Some(ports.redis[0]))?,
    ];
    let mut sentinels = Vec::new();
    for port in ports.sentinels {
        sentinels.push(cluster::sentinel(&work, port, ports.redis[0])?);
    }
    wait_for("the sentinels to agree", Duration::from_secs(30), || {
        cluster::run(
            "redis-cli",
            &[
                "-h",
                &HOST.to_string(),
                "-p",
                &ports.sentinels[0].to_string(),
                "sentinel",
                "ckquorum",
                cluster::MASTER_NAME,
            ],
        )
        .is_ok_and(|out| out.starts_with("OK"))
            && cluster::run(
                "redis-cli",
                &[
                    "-h",
                    &HOST.to_string(),
                    "-p",
                    &ports.redis[1].to_string(),
                    "info",
                    "replication",
                ],
            )
            .is_ok_and(|out| out.contains("master_link_status:up"))
    })
    .await?;

    eprintln!(
        "chaos: set-up so far {:.1} s; migrations and three replicas",
        log.now() as f64 / 1e6
    );
    let smtp = smtp::Smtp::start(SocketAddr::from((HOST, ports.smtp)), log.clone()).await?;

    let hosts = |ports: &[u16]| {
        ports
            .iter()
            .map(|port| format!("{HOST}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let key: String = {
        let bytes = std::fs::read("/proc/sys/kernel/random/uuid")?;
        let mut material = String::from_utf8_lossy(&bytes).replace('-', "");
        material.truncate(32);
        base64::engine::general_purpose::STANDARD.encode(material.as_bytes())
    };
    let common: Vec<(String, String)> = [
        (
            "AUTHD_DATABASE_URL",
            format!(
                "postgresql://postgres@{}/authd?target_session_attrs=read-write&connect_timeout=2",
                hosts(&ports.postgres)
            ),
        ),
        (
            "AUTHD_REDIS_URL",
            format!("redis+sentinel://{}/{}", hosts(&ports.sentinels), cluster::MASTER_NAME),
        ),
        ("AUTHD_KEY_ENCRYPTION_KEY", key),
        ("AUTHD_SMTP_URL", format!("smtp://{HOST}:{}", ports.smtp)),
        ("AUTHD_TRUSTED_PROXIES", "127.0.0.0/8,10.213.0.0/24".into()),
        ("AUTHD_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.into()),
        ("AUTHD_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ("AUTHD_ISSUER", "http://authd-chaos".into()),
        ("AUTHD_SHUTDOWN_GRACE", "1s".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let authd = args.authd.to_str().context("a path that is not UTF-8")?.to_string();
    cluster::run_with_env(&authd, &["migrate"], &common)?;

    let addresses = [
        cluster::Addresses {
            grpc: SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1].into())?)),
            http: SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1].into())?)),
        },
        cluster::Addresses {
            grpc: SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1].into())?)),
            http: SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1].into())?)),
        },
        // The namespace is empty: any port is free there.
        cluster::Addresses {
            grpc: SocketAddr::from((INSIDE, 50051)),
            http: SocketAddr::from((INSIDE, 8080)),
        },
    ];
    let mut replicas: Vec<Process> = addresses
        .iter()
        .enumerate()
        .map(|(i, address)| {
            let mut env = common.clone();
            env.push(("AUTHD_GRPC_ADDR".into(), address.grpc.to_string()));
            env.push(("AUTHD_HTTP_ADDR".into(), address.http.to_string()));
            let logfile = work.join(format!("authd-{}.log", i + 1));
            if i == 2 {
                let args = ["netns", "exec", &namespace.name, &authd, "serve"];
                Process::new("replica 3", "ip", args.map(String::from).to_vec(), env, logfile)
            } else {
                Process::new(
                    &format!("replica {}", i + 1),
                    &authd,
                    vec!["serve".into()],
                    env,
                    logfile,
                )
            }
        })
        .collect();
    for replica in &mut replicas {
        replica.start()?;
    }
    let channels: Vec<Channel> = addresses
        .iter()
        .map(|address| {
            Endpoint::from_shared(format!("http://{}", address.grpc))
                .map(|endpoint| {
                    endpoint
                        .connect_timeout(Duration::from_secs(1))
                        .tcp_nodelay(true)
                        .connect_lazy()
                })
                .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<_>>()?;
    for (i, channel) in channels.iter().enumerate() {
        let serving = async {
            loop {
                if serving(channel).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), serving)
            .await
            .map_err(|_| anyhow::anyhow!("replica {} did not start serving (see authd-{}.log)", i + 1, i + 1))?;
    }

    let introspector = setup::introspector(&channels[0], ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let tag: String = std::process::id().to_string();
    let load = Arc::new(load::Load {
        log: log.clone(),
        channels: channels.clone(),
        introspector,
        next_id: Default::default(),
        revoked: Default::default(),
        tag,
    });

    eprintln!(
        "chaos: set-up took {:.1} s; {} s of load with faults",
        log.now() as f64 / 1e6,
        args.duration
    );
    let until = log.now() + args.duration * 1_000_000;
    let health = tokio::spawn(sample_health(log.clone(), channels.clone()));
    let mut workers = Vec::new();
    for worker in 0..args.clients {
        workers.push(tokio::spawn(load.clone().client(worker, until)));
    }
    workers.push(tokio::spawn(load.clone().prober(until + 2_500_000)));

    let scale = args.duration as f64 / 30.0;
    let faults = Faults {
        origin: log.now(),
        log: log.clone(),
        namespace: &namespace,
        ports: &ports,
        scale,
    };
    let last_fault = faults.run(&mut replicas, &mut redis, &primary, &standby, &smtp).await?;
    for worker in workers {
        worker.await?;
    }

    eprintln!("chaos: waiting for the mail and for every replica to serve");
    // Past the last fault by authd's claim on a mail and a poll of the outbox too: a mail that
    // a fault left claimed but unrecorded goes out again by then, so a second copy is seen.
    let settled = last_fault + (check::RECOVERY_BOUND_US + 1_000_000).max(MAIL_CLAIM_US + MAIL_POLL_US + 2_000_000);
    let drain_until = (log.now() + 60_000_000).max(settled + 10_000_000);
    loop {
        let entries = log.entries();
        let recovered = log.now() > settled;
        if recovered && all_mail_delivered(&entries) || log.now() > drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    health.abort();
    for replica in &mut replicas {
        replica.kill();
        let text = std::fs::read_to_string(replica.log_path()).unwrap_or_default();
        let panics = text.matches("panicked at").count() as u64;
        log.push(Entry {
            kind: Some(Kind::Panics),
            op: replica.name.clone(),
            count: Some(panics),
            ..Entry::default()
        });
    }
    drop(sentinels);
    drop(redis);
    let entries = log.entries();
    let calls = entries.iter().filter(|e| e.kind() == Kind::Call).count();
    println!(
        "chaos: {calls} answers logged in {} ({} s of load, faults over {:.0} s)",
        work.join("answers.jsonl").display(),
        args.duration,
        last_fault as f64 / 1e6
    );
    let passed = args.expect.verdict(&check::check(&entries));
    if !passed {
        eprintln!("chaos: the run failed; the logs are in {}", work.display());
    }
    Ok(passed)
}

/// How long authd claims a mail it sends (`MAIL_LEASE` in src/jobs.rs), and how often it looks
/// at the outbox here (`AUTHD_MAIL_POLL_INTERVAL`'s default).
const MAIL_CLAIM_US: u64 = 45_000_000;
const MAIL_POLL_US: u64 = 5_000_000;

/// Runs `f` on drop.
struct Finally<F: FnMut()>(F);

impl<F: FnMut()> Drop for Finally<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

async fn serving(channel: &Channel) -> bool {
    let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    request.set_timeout(Duration::from_secs(1));
    matches!(
        HealthClient::new(channel.clone()).check(request).await,
        Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32
    )
}

/// Every replica's health, four times a second.
async fn sample_health(log: Log, channels: Vec<Channel>) {
    loop {
        for (i, channel) in channels.iter().enumerate() {
            let t0 = log.now();
            let up = serving(channel).await;
            log.push(Entry {
                kind: Some(Kind::Health),
                op: "health".into(),
                replica: Some(i + 1),
                t0,
                t1: log.now(),
                active: Some(up),
                ..Entry::default()
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn all_mail_delivered(entries: &[Entry]) -> bool {
    let delivered: std::collections::HashSet<&str> = entries
        .iter()
        .filter(|e| e.kind() == Kind::Mail)
        .filter_map(|e| e.mailbox.as_deref())
        .collect();
    entries
        .iter()
        .filter(|e| e.kind() == Kind::Call && e.op == "request_reset" && e.is_ok())
        .filter_map(|e| e.mailbox.as_deref())
        .all(|mailbox| delivered.contains(mailbox))
}

/// The schedule, for a 30-second run (times scale with the duration): every fault once, one at
/// a time but for the mail server's outage, which overlaps Redis's failover.
struct Faults<'a> {
    /// When the load began.
    origin: u64,
    log: Log,
    namespace: &'a Namespace,
    ports: &'a Ports,
    scale: f64,
}

impl Faults<'_> {
    async fn at(&self, seconds: f64) {
        let target = self.origin + (seconds * self.scale * 1e6) as u64;
        let now = self.log.now();
        if target > now {
            tokio::time::sleep(Duration::from_micros(target - now)).await;
        }
    }

    fn record(&self, name: &str, t0: u64) -> u64 {
        self.record_on(name, None, t0)
    }

    /// A fault of one replica only (`replica`, numbered from 1).
    fn record_on(&self, name: &str, replica: Option<usize>, t0: u64) -> u64 {
        let t1 = self.log.now();
        eprintln!(
            "chaos: {name} from {:.1} s to {:.1} s",
            t0 as f64 / 1e6,
            t1 as f64 / 1e6
        );
        self.log.push(Entry {
            kind: Some(Kind::Fault),
            op: name.into(),
            replica,
            t0,
            t1,
            ..Entry::default()
        });
        t1
    }

    /// Runs them all; returns when the last one ended.
    async fn run(
        &self,
        replicas: &mut [Process],
        redis: &mut [Process; 2],
        primary: &Postgres,
        standby: &Postgres,
        smtp: &smtp::Smtp,
    ) -> anyhow::Result<u64> {
        let mut redis_ports: Vec<u16> = self.ports.redis.to_vec();
        redis_ports.extend(self.ports.sentinels);

        self.at(2.0).await;
        let t0 = self.log.now();
        self.namespace.drop_traffic_to(&redis_ports, true)?;
        self.at(6.0).await;
        self.namespace.drop_traffic_to(&redis_ports, false)?;
        self.record_on("partition of replica 3 from Redis", Some(3), t0);

        self.at(7.5).await;
        let t0 = self.log.now();
        replicas[0].kill();
        self.at(9.0).await;
        replicas[0].start()?;
        self.record("SIGKILL of replica 1, then restart", t0);

        self.at(10.0).await;
        let smtp_down = self.log.now();
        smtp.set_up(false);

        self.at(11.0).await;
        let t0 = self.log.now();
        redis[0].kill();
        let sentinel = self.ports.sentinels[0];
        let promoted = self.ports.redis[1];
        wait_for("Sentinel's failover", Duration::from_secs(30), || {
            cluster::redis_master(sentinel) == Some(promoted)
        })
        .await?;
        self.record("Redis primary killed, Sentinel failover", t0);

        self.at(16.0).await;
        smtp.set_up(true);
        self.record("SMTP server down", smtp_down);

        self.at(17.0).await;
        let t0 = self.log.now();
        redis[0].start()?;
        self.record("former Redis primary back (as a replica)", t0);

        self.at(19.0).await;
        let t0 = self.log.now();
        primary.crash()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        standby.promote()?;
        Ok(self.record("Postgres primary crashed, standby promoted", t0))
    }
}

mod setup {
    use anyhow::Context;
    use authd_proto::{
        CreateApiKeyRequest, LoginRequest, api_key_service_client::ApiKeyServiceClient,
        auth_service_client::AuthServiceClient,
    };
    use tonic::transport::Channel;

    /// `Bearer <API key>` with `tokens:introspect`, made by the bootstrap administrator.
    pub async fn introspector(channel: &Channel, email: &str, password: &str) -> anyhow::Result<String> {
        let login = AuthServiceClient::new(channel.clone())
            .login(LoginRequest {
                identifier: email.into(),
                password: password.into(),
                device_name: None,
            })
            .await
            .context("the administrator's login")?
            .into_inner();
        let access = login.tokens.context("no tokens")?.access_token;
        let mut request = tonic::Request::new(CreateApiKeyRequest {
            label: "chaos introspection".into(),
            scopes: vec!["tokens:introspect".into()],
            expires_at: None,
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {access}").parse()?);
        let created = ApiKeyServiceClient::new(channel.clone())
            .create_api_key(request)
            .await
            .context("the introspection key")?
            .into_inner();
        Ok(format!("Bearer {}", created.secret))
    }
}

#[cfg(test)]
mod tests {
    /// The deliberate defects of `chaos.sh --broken` must still apply to the code they break, and
    /// name the invariant the checker must then find violated.
    #[test]
    fn every_broken_patch_applies_to_the_tree() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = root.join("tests/chaos/broken");
        let mut patches = 0;
        for entry in std::fs::read_dir(&dir).expect("tests/chaos/broken") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|ext| ext == "patch") {
                patches += 1;
                let checked = std::process::Command::new("git")
                    .arg("-C")
                    .arg(&root)
                    .args(["apply", "--check"])
                    .arg(&path)
                    .output()
                    .expect("git");
                assert!(
                    checked.status.success(),
                    "{} no longer applies: {}",
                    path.display(),
                    String::from_utf8_lossy(&checked.stderr)
                );
                let text = std::fs::read_to_string(&path).expect("the patch");
                let named = text.lines().find_map(|line| line.strip_prefix("Invariant: "));
                assert!(
                    named.is_some_and(|id| crate::check::IDS.contains(&id.trim())),
                    "{} must name the invariant it breaks on an `Invariant: ID` line, one of {:?}",
                    path.display(),
                    crate::check::IDS
                );
            }
        }
        assert!(patches >= 3);
    }
}

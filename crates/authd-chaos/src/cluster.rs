//! The cluster under test, all on this machine: a Postgres primary with a synchronous streaming
//! standby, a Redis primary with a replica and three sentinels, and three authd replicas, the
//! third in a network namespace of its own so that its traffic to Redis can be dropped.

use anyhow::{Context, bail};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The host's end of the namespace's link: every backend listens here.
pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// The namespace's end, where the third replica listens.
pub const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
pub const MASTER_NAME: &str = "authd-chaos";

/// Runs a command to its end; an error names it and shows its output.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// [`run`] with these variables set.
pub fn run_with_env(program: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A port free on `address` now.
pub fn free_port(address: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((address, 0))?.local_addr()?.port())
}

/// The network namespace and its veth link; removed on drop.
pub struct Namespace {
    pub name: String,
    veth: String,
}

impl Namespace {
    pub fn create() -> anyhow::Result<Self> {
        // Fixed names: what a killed run left behind is cleared by the next.
        let name = "authd-chaos".to_string();
        let veth = "authd-chaos0".to_string();
        let peer = format!("{veth}p");
        // Left over from a run that was killed: the addresses would clash.
        let _ = run("ip", &["netns", "del", &name]);
        for line in run("ip", &["-o", "addr", "show"])?.lines() {
            if line.contains(&format!("{HOST}/24"))
                && let Some(device) = line.split_whitespace().nth(1)
            {
                let _ = run("ip", &["link", "del", device.trim_end_matches(':')]);
            }
        }
        run("ip", &["netns", "add", &name])?;
        let namespace = Self { name, veth };
        run(
            "ip",
            &["link", "add", &namespace.veth, "type", "veth", "peer", "name", &peer],
        )?;
        run("ip", &["link", "set", &peer, "netns", &namespace.name])?;
        run("ip", &["addr", "add", &format!("{HOST}/24"), "dev", &namespace.veth])?;
        run("ip", &["link", "set", &namespace.veth, "up"])?;
        namespace.exec(&["ip", "addr", "add", &format!("{INSIDE}/24"), "dev", &peer])?;
        namespace.exec(&["ip", "link", "set", &peer, "up"])?;
        namespace.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    pub fn exec(&self, command: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(command);
        run("ip", &args)
    }

    /// Drops (silently: no reset, no refusal) the namespace's TCP traffic to these ports of the
    /// host, or lets it through again.
    pub fn drop_traffic_to(&self, ports: &[u16], dropped: bool) -> anyhow::Result<()> {
        let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let host = HOST.to_string();
        let action = if dropped { "-I" } else { "-D" };
        self.exec(&[
            "iptables",
            action,
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            &host,
            "-m",
            "multiport",
            "--dports",
            &ports,
            "-j",
            "DROP",
        ])?;
        Ok(())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.veth]);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// One Postgres server, run by the `postgres` user when we are root.
pub struct Postgres {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
}

fn as_postgres(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let program = program.to_str().context("a path that is not UTF-8")?;
    let mut all = vec!["-u", "postgres", "--", program];
    all.extend_from_slice(args);
    run("runuser", &all)
}

impl Postgres {
    fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    fn data(&self) -> &str {
        self.data.to_str().expect("UTF-8 path")
    }

    /// A new primary: trust on the namespace's network, WAL for a standby.
    pub fn init_primary(bin: &Path, work: &Path, port: u16) -> anyhow::Result<Self> {
        let server = Self {
            bin: bin.to_path_buf(),
            data: work.join("pg-primary"),
            port,
        };
        std::fs::create_dir_all(&server.data)?;
        run("chown", &["postgres:postgres", server.data()])?;
        as_postgres(
            &server.tool("initdb"),
            &[
                "-D",
                server.data(),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )?;
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(server.data.join("pg_hba.conf"))?;
        std::io::Write::write_all(
            &mut hba,
            b"host all all 10.213.0.0/24 trust\nhost replication all 10.213.0.0/24 trust\n",
        )?;
        server.start(&[])?;
        Ok(server)
    }

    /// A standby streaming from `primary`, from a base backup; it demands no standby of its
    /// own, so it commits alone once promoted.
    pub fn standby_of(primary: &Self, work: &Path, port: u16) -> anyhow::Result<Self> {
        let server = Self {
            bin: primary.bin.clone(),
            data: work.join("pg-standby"),
            port,
        };
        std::fs::create_dir_all(&server.data)?;
        run("chown", &["postgres:postgres", server.data()])?;
        run("chmod", &["700", server.data()])?;
        as_postgres(
            &server.tool("pg_basebackup"),
            &[
                "-h",
                &HOST.to_string(),
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                server.data(),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
            ],
        )?;
        server.start(&["-c synchronous_standby_names=''"])?;
        Ok(server)
    }

    /// From now on a commit waits for a standby to have it, so a promoted standby has lost
    /// nothing acknowledged.
    pub fn require_synchronous_standby(&self) -> anyhow::Result<()> {
        self.psql("postgres", "ALTER SYSTEM SET synchronous_standby_names = '*'")?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    pub fn start(&self, extra: &[&str]) -> anyhow::Result<()> {
        let mut options = format!(
            "-c listen_addresses={HOST} -c port={} -c unix_socket_directories='' -c max_connections=200 \
             -c wal_level=replica -c max_wal_senders=5 -c fsync=off -c full_page_writes=off",
            self.port
        );
        for option in extra {
            options.push(' ');
            options.push_str(option);
        }
        let log = format!("{}.log", self.data());
        std::fs::File::create(&log)?;
        run("chown", &["postgres:postgres", &log])?;
        as_postgres(
            &self.tool("pg_ctl"),
            &["start", "-D", self.data(), "-l", &log, "-w", "-t", "60", "-o", &options],
        )?;
        Ok(())
    }

    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        as_postgres(
            &self.tool("psql"),
            &[
                "-h",
                &HOST.to_string(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-Atc",
                sql,
            ],
        )
    }

    /// As a crash: no checkpoint, connections cut.
    pub fn crash(&self) -> anyhow::Result<()> {
        as_postgres(
            &self.tool("pg_ctl"),
            &["stop", "-D", self.data(), "-m", "immediate", "-w"],
        )?;
        Ok(())
    }

    pub fn promote(&self) -> anyhow::Result<()> {
        as_postgres(&self.tool("pg_ctl"), &["promote", "-D", self.data(), "-w", "-t", "60"])?;
        Ok(())
    }

    pub fn stop(&self) {
        let _ = as_postgres(
            &self.tool("pg_ctl"),
            &["stop", "-D", self.data(), "-m", "immediate", "-w"],
        );
    }
}

/// A child process we started and may kill; killed on drop.
pub struct Process {
    pub name: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    pub fn new(name: &str, program: &str, args: Vec<String>, env: Vec<(String, String)>, log: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            program: program.to_string(),
            args,
            env,
            log,
            child: None,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis server (`replica_of`: the port of its primary on [`HOST`]).
pub fn redis(work: &Path, port: u16, replica_of: Option<u16>) -> anyhow::Result<Process> {
    let dir = work.join(format!("redis-{port}"));
    std::fs::create_dir_all(&dir)?;
    let mut args: Vec<String> = [
        "--bind",
        &HOST.to_string(),
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        // Reached over the veth link, which is not loopback; nothing else can reach it.
        "--protected-mode",
        "no",
        "--dir",
        dir.to_str().expect("UTF-8 path"),
        "--replica-announce-ip",
        &HOST.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(primary) = replica_of {
        args.extend(["--replicaof".into(), HOST.to_string(), primary.to_string()]);
    }
    let mut process = Process::new(
        &format!("redis :{port}"),
        "redis-server",
        args,
        Vec::new(),
        work.join(format!("redis-{port}.log")),
    );
    process.start()?;
    Ok(process)
}

/// A sentinel watching the primary on `primary` (quorum 2 of 3, down after a second).
pub fn sentinel(work: &Path, port: u16, primary: u16) -> anyhow::Result<Process> {
    let dir = work.join(format!("sentinel-{port}"));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "port {port}\nbind {HOST}\nprotected-mode no\ndir {}\nsentinel announce-ip {HOST}\n\
             sentinel monitor {MASTER_NAME} {HOST} {primary} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 4000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir.display()
        ),
    )?;
    let program = if Path::new("/usr/bin/redis-sentinel").exists() {
        "redis-sentinel"
    } else {
        "redis-server"
    };
    let mut args = vec![config.to_str().expect("UTF-8 path").to_string()];
    if program == "redis-server" {
        args.push("--sentinel".into());
    }
    let mut process = Process::new(
        &format!("sentinel :{port}"),
        program,
        args,
        Vec::new(),
        work.join(format!("sentinel-{port}.log")),
    );
    process.start()?;
    Ok(process)
}

/// Which Redis server the sentinels name master now.
pub fn redis_master(sentinel_port: u16) -> Option<u16> {
    let out = run(
        "redis-cli",
        &[
            "-h",
            &HOST.to_string(),
            "-p",
            &sentinel_port.to_string(),
            "sentinel",
            "get-master-addr-by-name",
            MASTER_NAME,
        ],
    )
    .ok()?;
    out.lines().nth(1)?.trim().parse().ok()
}

/// Waits until `ready` holds, polling; an error after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + limit;
    while !ready() {
        if tokio::time::Instant::now() > until {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One authd replica's addresses.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

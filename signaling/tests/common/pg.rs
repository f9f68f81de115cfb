//! A PostgreSQL server for the store's tests, started by the test itself: Debian's `initdb` and
//! `pg_ctl` (test.sh installs `postgresql` when missing) make a throwaway cluster in a temp dir,
//! listening on a free loopback port only (no Unix socket in a system folder), stopped on drop.
//! `ONAIR_TEST_POSTGRES_URL` (a server that is already running) is used instead when set. Each
//! test gets a database of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pg {
    /// `postgres://…/postgres`: where databases are created.
    admin_url: String,
    cluster: Option<Cluster>,
}

struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    user: Option<String>,
}

/// Debian's PostgreSQL binaries (the newest major version installed).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Run `program args` as `user` (PostgreSQL refuses to run as root).
fn run(user: &Option<String>, program: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Pg {
    pub fn start() -> Pg {
        if let Ok(url) = std::env::var("ONAIR_TEST_POSTGRES_URL") {
            return Pg { admin_url: url, cluster: None };
        }
        let bin = bin_dir().expect("PostgreSQL is not installed: ./test.sh installs Debian's postgresql, or set ONAIR_TEST_POSTGRES_URL");
        // As root, the cluster belongs to the `postgres` user the Debian package made.
        let user = (unsafe { libc::geteuid() } == 0).then(|| "postgres".to_owned());
        let dir = std::env::temp_dir().join(format!("onair-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("the cluster's folder");
        if user.is_some() {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "chown of {} to postgres", dir.display());
        }
        let data = dir.join("data");
        let out = run(
            &user,
            &bin.join("initdb"),
            &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' -c fsync=off -c max_connections=200",
            dir.display()
        );
        let log = dir.join("log");
        let out = run(
            &user,
            &bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "-t", "30", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Pg { admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), cluster: Some(Cluster { dir, bin, user }) }
    }

    /// A new, empty database; its URL.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::Connection;
        let name = format!("{name}_{}", std::process::id());
        let end = Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            match sqlx::PgConnection::connect(&self.admin_url).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("connecting to {}: {e}", self.admin_url),
            }
        };
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut conn).await.expect("drop database");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
        let _ = conn.close().await;
        match self.admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("ONAIR_TEST_POSTGRES_URL must end with /<database>"),
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            let data = c.dir.join("data");
            let _ = run(&c.user, &c.bin.join("pg_ctl"), &["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "-w", "stop"]);
            let _ = std::fs::remove_dir_all(&c.dir);
        }
    }
}

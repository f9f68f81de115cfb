//! The `onair` binary as a user runs it: embedded defaults, dev mode links, the token command.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn token_command_prints_a_verifiable_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["token", "--room", "demo", "--identity", "guest", "--role", "cohost", "--ttl", "1h"])
        .env("ONAIR_AUTH_SECRET", "cli-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let auth = signaling::auth::Authenticator::new("cli-secret", "HS256", 0).unwrap();
    let claims = auth.verify(&token, Some("demo")).unwrap();
    assert_eq!((claims.identity.as_str(), claims.role), ("guest", signaling::auth::Role::Cohost));
    let bad = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["token", "--room", "demo", "--identity", "guest", "--role", "admin"])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "unknown roles are refused");
    let bad = Command::new(env!("CARGO_BIN_EXE_onair")).args(["token", "--room", "d", "--identity", "g", "--ttl", "1y"]).output().unwrap();
    assert!(!bad.status.success(), "bad ttl units are refused");
}

/// A fresh, empty working directory (the server keeps its data under `onair-data/` there).
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("onair-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn server_starts_with_embedded_defaults_and_prints_a_link() {
    let port = free_port();
    let cwd = scratch("defaults");
    let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .current_dir(&cwd)
        .args(["--http-bind", &format!("127.0.0.1:{port}"), "--udp-bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
        .env_remove("ONAIR_AUTH_SECRET")
        .env("RUST_LOG", "warn")
        .env("ONAIR_RTMP_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut link = None;
    while link.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && line.contains("/?token=")
        {
            link = Some(line);
        }
    }
    let healthy = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                Ok(body.contains("200 OK") && body.ends_with("ok"))
            })
            .unwrap_or(false)
    });
    let _ = child.kill();
    let _ = child.wait();
    let link = link.expect("dev mode prints a ready-to-open link");
    assert!(link.contains(&format!("http://127.0.0.1:{port}/?token=")), "{link}");
    assert!(healthy, "GET /healthz answers ok");
    // With nothing configured, the server created its database (and its tables) itself.
    let db = cwd.join("onair-data").join("onair.db");
    let bytes = std::fs::read(&db).unwrap_or_default();
    assert!(bytes.starts_with(b"SQLite format 3\0"), "{} is an SQLite database", db.display());
    let _ = std::fs::remove_dir_all(cwd);
}

#[test]
fn stream_key_cli_mints_lists_and_revokes() {
    let dir = scratch("cli-keys");
    let file = dir.join("keys.db");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_onair"))
            .current_dir(&dir)
            .args(args)
            .env("ONAIR_STORE_URL", format!("sqlite:{}", file.display()))
            .env("ONAIR_RTMP_BIND", "0.0.0.0:1935")
            .output()
            .unwrap()
    };
    let out = run(&["stream-key", "--room", "demo", "--label", "OBS"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Server URL:  rtmp://localhost:1935/live"), "{text}");
    let key = text.lines().find_map(|l| l.strip_prefix("Stream key:  ")).expect("key printed").to_owned();
    assert!(key.starts_with("onair_"));
    let stored = std::fs::read(&file).unwrap();
    let secret = key.splitn(3, '_').nth(2).unwrap();
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()), "only the hash is stored");
    let id = key.split('_').nth(1).unwrap().to_owned();
    let list = String::from_utf8(run(&["stream-key", "--list"]).stdout).unwrap();
    assert!(list.contains(&id) && list.contains("active"), "{list}");
    assert!(run(&["stream-key", "--revoke", &id]).status.success());
    let list = String::from_utf8(run(&["stream-key", "--list", "--room", "demo"]).stdout).unwrap();
    assert!(list.contains("revoked"), "{list}");
    assert!(!run(&["stream-key", "--revoke", "nope"]).status.success());
    assert!(!run(&["stream-key"]).status.success(), "--room is required to mint");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_taken_rtmp_port_turns_studio_feeds_off_but_the_server_runs() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rtmp = taken.local_addr().unwrap();
    let port = free_port();
    let cwd = scratch("rtmp-taken");
    let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .current_dir(&cwd)
        .args(["--http-bind", &format!("127.0.0.1:{port}"), "--udp-bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
        .env_remove("ONAIR_AUTH_SECRET")
        .env("RUST_LOG", "error")
        .env("ONAIR_RTMP_BIND", rtmp.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let healthy = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(healthy, "the server runs without its RTMP port");
    assert!(log.contains("studio feeds (RTMP) are off"), "{log}");
    drop(taken);
    let _ = std::fs::remove_dir_all(cwd);
}

/// One thread of a process: its name, niceness and scheduling policy (`/proc/<pid>/task`).
fn threads(pid: u32) -> Vec<(String, i64, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_owned();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after "(comm) ": state is field 3, nice field 19, policy field 41.
        let rest: Vec<&str> = stat.rsplit_once(") ").map(|(_, r)| r.split(' ').collect()).unwrap_or_default();
        let nice = rest.get(16).and_then(|v| v.parse().ok()).unwrap_or(-100);
        let policy = rest.get(38).and_then(|v| v.parse().ok()).unwrap_or(99);
        out.push((comm, nice, policy));
    }
    out
}

/// The media threads keep the core over signaling's: signaling's runtime threads run at
/// `http.thread_nice` (10), the media threads at 0, and with `rtc.realtime_priority` under
/// SCHED_RR — or, where the process may not (no CAP_SYS_NICE), on the normal scheduler with a
/// warning that says so.
#[test]
fn signaling_threads_yield_to_the_media_threads() {
    let port = free_port();
    let cwd = scratch("priorities");
    let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .current_dir(&cwd)
        .args(["--dev", "--http-bind", &format!("127.0.0.1:{port}"), "--udp-bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .env("ONAIR_RTMP_ENABLED", "false")
        .env("ONAIR_RTC_WORKERS", "2")
        .env("ONAIR_RTC_REALTIME_PRIORITY", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let seen = threads(child.id());
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(cwd);
    assert!(up, "{log}");
    println!("{seen:?}");
    let tokio: Vec<_> = seen.iter().filter(|t| t.0.starts_with("tokio-rt-worker")).collect();
    let media: Vec<_> = seen.iter().filter(|t| t.0.starts_with("sfu-")).collect();
    assert!(!tokio.is_empty() && media.len() == 3, "two workers and the receive thread: {seen:?}");
    assert!(tokio.iter().all(|t| t.1 == 10), "signaling's threads at niceness 10: {seen:?}");
    assert!(media.iter().all(|t| t.1 == 0), "the media threads keep niceness 0: {seen:?}");
    let rr = media.iter().filter(|t| t.2 == 2).count();
    let refused = log.matches("rtc.realtime_priority: not allowed").count();
    assert_eq!(rr + refused, 3, "each media thread is SCHED_RR or says why not: {seen:?} {log}");
}

//! A Redis server for the cluster's tests, started by the test itself: Debian's `redis-server`
//! (test.sh installs it when missing) on a free loopback port, persisting nothing, in a temp dir,
//! killed on drop. `ONAIR_TEST_REDIS_URL` (a server that is already running) is used instead when
//! set; then each test should use a key prefix of its own.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub url: String,
    server: Option<(Child, PathBuf)>,
}

impl Redis {
    pub fn start() -> Redis {
        if let Ok(url) = std::env::var("ONAIR_TEST_REDIS_URL") {
            return Redis { url, server: None };
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let dir = std::env::temp_dir().join(format!("onair-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis' folder");
        let log = std::fs::File::create(dir.join("log")).expect("redis' log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: ./test.sh installs Debian's redis-server, or set ONAIR_TEST_REDIS_URL");
        let redis = Redis { url: format!("redis://127.0.0.1:{port}"), server: Some((child, dir)) };
        // Ready when it answers PING.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.write_all(b"PING\r\n")?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf)?;
                Ok(&buf == b"+PONG\r\n")
            });
            if pong.unwrap_or(false) {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some((mut child, dir)) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

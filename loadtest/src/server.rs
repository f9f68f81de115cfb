//! What the harness can learn about a local server: CPU time and RSS from /proc, and the media
//! plane's counters from `/api/stats`.

use serde_json::Value;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// CPU time (user + system) and resident memory of a process at one instant.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub at: Instant,
    pub cpu_secs: f64,
    pub rss_kib: u64,
}

impl ProcSample {
    pub fn take(pid: u32) -> anyhow::Result<ProcSample> {
        let at = Instant::now();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu_secs = (ticks(11) + ticks(12)) / hz;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib =
            status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
        Ok(ProcSample { at, cpu_secs, rss_kib })
    }
}

/// CPU time every process of this machine has used so far (s), all cores together, from the
/// first line of /proc/stat: with the server's and the harness's own, it tells how much the
/// rest of a shared machine took during a window.
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<f64> = cpu.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy = f.get(..8)?.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum::<f64>();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(busy / hz)
}

/// The process listening on TCP `port` on this machine, if we may see it.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
            let p = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if p == Some(port) && *state == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.to_str() == Some(i))
            {
                return Some(pid);
            }
        }
    }
    None
}

/// `GET /admin/api/overview` of an Onair admin listener (`http://host:port`), with its token.
pub async fn admin_overview(url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let host = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("the admin URL must be http://host:port"))?.trim_end_matches('/');
    let mut s = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(host)).await??;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET /admin/api/overview HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").as_bytes()).await?;
    let mut body = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut body)).await??;
    let text = String::from_utf8_lossy(&body);
    let (head, json) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    anyhow::ensure!(head.contains(" 200 "), "{}", head.lines().next().unwrap_or("no status"));
    Ok(serde_json::from_str(json)?)
}

/// `GET /api/stats` → its `sfu` object (a minimal HTTP/1.0 client: no extra dependency).
pub async fn sfu_stats(url: &str) -> anyhow::Result<Value> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("stats need an http:// URL"))?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(host)).await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
    let mut body = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut body)).await??;
    let text = String::from_utf8_lossy(&body);
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: Value = serde_json::from_str(json)?;
    Ok(v["sfu"].clone())
}

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

/// The period of the CPU limit below (µs): short, so that a limited server is held back for a
/// few milliseconds at a time, not for most of the default 100 ms.
pub const CPU_LIMIT_PERIOD_US: u64 = 10_000;

/// The quota per period for `share` of one core (µs). The kernel takes no quota under 1 ms, so
/// the smallest share is 0.1.
pub fn cpu_quota_us(share: f64) -> anyhow::Result<u64> {
    anyhow::ensure!(share.is_finite() && share > 0.0 && share <= 1.0, "a CPU share must be within (0, 1], not {share}");
    let quota = (share * CPU_LIMIT_PERIOD_US as f64).round() as u64;
    anyhow::ensure!(quota >= 1000, "a CPU share under 0.1 ({share}) would be a quota under the kernel's 1 ms minimum");
    Ok(quota)
}

/// A process limited to a share of one core by the kernel's CFS bandwidth control, in a cgroup
/// of its own (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), removed on drop once the process
/// has left it. With the server under test limited to a share of its core, it runs out of CPU
/// before the harness on a core of its own does: what it holds is then its limit at that share.
pub struct CpuLimit {
    dir: std::path::PathBuf,
}

impl CpuLimit {
    pub fn apply(pid: u32, share: f64) -> anyhow::Result<CpuLimit> {
        use std::path::Path;
        let quota = cpu_quota_us(share)?;
        let name = format!("onair-loadtest-{pid}");
        let root = Path::new("/sys/fs/cgroup");
        let (dir, files): (_, Vec<(&str, String)>) = if root.join("cgroup.controllers").exists() {
            // cgroup v2: children get the cpu controller only if the parent hands it down.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
            (root.join(&name), vec![("cpu.max", format!("{quota} {CPU_LIMIT_PERIOD_US}"))])
        } else if root.join("cpu/cpu.cfs_quota_us").exists() {
            (
                root.join("cpu").join(&name),
                vec![("cpu.cfs_period_us", CPU_LIMIT_PERIOD_US.to_string()), ("cpu.cfs_quota_us", quota.to_string())],
            )
        } else {
            anyhow::bail!("no cgroup cpu controller under /sys/fs/cgroup (v2 cpu.max or v1 cpu/cpu.cfs_quota_us)");
        };
        std::fs::create_dir(&dir).map_err(|e| anyhow::anyhow!("creating {} (needs root): {e}", dir.display()))?;
        let limit = CpuLimit { dir };
        for (file, value) in files {
            std::fs::write(limit.dir.join(file), &value).map_err(|e| anyhow::anyhow!("writing {value} to {file}: {e}"))?;
        }
        // Moves every thread of the process, and those it starts later stay in it.
        std::fs::write(limit.dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| anyhow::anyhow!("moving process {pid} into {}: {e}", limit.dir.display()))?;
        Ok(limit)
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        // Empty once the process has exited; the kernel may take a moment to see it go. Bounded:
        // 50 tries, 10 ms apart.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shares_map_to_quotas_and_the_edges_are_refused() {
        assert_eq!(cpu_quota_us(1.0).ok(), Some(10_000));
        assert_eq!(cpu_quota_us(0.25).ok(), Some(2_500));
        assert_eq!(cpu_quota_us(0.1).ok(), Some(1_000));
        for bad in [0.0, -0.5, 1.01, 0.09, f64::NAN, f64::INFINITY] {
            assert!(cpu_quota_us(bad).is_err(), "{bad} was taken");
        }
    }
}

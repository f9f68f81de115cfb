//! `onair-loadtest`: how many viewers does a node hold, and at what latency?
//!
//! ```text
//! onair-loadtest --url http://127.0.0.1:7880 --viewers 500 --ramp 50 --duration 30 --json run.json --chart run.svg
//! ```
//! docs/loadtest.md explains every flag and figure.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use loadtest::{Layer, Scenario, Tokens};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "onair-loadtest", version, about = "Load generator for Onair: synthetic publishers, thousands of WebRTC viewers")]
struct Cli {
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:7880")]
    url: String,
    #[arg(long, default_value = "loadtest")]
    room: String,
    /// The server's token secret (HS256); default: the dev-mode secret of `cargo run`.
    #[arg(long, env = "ONAIR_AUTH_SECRET", conflicts_with = "token")]
    secret: Option<String>,
    /// One token for every viewer instead of minting (publishers need --secret).
    #[arg(long)]
    token: Option<String>,
    /// Synthetic simulcast publishers (the first is the host).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Layer bitrates q,h,f in kbit/s.
    #[arg(long, default_value = "150,500,1500", value_delimiter = ',', num_args = 3)]
    rates: Vec<u32>,
    /// Seconds between key frames.
    #[arg(long, default_value_t = 2.0)]
    keyframe_every: f64,
    #[arg(long, default_value_t = 20)]
    viewers: usize,
    /// Viewer joins per second.
    #[arg(long, default_value_t = 20.0)]
    ramp: f64,
    /// Seconds of steady state measured after the ramp.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    #[arg(long, value_enum, default_value = "auto")]
    layer: Layer,
    /// Address the peers bind (and advertise in ICE).
    #[arg(long, default_value = "127.0.0.1")]
    local_ip: IpAddr,
    /// The server's pid, for CPU and RSS (found from the URL's port when it runs here).
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long)]
    json: Option<PathBuf>,
    /// SVG chart of delay and throughput over time.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Fail (exit 1) if any viewer failed to join.
    #[arg(long)]
    require_all_joined: bool,
    /// Fail (exit 1) if loss exceeds this percentage.
    #[arg(long)]
    max_loss: Option<f64>,
    /// Allow a target that is not on this machine's loopback.
    #[arg(long)]
    allow_remote: bool,
}

fn target_is_loopback(url: &str) -> anyhow::Result<bool> {
    let host = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or("");
    let with_port = if host.contains(':') && !host.ends_with(']') { host.to_owned() } else { format!("{host}:80") };
    let addrs: Vec<_> = with_port.to_socket_addrs()?.collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.viewers <= 20_000, "--viewers is capped at 20000");
    anyhow::ensure!(cli.duration > 0.0 && cli.duration <= 3600.0, "--duration must be within (0, 3600] s");
    anyhow::ensure!(cli.ramp > 0.0, "--ramp must be positive");
    if !cli.allow_remote && !target_is_loopback(&cli.url)? {
        anyhow::bail!("{} is not on this machine's loopback; pass --allow-remote to load a remote server", cli.url);
    }
    raise_fd_limit();
    let tokens = match (&cli.token, &cli.secret) {
        (Some(t), _) => Tokens::Fixed(t.clone()),
        (None, Some(s)) => Tokens::Secret(s.clone()),
        (None, None) => Tokens::Secret(signaling::config::DEV_SECRET.to_owned()),
    };
    let port = cli.url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok());
    let server_pid = cli.server_pid.or_else(|| if target_is_loopback(&cli.url).unwrap_or(false) { port.and_then(loadtest::server::pid_listening_on) } else { None });
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.enable_steady_tick(Duration::from_millis(200));
    let b = bar.clone();
    let scenario = Scenario {
        url: cli.url.clone(),
        room: cli.room.clone(),
        tokens,
        publishers: cli.publishers,
        rates: [cli.rates[0] * 1000, cli.rates[1] * 1000, cli.rates[2] * 1000],
        keyframe_every: Duration::from_secs_f64(cli.keyframe_every.max(0.1)),
        viewers: cli.viewers,
        ramp: cli.ramp,
        duration: Duration::from_secs_f64(cli.duration),
        layer: cli.layer,
        local_ip: cli.local_ip,
        server_pid,
        progress: Some(Arc::new(move |line| b.set_message(line))),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let report = runtime.block_on(loadtest::run(scenario))?;
    bar.finish_and_clear();
    println!("onair-loadtest: {} viewers, {} publisher(s), {:.0} s steady state against {}{}", cli.viewers, cli.publishers, report.duration_s, cli.url, server_pid.map(|p| format!(" (server pid {p})")).unwrap_or_default());
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("  JSON: {}", path.display());
    }
    if let Some(path) = &cli.chart {
        report.chart(path, &format!("{} viewers", cli.viewers))?;
        println!("  chart: {}", path.display());
    }
    let mut ok = true;
    if cli.require_all_joined && (report.failed > 0 || report.joined < cli.viewers) {
        eprintln!("FAIL: {} of {} viewers did not join", cli.viewers - report.joined, cli.viewers);
        ok = false;
    }
    if let Some(max) = cli.max_loss
        && report.loss_percent > max
    {
        eprintln!("FAIL: loss {:.3} % over the limit of {max} %", report.loss_percent);
        ok = false;
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// Each viewer holds a UDP socket and a WebSocket: lift the soft fd limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

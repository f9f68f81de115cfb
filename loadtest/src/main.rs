//! `onair-loadtest`: how many viewers does a node hold, and at what latency?
//!
//! ```text
//! onair-loadtest --url http://127.0.0.1:7880 --viewers 500 --ramp 50 --duration 30 --json run.json --chart run.svg
//! ```
//! docs/loadtest.md explains every flag and figure.

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use loadtest::{Layer, Scenario, Tokens};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "onair-loadtest", version, about = "Load generator for Onair: synthetic publishers, thousands of WebRTC viewers")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:7880")]
    url: String,
    /// Many nodes: the viewers join at these nodes (comma-separated HTTP addresses, in turn)
    /// instead of `--url`, where the publishers join; a node that does not run the live sends
    /// them to the one that does (docs/deploy.md "Many nodes").
    #[arg(long, value_delimiter = ',')]
    viewer_urls: Vec<String>,
    #[arg(long, default_value = "loadtest")]
    room: String,
    /// The server's token secret (HS256); default: the dev-mode secret of `cargo run`.
    #[arg(long, env = "ONAIR_AUTH_SECRET", conflicts_with = "token")]
    secret: Option<String>,
    /// One token for every viewer instead of minting (publishers need --secret).
    #[arg(long)]
    token: Option<String>,
    /// Onair's admin listener, e.g. http://127.0.0.1:7881: the server's KPIs of this run are
    /// read there and printed beside the viewers' own.
    #[arg(long)]
    admin_url: Option<String>,
    /// The admin token (`admin.token`), when the server has one.
    #[arg(long, env = "ONAIR_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Synthetic simulcast publishers (the first is the host).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Layer bitrates q,h,f in kbit/s.
    #[arg(long, default_value = "150,500,1500", value_delimiter = ',')]
    rates: Vec<u32>,
    /// Seconds between key frames.
    #[arg(long, default_value_t = 2.0)]
    keyframe_every: f64,
    /// Pace the publisher's video as browsers do: packets leave no faster than this factor
    /// times the layers' rate (libwebrtc's pacer uses 2.5). Without it a frame's packets leave
    /// together. 1–10.
    #[arg(long)]
    pace: Option<f64>,
    /// Viewers open the server's SRTP themselves once DTLS is done and write their own
    /// transport-wide CC feedback, instead of handing each packet to rtc: a harness core then
    /// drives about twice as many (docs/loadtest.md "Lean viewers"). No NACKs.
    #[arg(long)]
    lean_viewers: bool,
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
    /// Comments per second, all commenting viewers together (0: none). With any chat load the run
    /// measures a window without chat first, then one with it (--no-baseline: only the second).
    #[arg(long, default_value_t = 0.0)]
    comments_per_sec: f64,
    /// Viewers that comment (default: ⌈rate ÷ 0.5⌉, so none exceeds the server's 1 comment/s).
    #[arg(long)]
    comment_senders: Option<usize>,
    /// Share of the viewers that send bursts of reactions (0..=1).
    #[arg(long, default_value_t = 0.0)]
    reacting_share: f64,
    /// Taps per reaction burst, min,max.
    #[arg(long, default_value = "5,10", value_delimiter = ',')]
    burst_taps: Vec<u32>,
    /// Seconds between one reacting viewer's bursts.
    #[arg(long, default_value_t = 4.0)]
    burst_every: f64,
    /// With chat load, skip the window without chat.
    #[arg(long)]
    no_baseline: bool,
    /// Fault scenarios played one after the other after the steady window, each followed by
    /// the viewers' recovery (docs/loadtest.md "Faults"): reconnect, loss-burst, publisher-drop.
    #[arg(long, value_enum, value_delimiter = ',')]
    fault: Vec<loadtest::fault::FaultKind>,
    /// reconnect: share of the viewers that move to a new address at once.
    #[arg(long, default_value_t = 0.1)]
    reconnect_share: f64,
    /// loss-burst: percentage of datagrams dropped both ways, and for how many seconds.
    #[arg(long, default_value_t = 30.0)]
    burst_loss: f64,
    #[arg(long, default_value_t = 2.0)]
    burst_secs: f64,
    /// publisher-drop: seconds the publishers' network is gone.
    #[arg(long, default_value_t = 3.0)]
    drop_secs: f64,
    /// A viewer that shows no frame sent after a fault within this many seconds is lost for
    /// good (and the run fails).
    #[arg(long, default_value_t = 20.0)]
    recover_within: f64,
}

#[derive(Subcommand)]
enum Command {
    /// Run the same scenario against Debian's Janus (streaming plugin) and against Onair, one
    /// after the other, each pinned to a core the harness does not use; print both and the ratios.
    Compare(Box<CompareArgs>),
    /// The machine's floor alone (docs/loadtest.md): SRTP-encrypt and send the compare stream
    /// to every address in a file, and print CPU per packet as JSON. `compare` runs it itself.
    Floor(FloorArgs),
}

#[derive(clap::Args)]
struct FloorArgs {
    /// A JSON FloorSpec (bind, dests, video_kbps, duration, warmup, gso).
    #[arg(long)]
    spec: PathBuf,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Viewer counts to run, e.g. 100,500,1000.
    #[arg(long, default_value = "100", value_delimiter = ',')]
    viewers: Vec<usize>,
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    #[arg(long, default_value_t = 50.0)]
    ramp: f64,
    /// The video layer each viewer gets, kbit/s (Janus: the one layer it is fed; Onair: the top
    /// simulcast layer, with the two lower ones at a tenth and a third of it).
    #[arg(long, default_value_t = 1500)]
    video_kbps: u32,
    #[arg(long, default_value_t = 1.0)]
    keyframe_every: f64,
    /// Pace the publisher's video at this factor of its rate, as browsers do (see the main
    /// command's --pace).
    #[arg(long)]
    pace: Option<f64>,
    /// Viewers on the harness's lean receive path (see the main command's --lean-viewers): the
    /// harness's core lasts for more viewers than the server's.
    #[arg(long)]
    lean_viewers: bool,
    /// The onair binary (default: next to this one).
    #[arg(long)]
    onair_bin: Option<PathBuf>,
    #[arg(long, default_value = "janus")]
    janus_bin: PathBuf,
    /// Folder with janus.jcfg and the plugin/transport configs.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/janus"))]
    janus_config: PathBuf,
    /// Cores the server under test (and the floor) is pinned to, as taskset takes them: "1",
    /// or "0,1" for the whole machine (then give Onair as many workers).
    #[arg(long, alias = "server-cores", default_value = "1")]
    server_core: String,
    /// Onair's media workers (ONAIR_RTC_WORKERS).
    #[arg(long, default_value_t = 1)]
    server_workers: usize,
    /// Limit the server under test to this share of one core (0.1–1, the kernel's CFS quota in
    /// a cgroup of its own), so that it runs out of CPU before the harness does: the most it
    /// holds at a share is its own limit, not the harness's. The floor is not limited.
    #[arg(long)]
    server_cpu_share: Option<f64>,
    /// Core the harness pins itself to.
    #[arg(long, default_value_t = 0)]
    harness_core: usize,
    /// Which servers to run, in order.
    #[arg(long, default_value = "janus,onair", value_delimiter = ',')]
    servers: Vec<String>,
    /// Write every row (with per-second samples) here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG chart per run: <prefix>-<server>-<viewers>.svg.
    #[arg(long)]
    chart_prefix: Option<String>,
    /// Skip the floor (the SRTP + sendmmsg loop run after the servers at each viewer count).
    #[arg(long)]
    no_floor: bool,
}

fn target_is_loopback(url: &str) -> anyhow::Result<bool> {
    let host = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or("");
    let with_port = if host.contains(':') && !host.ends_with(']') { host.to_owned() } else { format!("{host}:80") };
    let addrs: Vec<_> = with_port.to_socket_addrs()?.collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Compare(args)) => {
            raise_fd_limit();
            return compare::run(*args);
        }
        Some(Command::Floor(args)) => {
            raise_fd_limit();
            let spec: loadtest::floor::FloorSpec = serde_json::from_slice(&std::fs::read(&args.spec)?)?;
            println!("{}", serde_json::to_string(&loadtest::floor::run(&spec)?)?);
            return Ok(());
        }
        None => {}
    }
    anyhow::ensure!(cli.viewers <= 20_000, "--viewers is capped at 20000");
    anyhow::ensure!(cli.duration > 0.0 && cli.duration <= 3600.0, "--duration must be within (0, 3600] s");
    anyhow::ensure!(cli.ramp > 0.0, "--ramp must be positive");
    anyhow::ensure!(cli.rates.len() == 3, "--rates takes three kbit/s values, q,h,f");
    anyhow::ensure!(cli.burst_taps.len() == 2, "--burst-taps takes min,max");
    anyhow::ensure!((0.0..=1000.0).contains(&cli.comments_per_sec), "--comments-per-sec must be within [0, 1000]");
    anyhow::ensure!((0.0..=1.0).contains(&cli.reacting_share), "--reacting-share must be within [0, 1]");
    anyhow::ensure!(cli.burst_every >= 0.05, "--burst-every must be at least 0.05 s");
    anyhow::ensure!(cli.pace.is_none_or(|f| (1.0..=10.0).contains(&f)), "--pace must be within [1, 10]");
    anyhow::ensure!(cli.comment_senders != Some(0), "--comment-senders must be at least 1");
    let chat = loadtest::ChatLoad {
        comments_per_sec: cli.comments_per_sec,
        comment_senders: cli.comment_senders,
        reacting_share: cli.reacting_share,
        burst_taps: (cli.burst_taps[0].min(cli.burst_taps[1]), cli.burst_taps[0].max(cli.burst_taps[1])),
        burst_every: Duration::from_secs_f64(cli.burst_every),
        baseline: !cli.no_baseline,
    };
    let senders = chat.senders(cli.viewers);
    if senders > 0 && cli.comments_per_sec / senders as f64 > 1.0 {
        eprintln!(
            "note: {senders} senders at {:.2} comments/s each: above the server's default 1/s per user, expect rate_limited",
            cli.comments_per_sec / senders as f64
        );
    }
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
    let server_pid = cli
        .server_pid
        .or_else(|| if target_is_loopback(&cli.url).unwrap_or(false) { port.and_then(loadtest::server::pid_listening_on) } else { None });
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.enable_steady_tick(Duration::from_millis(200));
    let b = bar.clone();
    let scenario = Scenario {
        target: loadtest::Target::Onair,
        url: cli.url.clone(),
        viewer_urls: cli.viewer_urls.clone(),
        room: cli.room.clone(),
        tokens,
        publishers: cli.publishers,
        rates: [cli.rates[0] * 1000, cli.rates[1] * 1000, cli.rates[2] * 1000],
        keyframe_every: Duration::from_secs_f64(cli.keyframe_every.max(0.1)),
        pace: cli.pace,
        lean_viewers: cli.lean_viewers,
        viewers: cli.viewers,
        ramp: cli.ramp,
        duration: Duration::from_secs_f64(cli.duration),
        layer: cli.layer,
        local_ip: cli.local_ip,
        server_pid,
        progress: Some(Arc::new(move |line| b.set_message(line))),
        chat,
        admin: cli.admin_url.clone().map(|u| (u, cli.admin_token.clone())),
        faults: loadtest::fault::Faults {
            kinds: cli.fault.clone(),
            reconnect_share: cli.reconnect_share.clamp(0.0, 1.0),
            burst_loss: (cli.burst_loss / 100.0).clamp(0.0, 1.0),
            burst: Duration::from_secs_f64(cli.burst_secs.clamp(0.1, 60.0)),
            publisher_drop: Duration::from_secs_f64(cli.drop_secs.clamp(0.1, 60.0)),
            recover_within: Duration::from_secs_f64(cli.recover_within.clamp(1.0, 300.0)),
            ..Default::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let report = runtime.block_on(loadtest::run(scenario))?;
    bar.finish_and_clear();
    println!(
        "onair-loadtest: {} viewers, {} publisher(s), {:.0} s steady state against {}{}",
        cli.viewers,
        cli.publishers,
        report.duration_s,
        cli.url,
        server_pid.map(|p| format!(" (server pid {p})")).unwrap_or_default()
    );
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
    for f in report.faults.iter().filter(|f| f.lost > 0) {
        eprintln!("FAIL: fault {}: {} of {} viewers lost for good", f.kind.name(), f.lost, f.affected);
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

mod compare {
    use super::CompareArgs;
    use loadtest::floor::{FloorResult, FloorSpec};
    use loadtest::server::CpuLimit;
    use loadtest::{Layer, Report, Scenario, Target, Tokens};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const SECRET: &str = "onair-loadtest-compare";
    /// The network namespace the servers run in, and the two ends of its veth pair.
    const NETNS: &str = "onair-lt";
    const HOST_IP: &str = "10.77.0.1";
    const NS_IP: &str = "10.77.0.2";

    fn sh(args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(args[0]).args(&args[1..]).output()?;
        anyhow::ensure!(out.status.success(), "{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        Ok(())
    }

    /// A namespace with one veth pair: libnice (Janus) never gathers loopback candidates, so
    /// both servers run in here and all traffic stays on this machine's virtual link.
    fn netns_up() -> anyhow::Result<()> {
        let _ = sh(&["ip", "netns", "del", NETNS]);
        sh(&["ip", "netns", "add", NETNS])?;
        // The kernel frees a deleted namespace's veth pair in the background: a run started
        // right after another one can still find it ("File exists"). Delete it ourselves and
        // retry the add for up to 2 s.
        let _ = sh(&["ip", "link", "del", "veth-onair0"]);
        let mut added = sh(&["ip", "link", "add", "veth-onair0", "type", "veth", "peer", "name", "veth-onair1"]);
        for _ in 0..20 {
            if added.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            let _ = sh(&["ip", "link", "del", "veth-onair0"]);
            added = sh(&["ip", "link", "add", "veth-onair0", "type", "veth", "peer", "name", "veth-onair1"]);
        }
        added?;
        sh(&["ip", "link", "set", "veth-onair1", "netns", NETNS])?;
        sh(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", "veth-onair0"])?;
        sh(&["ip", "link", "set", "veth-onair0", "up"])?;
        sh(&["ip", "netns", "exec", NETNS, "ip", "addr", "add", &format!("{NS_IP}/24"), "dev", "veth-onair1"])?;
        sh(&["ip", "netns", "exec", NETNS, "ip", "link", "set", "veth-onair1", "up"])?;
        sh(&["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    struct Netns;

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = sh(&["ip", "netns", "del", NETNS]);
        }
    }

    fn in_netns(cores: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", NETNS, "taskset", "-c", cores]);
        c
    }

    /// The server just started, under `--server-cpu-share` if given. Declared before the
    /// `Server` it limits, so that it is dropped after it (the cgroup goes once the process has).
    fn limit(args: &CompareArgs, child: &mut Child) -> anyhow::Result<Option<CpuLimit>> {
        let Some(share) = args.server_cpu_share else { return Ok(None) };
        match CpuLimit::apply(child.id(), share) {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    fn pin_self(core: usize) {
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }

    fn wait_port(addr: &str, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if std::net::TcpStream::connect(addr).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn free_port() -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }
    // (A port free on the host is free in the fresh namespace too.)

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn scenario(target: Target, url: String, viewers: usize, args: &CompareArgs, pid: u32) -> Scenario {
        let top = args.video_kbps * 1000;
        Scenario {
            target,
            url,
            viewer_urls: Vec::new(),
            room: "compare".into(),
            tokens: Tokens::Secret(SECRET.into()),
            publishers: 1,
            rates: [top / 10, top / 3, top],
            keyframe_every: Duration::from_secs_f64(args.keyframe_every),
            pace: args.pace,
            lean_viewers: args.lean_viewers,
            viewers,
            ramp: args.ramp,
            duration: Duration::from_secs_f64(args.duration),
            layer: Layer::High,
            local_ip: HOST_IP.parse().unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            server_pid: Some(pid),
            progress: Some(std::sync::Arc::new(|line: String| eprint!("\r\x1b[2K  {line}"))),
            chat: loadtest::ChatLoad::default(),
            admin: None,
            faults: Default::default(),
        }
    }

    fn janus(args: &CompareArgs, viewers: usize, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
        let log = std::fs::File::create(std::env::temp_dir().join("onair-loadtest-janus.log"))?;
        let mut child = in_netns(&args.server_core)
            .arg(&args.janus_bin)
            .arg("-C")
            .arg(args.janus_config.join("janus.jcfg"))
            .arg("-F")
            .arg(&args.janus_config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting Janus ({}): {e}; install it with apt-get install janus", args.janus_bin.display()))?;
        let _limit = limit(args, &mut child)?;
        let server = Server(child);
        anyhow::ensure!(wait_port(&format!("{NS_IP}:8188"), Duration::from_secs(15)), "Janus did not open its WebSocket port 8188");
        // Let the streaming plugin bind its mountpoint ports.
        std::thread::sleep(Duration::from_millis(500));
        let target = Target::Janus {
            ws_url: format!("ws://{NS_IP}:8188"),
            mountpoint: 1,
            audio: format!("{NS_IP}:5002").parse()?,
            video: format!("{NS_IP}:5004").parse()?,
        };
        let report = rt.block_on(loadtest::run(scenario(target, format!("http://{NS_IP}:8188"), viewers, args, server.0.id())));
        drop(server);
        report
    }

    fn onair(args: &CompareArgs, viewers: usize, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
        let bin = match &args.onair_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.with_file_name("onair"),
        };
        let port = free_port()?;
        let mut child = in_netns(&args.server_core)
            .arg(&bin)
            .env("ONAIR_HTTP_BIND", format!("{NS_IP}:{port}"))
            .env("ONAIR_RTC_UDP_BIND", format!("{NS_IP}:0"))
            .env("ONAIR_RTC_ADVERTISE_IP", NS_IP)
            .env("ONAIR_RTC_WORKERS", args.server_workers.to_string())
            .env("ONAIR_RTMP_ENABLED", "false")
            .env("ONAIR_AUTH_SECRET", SECRET)
            .env("ONAIR_DEV", "false")
            .env("RUST_LOG", "warn,rtc_dtls=error")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(std::env::temp_dir().join("onair-loadtest-onair.log"))?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {} : {e} (build it with cargo build --release)", bin.display()))?;
        let _limit = limit(args, &mut child)?;
        let server = Server(child);
        anyhow::ensure!(wait_port(&format!("{NS_IP}:{port}"), Duration::from_secs(15)), "onair did not open port {port}");
        let report = rt.block_on(loadtest::run(scenario(Target::Onair, format!("http://{NS_IP}:{port}"), viewers, args, server.0.id())));
        drop(server);
        report
    }

    /// The floor at `viewers`: the loop runs where the servers ran (in the namespace, pinned to
    /// the server's core) and sends to `viewers` sockets the harness drains on its own core.
    fn floor(args: &CompareArgs, viewers: usize, gso: bool) -> anyhow::Result<FloorResult> {
        use mio::{Events, Interest, Poll, Token};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let mut sinks = Vec::with_capacity(viewers);
        for _ in 0..viewers {
            let s = std::net::UdpSocket::bind(format!("{HOST_IP}:0"))?;
            s.set_nonblocking(true)?;
            sinks.push(mio::net::UdpSocket::from_std(s));
        }
        let spec = FloorSpec {
            bind: format!("{NS_IP}:0").parse()?,
            dests: sinks.iter().map(|s| s.local_addr()).collect::<Result<_, _>>()?,
            video_kbps: args.video_kbps,
            duration: Duration::from_secs_f64(args.duration),
            warmup: Duration::from_secs(2),
            gso,
        };
        let path = std::env::temp_dir().join(format!("onair-loadtest-floor-{}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_vec(&spec)?)?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let received = std::sync::Arc::new(AtomicU64::new(0));
        let (stop2, received2) = (stop.clone(), received.clone());
        let drain = std::thread::spawn(move || -> anyhow::Result<()> {
            let mut poll = Poll::new()?;
            for (i, s) in sinks.iter_mut().enumerate() {
                poll.registry().register(s, Token(i), Interest::READABLE)?;
            }
            let mut events = Events::with_capacity(1024);
            let mut buf = [0u8; 2048];
            // Bounded by `stop`, which the caller sets once the floor process has exited.
            while !stop2.load(Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(50)))?;
                for e in &events {
                    let s = &sinks[e.token().0];
                    while s.recv(&mut buf).is_ok() {
                        received2.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        });
        let bin = std::env::current_exe()?;
        let out = in_netns(&args.server_core).arg(&bin).arg("floor").arg("--spec").arg(&path).stderr(Stdio::inherit()).output();
        stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&path);
        drain.join().map_err(|_| anyhow::anyhow!("the floor's receiver panicked"))??;
        let out = out?;
        anyhow::ensure!(out.status.success(), "the floor run failed: {}", String::from_utf8_lossy(&out.stdout));
        let r: FloorResult = serde_json::from_slice(&out.stdout)?;
        let got = received.load(Ordering::Relaxed);
        eprintln!(
            "  floor{} at {viewers} viewers: {:.0} pkt/s, {:.2} µs/packet, {got} datagrams received{}",
            if gso { " (GSO)" } else { "" },
            r.packets_per_s,
            r.cpu_us_per_packet,
            if r.send_errors > 0 { format!(", {} failed sends", r.send_errors) } else { String::new() }
        );
        Ok(r)
    }

    fn f(v: Option<f64>, d: usize) -> String {
        v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "—".into())
    }

    pub fn run(args: CompareArgs) -> anyhow::Result<()> {
        anyhow::ensure!((1..=64).contains(&args.server_workers), "--server-workers must be within 1..=64");
        anyhow::ensure!(args.pace.is_none_or(|f| (1.0..=10.0).contains(&f)), "--pace must be within [1, 10]");
        if let Some(share) = args.server_cpu_share {
            loadtest::server::cpu_quota_us(share)?;
        }
        pin_self(args.harness_core);
        netns_up().map_err(|e| anyhow::anyhow!("setting up the network namespace (needs root and iproute2): {e}"))?;
        let _netns = Netns;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let mut rows: Vec<(String, Report)> = Vec::new();
        let mut floors: Vec<(usize, FloorResult, FloorResult)> = Vec::new();
        for &n in &args.viewers {
            for name in args.servers.iter().map(String::as_str) {
                anyhow::ensure!(name == "janus" || name == "onair", "--servers takes janus and/or onair");
                eprintln!("{name}, {n} viewers:");
                let r = if name == "janus" { janus(&args, n, &rt)? } else { onair(&args, n, &rt)? };
                eprintln!();
                if let Some(prefix) = &args.chart_prefix {
                    r.chart(std::path::Path::new(&format!("{prefix}-{name}-{n}.svg")), &format!("{name}, {n} viewers"))?;
                }
                rows.push((name.to_string(), r));
            }
            if !args.no_floor {
                let plain = floor(&args, n, false)?;
                let gso = floor(&args, n, true)?;
                floors.push((n, plain, gso));
            }
        }
        println!(
            "server  viewers joined  recv pkt/s  CPU cores  CPU µs/pkt  delay p50/p99 ms  1st keyframe p95 ms  RSS KiB/viewer  loss %  harness cores  held"
        );
        for (name, r) in &rows {
            let s = &r.server;
            println!(
                "{name:<7} {:>7} {:>6} {:>11.0} {:>10} {:>11} {:>17} {:>20} {:>15} {:>7.3} {:>14.2}  {}",
                r.viewers,
                r.joined,
                s.packets_received_per_s,
                f(s.cpu_cores, 2),
                f(s.cpu_us_per_received_packet, 2),
                r.delay_ms.as_ref().map(|d| format!("{:.1} / {:.1}", d.p50, d.p99)).unwrap_or_else(|| "—".into()),
                f(r.first_keyframe_ms.as_ref().map(|p| p.p95), 0),
                f(s.rss_kib_per_viewer, 1),
                r.loss_percent,
                r.harness_cpu_cores,
                r.held().map(|()| "yes".to_string()).unwrap_or_else(|why| format!("no: {why}"))
            );
            if let (Some(share), Some(used)) = (args.server_cpu_share, s.cpu_cores)
                && used > share + 0.05
            {
                println!("  warning: the server used {used:.2} cores under a limit of {share}: the limit did not hold");
            }
        }
        for &n in &args.viewers {
            let get = |name: &str| rows.iter().find(|(k, r)| k == name && r.viewers == n).map(|(_, r)| r);
            if let (Some(j), Some(o)) = (get("janus"), get("onair"))
                && let (Some(jc), Some(oc)) = (j.server.cpu_us_per_received_packet, o.server.cpu_us_per_received_packet)
            {
                println!("{n} viewers: Onair uses {:.2}x the CPU per packet of Janus ({oc:.2} vs {jc:.2} µs)", oc / jc);
            }
        }
        for (n, plain, gso) in &floors {
            // The floor is the cheaper of the two ways to send.
            let best = plain.cpu_us_per_packet.min(gso.cpu_us_per_packet);
            println!(
                "floor   {n:>7}: SRTP + sendmmsg {:.2} µs/pkt, with GSO {:.2} µs/pkt ({:.0} pkt/s)",
                plain.cpu_us_per_packet, gso.cpu_us_per_packet, plain.packets_per_s
            );
            for name in args.servers.iter().map(String::as_str) {
                if let Some(c) =
                    rows.iter().find(|(k, r)| k == name && r.viewers == *n).and_then(|(_, r)| r.server.cpu_us_per_received_packet)
                {
                    println!("{n} viewers: {name} uses {:.2}x the floor's CPU per packet ({c:.2} vs {best:.2} µs)", c / best);
                }
            }
        }
        if let Some(path) = &args.json {
            let mut v: Vec<_> = rows.iter().map(|(k, r)| serde_json::json!({"server": k, "report": r})).collect();
            v.extend(floors.iter().map(|(n, p, g)| serde_json::json!({"server": "floor", "viewers": n, "sendmmsg": p, "gso": g})));
            std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        }
        Ok(())
    }
}

//! The `onair` binary: one process with signaling, the SFU and (later) the RTMP bridge.

use anyhow::Context;
use clap::{Parser, Subcommand};
use signaling::auth::{Authenticator, Role};
use signaling::config::Config;
use signaling::store::{KeySeat, Store};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "onair", version, about = "Onair Live Rooms server")]
struct Cli {
    /// TOML config file (defaults are embedded; ONAIR_* variables override the file).
    #[arg(long, short, global = true, env = "ONAIR_CONFIG")]
    config: Option<PathBuf>,
    /// Force dev mode on (dev secret allowed, lobby and links printed).
    #[arg(long, global = true)]
    dev: bool,
    /// HTTP/WebSocket listen address.
    #[arg(long)]
    http_bind: Option<SocketAddr>,
    /// UDP media listen address.
    #[arg(long)]
    udp_bind: Option<SocketAddr>,
    /// Admin listener (`/metrics`, the dashboard) address.
    #[arg(long)]
    admin_bind: Option<SocketAddr>,
    /// Address advertised to clients in ICE candidates.
    #[arg(long)]
    advertise_ip: Option<IpAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a signed join token.
    Token {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        /// Display name (defaults to the identity).
        #[arg(long)]
        name: Option<String>,
        /// host, cohost, moderator or viewer.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Validity: 90s, 30m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The live profile a host's token starts the live with (interactive, standard,
        /// continuity, or one from the config).
        #[arg(long)]
        profile: Option<String>,
    },
    /// Mint, list or revoke stream keys for studio feeds (RTMP). Works while the server runs:
    /// both use the store (store.url).
    StreamKey {
        /// The room the key publishes into (required to mint).
        #[arg(long)]
        room: Option<String>,
        /// A name for the feed, shown on stage.
        #[arg(long, default_value = "Studio")]
        label: String,
        /// The seat the encoder takes: `cohost`, or `host` (its encoder starts the live alone).
        #[arg(long, default_value = "cohost")]
        seat: String,
        /// List keys (of --room, or all) instead of minting.
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// Revoke the key with this id instead of minting.
        #[arg(long)]
        revoke: Option<String>,
    },
}

fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => anyhow::bail!("bad duration unit in {s:?} (use s, m, h or d)"),
    };
    n.checked_mul(mult).filter(|v| *v > 0).context("duration out of range")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref())?;
    if cli.dev {
        config.dev = Some(true);
    }
    if let Some(b) = cli.http_bind {
        config.http.bind = b;
    }
    if let Some(b) = cli.udp_bind {
        config.rtc.udp_bind = b;
    }
    if let Some(b) = cli.admin_bind {
        config.admin.bind = b;
    }
    if let Some(ip) = cli.advertise_ip {
        config.rtc.advertise_ip = ip;
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token { room, identity, name, role, ttl, profile } => {
            let role = Role::parse(&role).context("role must be host, cohost, moderator or viewer")?;
            if let Some(p) = &profile {
                anyhow::ensure!(
                    config.profiles.contains_key(p),
                    "no live profile {p:?} (profiles: {:?})",
                    config.profiles.keys().collect::<Vec<_>>()
                );
            }
            let auth = Authenticator::new(&config.secret()?, &config.auth.algorithm, config.auth.leeway_secs)?;
            println!("{}", auth.mint_with_profile(&room, &identity, name.as_deref(), role, parse_ttl(&ttl)?, profile.as_deref())?);
            Ok(())
        }
        Command::StreamKey { room, label, seat, list, revoke } => {
            anyhow::ensure!(!config.store.url.contains(":memory:"), "store.url is in memory: keys would be lost");
            let seat = KeySeat::parse(&seat).context("--seat must be cohost or host")?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(stream_key(config, room, label, seat, list, revoke))
        }
        Command::Serve => serve(config),
    }
}

/// `onair stream-key`: mint, list or revoke keys in the store the server uses.
async fn stream_key(
    config: Config,
    room: Option<String>,
    label: String,
    seat: KeySeat,
    list: bool,
    revoke: Option<String>,
) -> anyhow::Result<()> {
    let store = Store::open(&config).await?;
    if list {
        for k in store.stream_keys(room.as_deref()).await? {
            let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
            println!("{}  room={}  label={:?}  seat={}  {state}", k.id, k.room, k.label, k.seat.as_str());
        }
    } else if let Some(id) = revoke {
        anyhow::ensure!(store.revoke_stream_key(room.as_deref(), &id).await?, "no stream key {id}");
        println!("revoked {id} (a running server cuts its feed on the next connect; use the host page to cut a live feed at once)");
    } else {
        let room = room.context("--room is required to mint a key")?;
        anyhow::ensure!(!room.is_empty() && room.len() <= signaling::auth::MAX_ROOM_BYTES, "room must be 1-128 bytes");
        anyhow::ensure!(label.len() <= 64, "label: at most 64 bytes");
        let k = store.mint_stream_key(&room, &label, seat).await?;
        println!("Server URL:  {}", config.rtmp.server_url());
        println!("Stream key:  {}", k.key);
        println!("(id {}; the key is shown only now)", k.view.id);
    }
    store.close().await;
    Ok(())
}

/// Wait for the end: Ctrl-C stops at once (gently: the store and the media plane close); SIGTERM
/// (an orchestrator's stop) drains first — no new participants, everyone told, the lives run to
/// their end or `drain.max_secs` — and a second SIGTERM (or Ctrl-C) ends the wait.
async fn stop(server: &signaling::Server) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => return Ok(r?),
        _ = term.recv() => {}
    }
    server.drain();
    let max = Duration::from_secs(server.state.config.drain.max_secs);
    let began = Instant::now();
    loop {
        let running = server.lives_running();
        if running == 0 {
            tracing::info!("drained: no live left on this node");
            return Ok(());
        }
        if began.elapsed() >= max {
            tracing::warn!(lives = running, "drain.max_secs passed: stopping with lives still on");
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = term.recv() => {
                tracing::info!(lives = running, "second SIGTERM: stopping now");
                return Ok(());
            }
            r = tokio::signal::ctrl_c() => return Ok(r?),
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let traces = signaling::observe::traces::init(&config)?;
    // Signaling's threads yield to the media plane's (started from this thread, so they keep
    // its default priority): see `http.thread_nice`.
    let nice = config.http.thread_nice;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            if nice > 0 {
                // On Linux the niceness is per thread: PRIO_PROCESS with 0 names the caller.
                // SAFETY: setpriority only reads its integer arguments.
                let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
                if r != 0 {
                    tracing::debug!("setpriority({nice}): {}", std::io::Error::last_os_error());
                }
            }
        })
        .build()?;
    runtime.block_on(async move {
        let dev = config.dev_mode();
        if dev {
            tracing::warn!("dev mode: tokens are signed with the built-in dev secret; set auth.secret for production");
        }
        let server = signaling::Server::start(config).await?;
        if dev {
            let auth = &server.state.auth;
            let host = auth.mint("demo", "host", Some("Host"), Role::Host, 6 * 3600)?;
            let viewer = auth.mint("demo", "viewer", Some("Viewer"), Role::Viewer, 6 * 3600)?;
            let base = format!("http://{}", server.http_addr);
            println!("\nOnair is running (dev mode).");
            println!("  Go live as host:  {base}/?token={host}");
            println!("  Watch as viewer:  {base}/?token={viewer}");
            println!("  Mint more tokens: cargo run --release -- token --room demo --identity guest --role cohost");
            if let Some(admin) = server.admin_addr {
                println!("  Dashboard:        http://{admin}/admin   (metrics: http://{admin}/metrics)");
            }
            if let Some(rtmp) = server.rtmp_addr {
                println!(
                    "  Studio feed:      cargo run --release -- stream-key --room demo   (OBS server {}, RTMP on {rtmp})",
                    server.state.config.rtmp.server_url()
                );
            }
            println!();
        }
        stop(&server).await?;
        tracing::info!("shutting down");
        server.shutdown().await;
        anyhow::Ok(())
    })?;
    // The exporter's last batch, off the runtime (its HTTP client blocks).
    traces.shutdown();
    Ok(())
}

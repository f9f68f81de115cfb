//! The stage video: one MP4 (H.264 + AAC, `+faststart`) of the stage as viewers saw it, built
//! by ffmpeg from the raw files after the live. The time is cut into stretches wherever someone
//! joined or left the stage; in each stretch the publishers on stage are tiles of a grid
//! (the page's layout: 1 full, 2 side by side, 3–4 two by two, 5 three by two), in the order
//! they came on. Voices are mixed. Nothing here runs during the live.

use crate::store::ArchiveFile;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The stage video's file name in an entry's folder.
pub const VIDEO_NAME: &str = "live.mp4";
const BACKGROUND: &str = "0x16181d";

/// One raw file as ffmpeg's input.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub path: PathBuf,
    /// Unix milliseconds.
    pub start_ms: i64,
    pub end_ms: i64,
    pub video: bool,
    pub audio: bool,
}

impl Input {
    pub fn of(dir: &Path, f: &ArchiveFile) -> Option<Input> {
        let (start, end) = (f.started_at?, f.ended_at?);
        (end > start).then(|| Input {
            path: dir.join(&f.name),
            start_ms: start,
            end_ms: end,
            // Files a stopped server left behind have no counts: let ffmpeg find out.
            video: f.video_frames > 0 || f.video_codec.is_some() || (f.video_frames == 0 && f.audio_frames == 0),
            audio: f.audio_frames > 0 || (f.video_frames == 0 && f.audio_frames == 0),
        })
    }
}

/// Why no video was built.
#[derive(Debug)]
pub enum ComposeError {
    Missing(String),
    Failed(String),
    TimedOut(Duration),
    Nothing,
}

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComposeError::Missing(p) => write!(f, "ffmpeg is not installed ({p:?} was not found): only the raw files are kept"),
            ComposeError::Failed(e) => write!(f, "ffmpeg failed: {e}"),
            ComposeError::TimedOut(d) => write!(f, "ffmpeg took longer than {} s and was stopped", d.as_secs()),
            ComposeError::Nothing => f.write_str("no file had media to show"),
        }
    }
}

/// The grid for `n` tiles: (columns, rows).
pub fn grid(n: usize) -> (usize, usize) {
    match n {
        0 | 1 => (1, 1),
        2 => (2, 1),
        3 | 4 => (2, 2),
        _ => (3, n.div_ceil(3)),
    }
}

/// ffmpeg's arguments (after the program name) for `inputs` into `out`.
pub fn arguments(inputs: &[Input], size: (u32, u32), out: &Path) -> Option<Vec<String>> {
    let t0 = inputs.iter().map(|i| i.start_ms).min()?;
    let t1 = inputs.iter().map(|i| i.end_ms).max()?;
    let dur = (t1 - t0) as f64 / 1000.0;
    if dur <= 0.0 {
        return None;
    }
    let secs = |ms: i64| (ms - t0) as f64 / 1000.0;
    // Stretches between every arrival and departure.
    let mut cuts: Vec<i64> = inputs.iter().flat_map(|i| [i.start_ms, i.end_ms]).collect();
    cuts.sort();
    cuts.dedup();
    let videos: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i].video).collect();
    // (input, stretch start, stretch end, x, y, w, h)
    let mut tiles: Vec<(usize, f64, f64, u32, u32, u32, u32)> = Vec::new();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mid = (a + b) / 2;
        let on: Vec<usize> = videos.iter().copied().filter(|&i| inputs[i].start_ms <= mid && mid < inputs[i].end_ms).collect();
        if on.is_empty() {
            continue;
        }
        let (cols, rows) = grid(on.len());
        let (tw, th) = ((size.0 / cols as u32) & !1, (size.1 / rows as u32) & !1);
        for (k, &i) in on.iter().enumerate() {
            let (c, r) = ((k % cols) as u32, (k / cols) as u32);
            // The last row is centred when it is not full.
            let in_row = if r as usize == rows - 1 { on.len() - cols * (rows - 1) } else { cols };
            let x0 = (size.0 - tw * in_row as u32) / 2;
            tiles.push((i, secs(a), secs(b), x0 + c * tw, r * th, tw, th));
        }
    }
    let mut args: Vec<String> = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"].iter().map(|s| s.to_string()).collect();
    for i in inputs {
        // Simulcast layer switches change the frame size mid-file: the scaler follows, the
        // graph is not rebuilt.
        args.extend(["-reinit_filter".into(), "0".into(), "-i".into(), i.path.display().to_string()]);
    }
    let mut g = String::new();
    let _ = write!(g, "color=c={BACKGROUND}:s={}x{}:r=30:d={dur:.3}[bg0];", size.0, size.1);
    for &i in &videos {
        let uses: Vec<usize> = (0..tiles.len()).filter(|&t| tiles[t].0 == i).collect();
        if uses.is_empty() {
            continue;
        }
        let _ = write!(g, "[{i}:v]setpts=PTS-STARTPTS,tpad=start_duration={:.3}:color=black,fps=30", secs(inputs[i].start_ms));
        if uses.len() == 1 {
            let _ = write!(g, "[v{i}_{}];", uses[0]);
        } else {
            let _ = write!(g, ",split={}", uses.len());
            for t in &uses {
                let _ = write!(g, "[v{i}_{t}]");
            }
            g.push(';');
        }
    }
    for (t, (i, _, _, _, _, w, h)) in tiles.iter().enumerate() {
        let _ = write!(
            g,
            "[v{i}_{t}]scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color={BACKGROUND},setsar=1[t{t}];"
        );
    }
    for (t, (_, a, b, x, y, _, _)) in tiles.iter().enumerate() {
        let _ = write!(g, "[bg{t}][t{t}]overlay={x}:{y}:enable='between(t,{a:.3},{b:.3})':eof_action=pass[bg{}];", t + 1);
    }
    let vout = format!("bg{}", tiles.len());
    let audios: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i].audio).collect();
    for &i in &audios {
        let delay = (inputs[i].start_ms - t0).max(0);
        let _ = write!(g, "[{i}:a]adelay=delays={delay}:all=1,aresample=48000[a{i}];");
    }
    if audios.len() > 1 {
        for &i in &audios {
            let _ = write!(g, "[a{i}]");
        }
        let _ = write!(g, "amix=inputs={}:duration=longest:normalize=0[aout];", audios.len());
    } else if let Some(&i) = audios.first() {
        let _ = write!(g, "[a{i}]anull[aout];");
    }
    g.pop();
    args.extend(["-filter_complex".into(), g, "-map".into(), format!("[{vout}]")]);
    if !audios.is_empty() {
        args.extend(["-map".into(), "[aout]".into(), "-c:a".into(), "aac".into(), "-b:a".into(), "128k".into()]);
    }
    args.extend(
        ["-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-pix_fmt", "yuv420p", "-r", "30", "-movflags", "+faststart", "-t"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.push(format!("{dur:.3}"));
    args.push(out.display().to_string());
    Some(args)
}

/// Build the stage video at `out`; its size in bytes. Written under a temporary name and
/// renamed, so a half-built file is never served.
pub async fn compose(ffmpeg: &str, inputs: &[Input], size: (u32, u32), out: &Path) -> Result<u64, ComposeError> {
    let tmp = out.with_extension("part.mp4");
    let args = arguments(inputs, size, &tmp).ok_or(ComposeError::Nothing)?;
    let dur_ms = inputs.iter().map(|i| i.end_ms).max().unwrap_or(0) - inputs.iter().map(|i| i.start_ms).min().unwrap_or(0);
    // Generous: a four-hour live at veryfast on a small machine takes about a third of that.
    let limit = Duration::from_secs(120) + Duration::from_millis(dur_ms.max(0) as u64 * 3);
    let mut child = tokio::process::Command::new(ffmpeg)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ComposeError::Missing(ffmpeg.to_owned()),
            _ => ComposeError::Failed(format!("could not start {ffmpeg:?}: {e}")),
        })?;
    let mut stderr = child.stderr.take();
    let read = async move {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            // Bounded: ffmpeg at `-loglevel error` says little; keep at most 64 KiB.
            let _ = s.take(64 * 1024).read_to_end(&mut buf).await;
        }
        buf
    };
    let run = async { tokio::join!(child.wait(), read) };
    let (status, err) = match tokio::time::timeout(limit, run).await {
        Ok((status, err)) => (status, err),
        Err(_) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ComposeError::TimedOut(limit));
        }
    };
    let text = String::from_utf8_lossy(&err);
    let tail: String = text.lines().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" / ");
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ComposeError::Failed(format!("{s}: {tail}")));
        }
        Err(e) => return Err(ComposeError::Failed(e.to_string())),
    }
    tokio::fs::rename(&tmp, out).await.map_err(|e| ComposeError::Failed(format!("{}: {e}", out.display())))?;
    let bytes = tokio::fs::metadata(out).await.map(|m| m.len()).unwrap_or(0);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, start: i64, end: i64) -> Input {
        Input { path: PathBuf::from(name), start_ms: start, end_ms: end, video: true, audio: true }
    }

    #[test]
    fn the_grid_follows_who_is_on_stage() {
        // ann the whole time, bob from 10 s to 40 s, a feed from 20 s.
        let inputs = [input("a.mp4", 1_000, 61_000), input("b.mp4", 11_000, 41_000), input("c.mp4", 21_000, 61_000)];
        let args = arguments(&inputs, (1280, 720), Path::new("out.mp4")).unwrap_or_default();
        let g = args.iter().skip_while(|a| *a != "-filter_complex").nth(1).cloned().unwrap_or_default();
        // Stretches: [0,10) ann alone, [10,20) two, [20,40) three, [40,60) two.
        assert!(g.contains("overlay=0:0:enable='between(t,0.000,10.000)'"), "{g}");
        assert!(g.contains("overlay=640:0:enable='between(t,10.000,20.000)'"), "{g}");
        assert!(g.contains("overlay=320:360:enable='between(t,20.000,40.000)'"), "the third tile is centred on the last row: {g}");
        assert!(g.contains("[1:v]setpts=PTS-STARTPTS,tpad=start_duration=10.000"), "{g}");
        assert!(g.contains("amix=inputs=3"), "{g}");
        assert!(g.contains("adelay=delays=20000:all=1"), "{g}");
        assert!(args.windows(2).any(|w| w[0] == "-t" && w[1] == "60.000"), "{args:?}");
        assert_eq!(grid(5), (3, 2));
        assert!(arguments(&[input("a.mp4", 5, 5)], (1280, 720), Path::new("o")).is_none(), "no time, no video");
    }
}

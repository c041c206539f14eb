//! Progress on stderr, one style for every long job (sampling, training, imports, dataset
//! generation): a bar on a terminal; elsewhere (nohup, CI, a pipe), where indicatif would draw
//! nothing, a plain line every few seconds with the count, the message (e.g. the loss), the rate
//! and the time left.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds between progress lines when stderr is not a terminal (`FEWSTEP_PROGRESS_EVERY`
/// changes it; the tests set it to 0).
const EVERY_SECS: f64 = 5.0;

/// A bar of `len` units labelled `what`; a message set on it (e.g. the loss) shows after the
/// counts.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
    } else {
        bar.set_style(
            ProgressStyle::with_template("{prefix}: {pos}/{len} {msg} ({per_sec}, eta {eta})")
                .expect("valid template"),
        );
        bar.set_draw_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(Lines::new()),
            1,
        ));
    }
    bar.set_prefix(what.to_string());
    bar
}

/// A "terminal" that prints the bar's line to stderr at most once per interval and ignores the
/// cursor movements of redrawing. The first line waits one interval, so short jobs print none.
#[derive(Debug)]
struct Lines {
    every: Duration,
    last: Mutex<Instant>,
}

impl Lines {
    fn new() -> Self {
        let secs = std::env::var("FEWSTEP_PROGRESS_EVERY")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(EVERY_SECS);
        Lines {
            every: Duration::from_secs_f64(secs),
            last: Mutex::new(Instant::now()),
        }
    }
}

impl TermLike for Lines {
    fn width(&self) -> u16 {
        200
    }

    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if !s.trim().is_empty() && last.elapsed() >= self.every {
            eprintln!("{}", s.trim_end());
            *last = Instant::now();
        }
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

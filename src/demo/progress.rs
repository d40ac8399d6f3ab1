//! Showing the demo's progress: a bar on a terminal, a line a second otherwise (logs, CI), or
//! nothing (tests).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Where the demo reports how far it got.
pub trait Progress {
    /// A one-off message (set-up steps, clean-up).
    fn note(&mut self, message: &str);
    fn start(&mut self, total_jobs: u64);
    fn update(&mut self, finished_jobs: u64, requests: u64, rate_limited: u64);
    fn finish(&mut self);
}

/// The best display for stderr: a bar on a terminal, lines elsewhere.
pub fn for_stderr() -> Box<dyn Progress + Send> {
    if std::io::stderr().is_terminal() {
        Box::new(Bar { bar: None })
    } else {
        Box::new(Lines { total: 0 })
    }
}

struct Bar {
    bar: Option<ProgressBar>,
}

impl Progress for Bar {
    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    fn start(&mut self, total_jobs: u64) {
        let bar = ProgressBar::new(total_jobs);
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} jobs finished  {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    fn update(&mut self, finished_jobs: u64, requests: u64, rate_limited: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(finished_jobs);
            bar.set_message(format!("{requests} requests, {rate_limited} answered 429"));
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

struct Lines {
    total: u64,
}

impl Progress for Lines {
    fn note(&mut self, message: &str) {
        eprintln!("{message}");
    }

    fn start(&mut self, total_jobs: u64) {
        self.total = total_jobs;
    }

    fn update(&mut self, finished_jobs: u64, requests: u64, rate_limited: u64) {
        eprintln!(
            "{finished_jobs}/{} jobs finished, {requests} requests sent, {rate_limited} answered 429",
            self.total
        );
    }

    fn finish(&mut self) {}
}

/// Shows nothing (tests).
pub struct Silent;

impl Progress for Silent {
    fn note(&mut self, _message: &str) {}
    fn start(&mut self, _total_jobs: u64) {}
    fn update(&mut self, _finished_jobs: u64, _requests: u64, _rate_limited: u64) {}
    fn finish(&mut self) {}
}

//! The `fewstep` command line.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod bench;
mod calibrate;
mod completions;
mod data;
mod defaults;
pub mod distill;
mod eval;
mod list;
pub mod reproduce;
pub mod sample;
pub mod schema;
pub mod train;

/// Few-step diffusion sampling and distillation (aDDIM, multistep consistency, progressive
/// distillation). Every schedule, sampler, denoiser and objective is a plugin picked by name:
/// `fewstep list` shows them.
#[derive(Parser, Debug)]
#[command(
    name = "fewstep",
    version,
    propagate_version = true,
    after_help = "Configs: a command's `--config FILE.toml` takes the same keys as its flags, and \
                  flags override it; `fewstep schema` writes JSON Schemas for editors \
                  (docs/configuration.md). Shell completion: `fewstep completions bash|zsh|fish`."
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// List registered plugins with a description and their config fields.
    List(list::Args),
    /// Draw samples with any schedule, integrator and denoiser.
    #[command(
        after_help = "Every setting, flags or not (optimiser, checkpoints, schedule, plugin \
                            fields): `fewstep config sample` prints them with their defaults; \
                            docs/config-reference.md describes each; `--config FILE.toml` sets \
                            them."
    )]
    Sample(sample::Args),
    /// Rerun the paper's comparisons (tables, CSV, plots).
    Reproduce(reproduce::Args),
    /// Datasets: make built-in sets, import, inspect.
    #[command(subcommand)]
    Data(data::DataCmd),
    /// Write a JSON Schema per config file kind (completion and checks of TOML configs).
    ///
    /// One `<kind>.schema.json` per config file kind, generated from the registered plugins;
    /// docs/configuration.md shows how an editor uses them.
    Schema(schema::Args),
    /// Print a shell completion script.
    ///
    /// E.g. `fewstep completions bash > ~/.local/share/bash-completion/completions/fewstep`, or
    /// `fewstep completions zsh > ~/.zfunc/_fewstep` with `~/.zfunc` in `fpath`, or
    /// `fewstep completions fish > ~/.config/fish/completions/fewstep.fish`.
    Completions(completions::Args),
    /// Score samples against a reference set: FD, sliced W2, and for mixtures NLL and mode KL.
    Eval(eval::Args),
    /// Train a network denoiser (diffusion teacher or distilled student) with checkpoints.
    #[command(
        after_help = "Every setting, flags or not (optimiser, checkpoints, schedule, plugin \
                            fields): `fewstep config train` prints them with their defaults; \
                            docs/config-reference.md describes each; `--config FILE.toml` sets \
                            them."
    )]
    Train(train::Args),
    /// Distil a few-step student from a teacher (multistep CD/CT, progressive distillation).
    ///
    /// E.g. `fewstep distill --teacher runs/teacher --objective multistep-cd --student-steps 8
    /// --out runs/cd8`; then `fewstep sample --checkpoint runs/cd8` samples it with DDIM on its
    /// 8-step grid (Algorithm 2). Defaults: configs/distill.toml.
    #[command(
        after_help = "Every setting, flags or not (optimiser, checkpoints, schedule, plugin \
                            fields): `fewstep config distill` prints them with their defaults; \
                            docs/config-reference.md describes each; `--config FILE.toml` sets \
                            them."
    )]
    Distill(distill::Args),
    /// Print a command's resolved default config (train, distill or sample): every key and plugin
    /// field with its default, a start for a `--config` file.
    Config(defaults::Args),
    /// Measure a trained network's aDDIM variance table x_var(t) on data (for `variance = "table"`).
    Calibrate(calibrate::Args),
    /// Throughput measurements: `fewstep bench train --model mlp --dim 64 --batch 4096`.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// The one `--force` flag of every command that writes a file (flattened into its arguments).
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct Force {
    /// Replace an output file that already exists (without it, the command refuses before any
    /// work). An input of the same command and a read-only file are never replaced.
    #[arg(long)]
    pub force: bool,
}

/// clap's parser for a count or seed flag. Negative numbers reach it (`allow_negative_numbers`)
/// so that `--steps -4` gets a range error instead of clap's "unexpected argument", and a number
/// too large for a config's TOML integer (i64) is refused here rather than wrapping to a negative.
pub(crate) fn count<T: TryFrom<i64>>(s: &str) -> Result<T, String> {
    let n: i128 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number >= 0, got {s:?}"))?;
    if n < 0 {
        return Err(format!("expected a whole number >= 0, got {n}"));
    }
    i64::try_from(n)
        .ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{n} is too large (at most {})", i64::MAX))
}

/// clap's parser for a float flag that must be a finite number >= 0 (`--eta`): NaN and the
/// infinities parse as numbers, so they are refused here by name.
pub(crate) fn non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number, got {s:?}"))?;
    if v >= 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("expected a finite number >= 0, got {v}"))
    }
}

/// Parses arguments, runs the command, prints an error with its causes on one line.
pub fn main() -> ExitCode {
    default_sigpipe();
    keep_freed_memory();
    let cli = Cli::parse();
    init_tracing(&cli.log);
    // Training stops at a step boundary with a checkpoint on the first Ctrl-C or SIGTERM.
    if matches!(
        cli.command,
        Command::Train(_) | Command::Distill(_) | Command::Reproduce(_)
    ) {
        if let Err(e) = crate::interrupt::install() {
            eprintln!("warning: cannot handle Ctrl-C ({e}): an interrupt loses unsaved steps");
        }
    }
    // Under `mpirun`/`srun` (the `mpi` feature) this process joins the job as one rank; the
    // session finalises MPI when it goes out of scope, after the command.
    let _session = match crate::dist::init() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::List(a) => list::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Data(c) => data::run(c),
        Command::Schema(a) => schema::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::Train(a) => train::run(a),
        Command::Distill(a) => distill::run(a),
        Command::Bench(c) => bench::run(c),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Config(a) => defaults::run(a),
    };
    let world = crate::dist::world();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match crate::interrupt::exit_code(&e) {
            // Every rank stopped at the same step (the stop rode on the all-reduce) and rank 0
            // wrote the checkpoint: all end with the signal's code, rank 0 alone says so.
            Some(code) => {
                if world.is_root() {
                    eprintln!("error: {e:#}");
                }
                ExitCode::from(code)
            }
            None => {
                let who = match world.size() {
                    1 => String::new(),
                    n => format!(" (rank {} of {n})", world.rank()),
                };
                // One line, outermost context first: `cannot read config c.toml: No such file`.
                eprintln!("error{who}: {e:#}");
                if world.size() > 1 {
                    // The other ranks may be waiting in a collective for this one: end the job.
                    world.abort(1);
                }
                ExitCode::FAILURE
            }
        },
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Training allocates and frees the same large buffers (activations, gradients) every step. By
/// default glibc serves each from a fresh `mmap` and returns it with `munmap`, so every step
/// page-faults its memory back in and interrupts the other threads to flush their TLBs (perf:
/// ~10% of an mlp step on 2 cores). Keeping freed memory in the heap reuses it instead.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// `fewstep list | head` should end quietly like any Unix tool. Rust ignores SIGPIPE, which turns
/// a closed pipe into a panic in `println!`; the default disposition ends the process instead.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: sets one signal's disposition to the default, before any other thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

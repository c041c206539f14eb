//! Ctrl-C (SIGINT) and SIGTERM: a training loop that is listening stops at the next step
//! boundary and writes a checkpoint; anything else (or a second signal) ends the process at once
//! with the shell's code for the signal (130, 143).
//!
//! The handler only touches atomics and calls `_exit`, both safe inside a signal handler. A
//! process that never calls [`install`] (a library user, the test harness) keeps the default
//! dispositions.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Once;

/// The first signal received while a loop listened (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);
/// Whether a loop is listening ([`Listening`] is alive).
static LISTENING: AtomicBool = AtomicBool::new(false);

/// Installs the handler for SIGINT and SIGTERM (once per process; later calls do nothing).
pub fn install() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // SAFETY: the closure only uses atomics and `_exit` (async-signal-safe).
            let registered = unsafe {
                signal_hook::low_level::register(sig, move || {
                    let first = LISTENING.load(Ordering::SeqCst)
                        && REQUESTED
                            .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok();
                    if !first {
                        signal_hook::low_level::exit(128 + sig);
                    }
                })
            };
            if let Err(e) = registered {
                result = Err(e);
            }
        }
    });
    result
}

/// While alive, the first SIGINT or SIGTERM is recorded for [`Listening::requested`] instead of
/// ending the process. Dropping it stops listening (a later signal ends the process again).
pub struct Listening(());

impl Listening {
    /// Starts listening (without [`install`] no signal ever arrives here).
    pub fn start() -> Self {
        REQUESTED.store(0, Ordering::SeqCst);
        LISTENING.store(true, Ordering::SeqCst);
        Listening(())
    }

    /// The signal received since listening started, if any.
    pub fn requested(&self) -> Option<Signal> {
        pending()
    }
}

/// The signal recorded since a loop started listening, if any: what [`Listening::requested`]
/// says, for code inside the loop (a data-parallel step folds it into its all-reduce).
pub fn pending() -> Option<Signal> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(Signal(sig)),
    }
}

/// The signals a loop stops for, first the one that wins when the processes of a job received
/// different ones (SIGTERM: a scheduler ending the job).
const STOP_SIGNALS: [i32; 2] = [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT];

/// One flag per stopping signal, 1 where `signal` is it: summed over a job's processes (an
/// all-reduce), [`agreed_stop`] turns the sums into one decision every process shares.
pub fn stop_flags(signal: Option<Signal>) -> [f32; 2] {
    STOP_SIGNALS.map(|s| f32::from(u8::from(signal == Some(Signal(s)))))
}

/// The stop that [`stop_flags`] summed over the processes ask for: the first stopping signal
/// any of them received, or none.
pub fn agreed_stop(sums: [f32; 2]) -> Option<Signal> {
    STOP_SIGNALS
        .iter()
        .zip(sums)
        .find(|(_, n)| *n > 0.0)
        .map(|(&s, _)| Signal(s))
}

impl Drop for Listening {
    fn drop(&mut self) {
        LISTENING.store(false, Ordering::SeqCst);
    }
}

/// A received termination signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub i32);

impl Signal {
    /// The exit code a shell reports for a process this signal ended: 128 + its number.
    pub fn exit_code(self) -> u8 {
        (128 + self.0).clamp(0, 255) as u8
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            signal_hook::consts::SIGINT => write!(f, "SIGINT (Ctrl-C)"),
            signal_hook::consts::SIGTERM => write!(f, "SIGTERM"),
            n => write!(f, "signal {n}"),
        }
    }
}

/// The error of work stopped by a signal; the command line exits with [`Signal::exit_code`].
#[derive(Debug)]
pub struct Interrupted {
    pub signal: Signal,
    /// What was kept and how to continue.
    pub message: String,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted by {}: {}", self.signal, self.message)
    }
}

impl std::error::Error for Interrupted {}

/// The exit code of an error that is (or was caused by) an [`Interrupted`].
pub fn exit_code(e: &anyhow::Error) -> Option<u8> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Interrupted>())
        .map(|i| i.signal.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal_hook::consts::{SIGINT, SIGTERM};

    #[test]
    fn processes_agree_on_one_stop() {
        let sum = |a: Option<i32>, b: Option<i32>| {
            let (x, y) = (stop_flags(a.map(Signal)), stop_flags(b.map(Signal)));
            [x[0] + y[0], x[1] + y[1]]
        };
        assert_eq!(agreed_stop(sum(None, None)), None);
        assert_eq!(agreed_stop(sum(None, Some(SIGINT))), Some(Signal(SIGINT)));
        assert_eq!(agreed_stop(sum(Some(SIGTERM), None)), Some(Signal(SIGTERM)));
        assert_eq!(
            agreed_stop(sum(Some(SIGINT), Some(SIGTERM))),
            Some(Signal(SIGTERM))
        );
    }
}

//! What `baton lock` and `baton elect` do once they hold: run the command
//! (renewal goes on in the guard's background task), forward SIGINT and
//! SIGTERM to it, stop it if the hold is lost, release when it exits and
//! exit with its code; or, without a command, print the index and hold
//! until interrupted.

use std::{future::Future, process::ExitCode, time::Duration};

use crate::client::{ClientError, Leadership, LockGuard, Lost};

use super::{
    FAILURE, fail, print_lines,
    signals::{self, Sig, Signals},
};

/// How long a command gets to exit after SIGTERM, when the hold is lost,
/// before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// A held lock or leadership, as far as this module cares.
pub(super) trait Held: Send {
    /// The fencing token.
    fn index(&self) -> u64;
    /// Resolves when the hold is lost.
    fn lost(&self) -> impl Future<Output = Lost> + Send + 'static;
    /// Releases (or resigns).
    fn give_up(self) -> impl Future<Output = Result<(), ClientError>> + Send;
}

impl Held for LockGuard {
    fn index(&self) -> u64 {
        LockGuard::index(self)
    }
    fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        LockGuard::lost(self)
    }
    fn give_up(self) -> impl Future<Output = Result<(), ClientError>> + Send {
        self.release()
    }
}

impl Held for Leadership {
    fn index(&self) -> u64 {
        Leadership::index(self)
    }
    fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        Leadership::lost(self)
    }
    fn give_up(self) -> impl Future<Output = Result<(), ClientError>> + Send {
        self.resign()
    }
}

/// Holds `held` (described as `what`, e.g. `lock "k"`) while `command`
/// runs with `env`, or until a signal if `command` is empty.
pub(super) async fn hold<H: Held>(
    held: H,
    what: &str,
    command: &[String],
    env: &[(&str, String)],
    signals: &mut Signals,
) -> ExitCode {
    match command.split_first() {
        None => until_signal(held, what, signals).await,
        Some((program, args)) => run_command(held, what, program, args, env, signals).await,
    }
}

/// Prints the index, then holds until SIGINT/SIGTERM and releases.
async fn until_signal<H: Held>(held: H, what: &str, signals: &mut Signals) -> ExitCode {
    let index = held.index();
    if let Err(e) = print_lines([index.to_string()]) {
        tracing::debug!(error = %e, "stdout is closed");
    }
    tokio::select! {
        lost = held.lost() => fail(format_args!("lost {what} (index {index}): {lost}")),
        _ = signals.recv() => give_up(held, what, ExitCode::SUCCESS).await,
    }
}

/// Runs the command while holding; see the module docs.
async fn run_command<H: Held>(
    held: H,
    what: &str,
    program: &str,
    args: &[String],
    env: &[(&str, String)],
    signals: &mut Signals,
) -> ExitCode {
    let index = held.index();
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("baton: cannot run {program:?}: {e}");
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return give_up(held, what, ExitCode::from(code)).await;
        }
    };
    let lost = held.lost();
    tokio::pin!(lost);
    let mut was_lost = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            reason = &mut lost, if !was_lost => {
                eprintln!("baton: lost {what} (index {index}): {reason}; stopping {program:?}");
                was_lost = true;
                terminate(&mut child);
                kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
            }
            sig = signals.recv() => {
                if let Some(pid) = child.id()
                    && let Err(e) = signals::send(pid, sig)
                {
                    tracing::warn!(error = %e, ?sig, "cannot forward the signal");
                }
            }
            _ = sleep_until(kill_at), if kill_at.is_some() => {
                eprintln!("baton: {program:?} still runs {}s after SIGTERM; killing it", KILL_GRACE.as_secs());
                kill_at = None;
                let _ = child.start_kill();
            }
        }
    };
    let code = match status {
        Ok(status) => exit_code(status),
        Err(e) => {
            eprintln!("baton: lost track of {program:?}: {e}");
            FAILURE
        }
    };
    if was_lost {
        return ExitCode::from(FAILURE);
    }
    give_up(held, what, ExitCode::from(code)).await
}

/// Asks the child to stop (SIGTERM where there are signals).
fn terminate(child: &mut tokio::process::Child) {
    let sent = child
        .id()
        .map(|pid| signals::send(pid, Sig::Terminate).is_ok());
    if sent == Some(false) {
        let _ = child.start_kill();
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Releases the hold and returns `code`, or a failure if the hold turned out
/// to be lost. A release that cannot reach baton only warns: the hold ends
/// by its ttl.
async fn give_up<H: Held>(held: H, what: &str, code: ExitCode) -> ExitCode {
    let index = held.index();
    match held.give_up().await {
        Ok(()) => code,
        Err(ClientError::Lost(reason)) => fail(format_args!(
            "lost {what} (index {index}) before releasing it: {reason}"
        )),
        Err(e) => {
            eprintln!("baton: could not release {what} (index {index}); it ends with its ttl: {e}");
            code
        }
    }
}

/// A process's exit status as an exit code: its own, or 128 + the signal
/// that killed it.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(FAILURE);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return u8::try_from((128 + sig) & 0xff).unwrap_or(FAILURE);
        }
    }
    FAILURE
}

//! SIGINT and SIGTERM: caught while baton waits or holds, forwarded to the
//! command it runs.

use std::io;

/// A signal baton reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sig {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Sig {
    /// The signal's number, for the `128 + N` exit code.
    pub(super) fn number(self) -> u8 {
        match self {
            Sig::Interrupt => 2,
            Sig::Terminate => 15,
        }
    }

    /// The exit code of a process that stopped because of this signal.
    pub(super) fn exit_code(self) -> u8 {
        128 + self.number()
    }
}

/// Catches SIGINT and SIGTERM from creation on (so they no longer kill
/// baton outright).
pub(super) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next signal.
    pub(super) async fn recv(&mut self) -> Sig {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Sig::Interrupt,
                _ = self.terminate.recv() => Sig::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Sig::Interrupt
        }
    }
}

/// Sends `sig` to the process `pid`.
pub(super) fn send(pid: u32, sig: Sig) -> io::Result<()> {
    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal, kill_process};
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad pid"))?;
        let signal = match sig {
            Sig::Interrupt => Signal::INT,
            Sig::Terminate => Signal::TERM,
        };
        kill_process(pid, signal).map_err(io::Error::from)
    }
    #[cfg(not(unix))]
    {
        let _ = (pid, sig);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "signals are not supported here",
        ))
    }
}

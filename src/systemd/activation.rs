//! Socket activation: systemd (a `.socket` unit, see cross/lckv.socket) binds the port and
//! passes the listening socket as fd 3 with `$LISTEN_FDS` and `$LISTEN_PID`; the server then
//! accepts on it instead of binding, so the port is open before the model is loaded and a
//! restart loses no connection. The variables are read once and removed, so that no child
//! process takes them for its own.

use std::net::TcpListener;

use crate::{Error, Result};

/// The listening TCP socket systemd passed, if it passed one to this process. Sockets meant
/// for another process (`$LISTEN_PID` names another pid) are ignored; a socket that is not a
/// TCP listener, or more than one socket, is an error that says what the unit should pass.
pub fn inherited_listener() -> Result<Option<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    match fds.len() {
        0 => return Ok(None),
        1 => {}
        n => {
            return Err(Error::Usage(format!(
                "systemd passed {n} sockets (LISTEN_FDS={n}); lckv serve listens on one: give its .socket unit a single ListenStream="
            )))
        }
    }
    fds.take_tcp_listener(0)
        .map_err(|e| {
            Error::Usage(format!(
                "the socket systemd passed (fd 3) is not a listening TCP socket ({e}); use ListenStream=ADDRESS:PORT in the .socket unit"
            ))
        })?
        .map(Some)
        .ok_or_else(|| Error::Usage("the socket systemd passed (fd 3) was already taken".into()))
}

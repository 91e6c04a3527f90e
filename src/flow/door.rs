//! Doors to what lies behind the gate: `exec` runs a configured program in
//! a pseudo-terminal (with the user's name and factor level in its
//! environment, window changes passed on); `telnet` joins the terminal to
//! an internal TCP service such as a legacy BBS. No door opens for a
//! session below its required factor level.

use super::session::Session;
use super::menu::{Menu, Module};
use super::{crlf, Ending, Terminal};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn run<T: Terminal>(term: &mut T, s: &Session<'_>, menu: &Menu) -> std::io::Result<Option<Ending>> {
    if !s.auth.complete() {
        term.write(&crlf("\n  This door needs every factor your account requires.\n")).await?;
        return Ok(None);
    }
    match menu.module {
        Module::Telnet => telnet(term, s, menu).await,
        Module::Exec => exec(term, s, menu).await,
        _ => Ok(None),
    }
}

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;
const OPT_ECHO: u8 = 1;
const OPT_SGA: u8 = 3;

/// Strips telnet commands from what the service sends and answers its
/// option requests: the service may echo and suppress go-ahead (what a
/// BBS wants); everything else is declined.
#[derive(Default)]
pub struct TelnetFilter {
    state: u8, // 0 data, 1 after IAC, 2 after WILL/WONT/DO/DONT, 3 in SB, 4 SB after IAC
    verb: u8,
}

impl TelnetFilter {
    /// Returns (data for the user, replies for the service).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut data, mut reply) = (Vec::with_capacity(input.len()), Vec::new());
        for &b in input {
            match self.state {
                0 if b == IAC => self.state = 1,
                0 => data.push(b),
                1 => match b {
                    IAC => {
                        data.push(IAC);
                        self.state = 0;
                    }
                    WILL | WONT | DO | DONT => {
                        self.verb = b;
                        self.state = 2;
                    }
                    SB => self.state = 3,
                    _ => self.state = 0,
                },
                2 => {
                    match (self.verb, b) {
                        (WILL, OPT_ECHO | OPT_SGA) => reply.extend_from_slice(&[IAC, DO, b]),
                        (WILL, _) => reply.extend_from_slice(&[IAC, DONT, b]),
                        (DO, _) => reply.extend_from_slice(&[IAC, WONT, b]),
                        _ => {}
                    }
                    self.state = 0;
                }
                3 if b == IAC => self.state = 4,
                3 => {}
                4 => self.state = if b == SE { 0 } else { 3 },
                _ => self.state = 0,
            }
        }
        (data, reply)
    }
}

/// User input for a telnet service: IAC doubled.
pub fn telnet_escape(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for &b in input {
        out.push(b);
        if b == IAC {
            out.push(IAC);
        }
    }
    out
}

async fn telnet<T: Terminal>(term: &mut T, s: &Session<'_>, menu: &Menu) -> std::io::Result<Option<Ending>> {
    let (Some(host), Some(port)) = (menu.config.host.as_deref(), menu.config.port) else { return Ok(None) };
    let stream = match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(st)) => st,
        _ => {
            tracing::warn!(host, port, "telnet door: the service is not answering");
            term.write(&crlf("\n  The service behind this door is not answering. Try again later.\n")).await?;
            return Ok(None);
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    if let Some(a) = &menu.config.announce {
        let line = a.replace("{username}", &s.auth.user.username);
        wr.write_all(&telnet_escape(line.as_bytes())).await?;
        wr.write_all(b"\r\n").await?;
    }
    let mut filter = TelnetFilter::default();
    let mut buf = vec![0u8; 8192];
    loop {
        tokio::select! {
            input = term.read(s.idle) => match input {
                Err(_) => return Ok(Some(Ending::IdleTimeout)),
                Ok(None) => return Ok(Some(Ending::Disconnected)),
                Ok(Some(bytes)) => {
                    if wr.write_all(&telnet_escape(&bytes)).await.is_err() {
                        break;
                    }
                }
            },
            n = rd.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let (data, reply) = filter.feed(&buf[..n]);
                    if !reply.is_empty() && wr.write_all(&reply).await.is_err() {
                        break;
                    }
                    if !data.is_empty() {
                        term.write(&data).await?;
                    }
                }
            },
        }
    }
    term.write(&crlf("\n  The service closed the connection.\n")).await?;
    Ok(None)
}

async fn exec<T: Terminal>(term: &mut T, s: &Session<'_>, menu: &Menu) -> std::io::Result<Option<Ending>> {
    let Some(program) = menu.config.program.as_deref() else { return Ok(None) };
    let (cols, rows) = term.size();
    let pty = match Pty::open(cols, rows) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "exec door: opening a pseudo-terminal");
            term.write(&crlf("\n  The door cannot open right now.\n")).await?;
            return Ok(None);
        }
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&menu.config.args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .env("TERM", door_term(&s.terminal_type))
        .env("LANG", if s.encoding == 1 { "C.UTF-8" } else { "C" })
        .env("PORTCULLIS_USER", &s.auth.user.username)
        .env("PORTCULLIS_USER_ID", s.auth.user.id.to_string())
        .env("PORTCULLIS_FACTORS", s.auth.factors.to_string())
        .env("PORTCULLIS_LEVEL", s.auth.required_level.to_string())
        .env("PORTCULLIS_SESSION", s.auth.session_id.to_string())
        .env("PORTCULLIS_GROUPS", s.auth.user.groups.join(","))
        .kill_on_drop(true);
    let spawned = pty.spawn(&mut cmd);
    // The command holds copies of the slave side: drop them, and the
    // daemon's own, so the master reads EOF/EIO once the program is gone.
    drop(cmd);
    let pty = pty.into_master();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, program, "exec door: starting the program");
            term.write(&crlf("\n  The door cannot open right now.\n")).await?;
            return Ok(None);
        }
    };
    // The program's session and process group id (it calls setsid).
    let group = child.id();
    let (mut reader, mut writer) = pty.master()?;
    // Input goes to the program through its own task, so a program that
    // does not read never stalls the loop below (output, idle, resizes).
    let (to_program, mut input) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let input_task = tokio::spawn(async move {
        while let Some(bytes) = input.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut size = (cols, rows);
    let mut buf = vec![0u8; 8192];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let ending = loop {
        tokio::select! {
            input = term.read(s.idle) => match input {
                Err(_) => break Some(Ending::IdleTimeout),
                Ok(None) => break Some(Ending::Disconnected),
                // Beyond 64 queued chunks the program is not reading: drop.
                Ok(Some(bytes)) => {
                    let _ = to_program.try_send(bytes);
                }
            },
            n = reader.read(&mut buf) => match n {
                // EIO once the program and its children have closed the pty.
                Ok(0) | Err(_) => break None,
                Ok(n) => term.write(&buf[..n]).await?,
            },
            // The program ended (even if something it left behind still
            // holds the terminal open).
            _ = child.wait() => {
                // Flush what it printed last.
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), reader.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    term.write(&buf[..n]).await?;
                }
                break None;
            }
            _ = tick.tick() => {
                let now = term.size();
                if now != size {
                    size = now;
                    pty.resize(now.0, now.1);
                }
            }
        }
    };
    input_task.abort();
    let _ = input_task.await;
    // The program leads its own session: end it and anything it left
    // behind (background jobs), then make sure.
    if let Some(pid) = group {
        // SAFETY: signalling the process group the child leads (it may
        // have exited; its background jobs keep the group alive).
        unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGHUP) };
    }
    if tokio::time::timeout(Duration::from_secs(1), child.wait()).await.is_err() {
        if let Some(pid) = group {
            // SAFETY: as above.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    }
    if ending.is_none() {
        term.write(&crlf("\n")).await?;
    }
    Ok(ending)
}

/// The `TERM` a door gets: the client's terminal type when it is a plain
/// name (`[A-Za-z0-9.+-]`, at most 64 characters, as terminfo names are),
/// `vt100` otherwise. The client chooses it in its pty request, so it is
/// attacker text: `xterm;rm -rf /tmp/x` must not reach a program (or the
/// shell script a door may be) as it was sent.
pub fn door_term(requested: &str) -> &str {
    let plain = !requested.is_empty() && requested.len() <= 64 && requested.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'));
    if plain {
        requested
    } else {
        "vt100"
    }
}

/// Highest descriptor number the fallback of [`close_from_3`] visits.
const FD_SCAN_LIMIT: libc::c_uint = 1 << 20;

/// The descriptors above stderr the fallback must visit: the soft
/// RLIMIT_NOFILE (no descriptor can be numbered at or above it), capped.
fn fd_limit() -> libc::c_uint {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur.min(libc::rlim_t::from(FD_SCAN_LIMIT)) as libc::c_uint
    } else {
        FD_SCAN_LIMIT
    }
}

/// Between fork and exec: every descriptor from 3 up is closed at exec
/// (marked close-on-exec), whatever the daemon inherited from its parent
/// or opened without `O_CLOEXEC`. Marking rather than closing keeps the
/// runtime's own exec-error pipe working until the exec. `close_range`
/// with `CLOSE_RANGE_CLOEXEC` (Linux 5.11) does it in one call; older
/// kernels get a loop of `fcntl` up to `limit`. Only async-signal-safe calls.
fn close_from_3(limit: libc::c_uint) -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags of this process.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return Ok(());
    }
    cloexec_loop(limit)
}

/// The fallback of [`close_from_3`]: marks 3..limit close-on-exec one by one.
fn cloexec_loop(limit: libc::c_uint) -> std::io::Result<()> {
    for fd in 3..limit as libc::c_int {
        // SAFETY: fcntl on a number that may or may not be open; EBADF is fine.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            // SAFETY: as above.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// A pseudo-terminal pair.
struct Pty {
    master: std::os::fd::OwnedFd,
    slave: Option<std::os::fd::OwnedFd>,
}

impl Pty {
    fn open(cols: u32, rows: u32) -> std::io::Result<Pty> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // Both ends are opened close-on-exec from the start, so a door
        // spawned meanwhile by another session cannot inherit them.
        // SAFETY: posix_openpt returns a new descriptor or -1.
        let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if m < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `m` is a fresh descriptor we own.
        let master = unsafe { std::os::fd::OwnedFd::from_raw_fd(m) };
        // SAFETY: grantpt/unlockpt on the master we just opened.
        if unsafe { libc::grantpt(master.as_raw_fd()) } != 0 || unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: ptsname_r writes a NUL-terminated name into the buffer.
        if unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `name` is NUL-terminated by ptsname_r.
        let sl = unsafe { libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if sl < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `sl` is a fresh descriptor we own.
        let slave = unsafe { std::os::fd::OwnedFd::from_raw_fd(sl) };
        let pty = Pty { master, slave: Some(slave) };
        pty.resize(cols, rows);
        Ok(pty)
    }

    /// Drops the slave side (the program has its own copies).
    fn into_master(self) -> Pty {
        Pty { master: self.master, slave: None }
    }

    fn spawn(&self, cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
        let slave = self.slave.as_ref().ok_or_else(|| std::io::Error::other("the pty's slave side is closed"))?;
        cmd.stdin(slave.try_clone()?).stdout(slave.try_clone()?).stderr(slave.try_clone()?);
        let limit = fd_limit();
        // SAFETY: only async-signal-safe calls between fork and exec: a new
        // session, the pty (now stdin) as its controlling terminal, and no
        // descriptor but 0-2 surviving the exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                close_from_3(limit)
            });
        }
        cmd.spawn()
    }

    /// The master side, non-blocking, driven by the runtime's reactor (no
    /// thread sits in a read that a leftover process could hold forever).
    fn master(&self) -> std::io::Result<(MasterIo, MasterIo)> {
        use std::os::fd::AsRawFd;
        let fd = self.master.try_clone()?;
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: an OwnedFd stays open and always returns the same raw
        // descriptor while the AsyncFd owns it.
        let io = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        let io = std::sync::Arc::new(io);
        Ok((MasterIo(io.clone()), MasterIo(io)))
    }

    fn resize(&self, cols: u32, rows: u32) {
        use std::os::fd::AsRawFd;
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
        unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

/// Reads and writes on a non-blocking pty master.
struct MasterIo(std::sync::Arc<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>);

impl MasterIo {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        loop {
            let mut guard = self.0.readable().await?;
            // SAFETY: reading into a valid buffer of the given length.
            match guard.try_io(|fd| match unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } {
                n if n < 0 => Err(std::io::Error::last_os_error()),
                n => Ok(n as usize),
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        while !buf.is_empty() {
            let mut guard = self.0.writable().await?;
            // SAFETY: writing from a valid buffer of the given length.
            match guard.try_io(|fd| match unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) } {
                n if n < 0 => Err(std::io::Error::last_os_error()),
                n => Ok(n as usize),
            }) {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

fn winsize(cols: u32, rows: u32) -> libc::winsize {
    libc::winsize { ws_row: rows.min(u16::MAX as u32) as u16, ws_col: cols.min(u16::MAX as u32) as u16, ws_xpixel: 0, ws_ypixel: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telnet_commands_are_stripped_and_answered() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"hello", b"hello", b""),
            (&[b'a', IAC, IAC, b'b'], &[b'a', IAC, b'b'], b""),
            (&[IAC, WILL, OPT_ECHO, b'x'], b"x", &[IAC, DO, OPT_ECHO]),
            (&[IAC, DO, 24], b"", &[IAC, WONT, 24]),
            (&[IAC, WILL, 31], b"", &[IAC, DONT, 31]),
            (&[IAC, SB, 24, 1, IAC, SE, b'y'], b"y", b""),
            (&[IAC, 241, b'z'], b"z", b""),
        ];
        for (input, data, reply) in cases {
            let mut f = TelnetFilter::default();
            let (d, r) = f.feed(input);
            assert_eq!((&d[..], &r[..]), (*data, *reply), "input {input:?}");
        }
        // Split across reads.
        let mut f = TelnetFilter::default();
        let (d1, _) = f.feed(&[b'a', IAC]);
        let (d2, r2) = f.feed(&[DO, 1, b'b']);
        assert_eq!((d1, d2, r2), (b"a".to_vec(), b"b".to_vec(), vec![IAC, WONT, 1]));
        assert_eq!(telnet_escape(&[1, IAC, 2]), vec![1, IAC, IAC, 2]);
    }

    #[test]
    fn door_term_lets_only_plain_names_through() {
        let long = "x".repeat(65);
        let cases: &[(&str, &str)] = &[
            ("xterm", "xterm"),
            ("xterm-256color", "xterm-256color"),
            ("screen.xterm-256color", "screen.xterm-256color"),
            ("rxvt-unicode+x", "rxvt-unicode+x"),
            ("VT100", "VT100"),
            ("", "vt100"),
            ("xterm;rm -rf /tmp/x", "vt100"),
            ("xterm rm", "vt100"),
            ("$(id)", "vt100"),
            ("`id`", "vt100"),
            ("xterm\n", "vt100"),
            ("xterm\u{1b}[2J", "vt100"),
            ("../../etc/passwd", "vt100"),
            ("xtérm", "vt100"),
            (&long, "vt100"),
        ];
        for (input, want) in cases {
            assert_eq!(door_term(input), *want, "TERM {input:?}");
        }
        assert_eq!(door_term(&"x".repeat(64)), "x".repeat(64));
    }

    /// A descriptor opened without close-on-exec is gone in an exec'd
    /// program (with close_range and with the fallback loop); 0-2 stay,
    /// and a program that cannot start still reports its error.
    #[test]
    fn close_from_3_leaves_only_stdio_across_exec() {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("portcullis-inherited-marker");
        let file = std::fs::File::create(&marker).expect("marker");
        // SAFETY: dup of a descriptor we own; the copy has no O_CLOEXEC.
        let leaked = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(leaked > 2);
        let listing = |how: u8| {
            let mut cmd = std::process::Command::new("/bin/sh");
            cmd.arg("-c").arg("for f in /proc/$$/fd/*; do echo \"${f##*/} $(readlink \"$f\")\"; done");
            let limit = fd_limit();
            // SAFETY: close_from_3 and cloexec_loop are async-signal-safe.
            unsafe {
                match how {
                    1 => cmd.pre_exec(move || close_from_3(limit)),
                    2 => cmd.pre_exec(move || cloexec_loop(limit)),
                    _ => &mut cmd,
                };
            }
            let out = cmd.output().expect("run sh");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let marker_name = marker.display().to_string();
        assert!(listing(0).contains(&marker_name), "without the fix the descriptor is inherited: {}", listing(0));
        for how in [1, 2] {
            let fds = listing(how);
            assert!(!fds.contains(&marker_name), "{how}: {fds}");
            for std in ["0 ", "1 ", "2 "] {
                assert!(fds.lines().any(|l| l.starts_with(std)), "{how}: {fds}");
            }
        }
        // SAFETY: closing our own dup.
        unsafe { libc::close(leaked) };
        let mut bad = std::process::Command::new("/nonexistent/portcullis-door");
        let limit = fd_limit();
        // SAFETY: as above.
        unsafe {
            bad.pre_exec(move || close_from_3(limit));
        }
        assert!(bad.spawn().is_err());
    }
}

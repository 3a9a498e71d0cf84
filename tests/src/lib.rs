//! vpnfwd's integration-test lab: uniquely named network namespaces joined by
//! veth pairs, commands and long-running processes inside them, and sockets
//! opened from inside a namespace.
//!
//! Every namespace and process a [`Lab`] creates is removed when it is
//! dropped — also when the test panics — and nothing outside its own
//! namespaces is touched. Names carry the process id and a counter, so tests
//! running in parallel never collide.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// True when the tests can build namespaces (running as root).
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A set of namespaces and processes, torn down on drop.
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

/// A failed lab command, with its output.
#[derive(Debug)]
pub struct CmdError(pub String);

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CmdError {}

fn run(cmd: &mut Command) -> Result<Output, CmdError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CmdError(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(CmdError(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

impl Lab {
    /// A new, empty lab.
    pub fn new() -> Lab {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        Lab {
            tag: format!("vf{}x{n}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Create namespace `short` (returns its full name) with loopback up.
    ///
    /// # Errors
    /// If `ip netns add` fails.
    pub fn ns(&mut self, short: &str) -> Result<String, CmdError> {
        let name = format!("{}-{short}", self.tag);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        self.namespaces.push(name.clone());
        self.exec(&name, &["ip", "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A veth pair: `a_if` in namespace `a`, `b_if` in `b`, both up.
    ///
    /// # Errors
    /// If `ip link` fails.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<(), CmdError> {
        run(Command::new("ip").args([
            "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
        ]))?;
        self.exec(a, &["ip", "link", "set", a_if, "up"])?;
        self.exec(b, &["ip", "link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Run a command in namespace `ns` and wait for it; fails on non-zero exit.
    ///
    /// # Errors
    /// [`CmdError`] with the command's output.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<Output, CmdError> {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args))
    }

    /// Run a command in `ns`; returns whether it succeeded (no error on failure).
    pub fn succeeds(&self, ns: &str, args: &[&str]) -> bool {
        self.exec(ns, args).is_ok()
    }

    /// Start a long-running process in `ns`, its output to `log`. It is
    /// stopped (SIGTERM, then SIGKILL) when the lab is dropped.
    ///
    /// # Errors
    /// If it cannot be started.
    pub fn spawn(
        &mut self,
        ns: &str,
        args: &[&str],
        log: &std::path::Path,
    ) -> Result<u32, CmdError> {
        let f =
            std::fs::File::create(log).map_err(|e| CmdError(format!("{}: {e}", log.display())))?;
        let f2 = f.try_clone().map_err(|e| CmdError(e.to_string()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .map_err(|e| CmdError(format!("{args:?}: {e}")))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Stop one spawned process with SIGTERM and wait up to `timeout`;
    /// returns its exit status if it exited.
    pub fn stop(&mut self, pid: u32, timeout: Duration) -> Option<std::process::ExitStatus> {
        let i = self.children.iter().position(|c| c.id() == pid)?;
        let mut c = self.children.remove(i);
        terminate(&mut c, timeout)
    }

    /// True if the spawned process `pid` is still running.
    pub fn running(&mut self, pid: u32) -> bool {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Run `f` on a thread whose network namespace is `ns` (for sockets).
    ///
    /// # Errors
    /// If the namespace cannot be entered.
    pub fn in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<T>> {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
        Ok(std::thread::spawn(move || {
            // SAFETY: setns on a namespace file we opened; it affects only
            // this new thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        }))
    }

    /// Poll `f` every 100 ms until it returns true or `timeout` passes.
    pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

fn terminate(c: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    // `ip netns exec` execs the program, so the child's pid is the program's.
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            terminate(&mut c, Duration::from_secs(3));
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stdin(Stdio::null())
                .output();
        }
    }
}

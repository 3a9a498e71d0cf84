//! vpnfwd's integration-test lab: uniquely named network namespaces joined by
//! veth pairs, commands and long-running processes inside them, and sockets
//! opened from inside a namespace.
//!
//! Every namespace and process a [`Lab`] creates is removed when it is
//! dropped — also when the test panics — and nothing outside its own
//! namespaces is touched. Names carry the process id and a counter, so tests
//! running in parallel never collide. The temporary files its processes were
//! given (logs, and arguments naming `vpnfwd-*` files in the temporary
//! directory) and those handed to [`Lab::track`] go too; when the test
//! failed, each log's last lines are printed first.
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
    /// Temporary files and directories removed on drop.
    files: Vec<std::path::PathBuf>,
}

/// `p` if it is a file of ours in the temporary directory: named
/// `vpnfwd-*`, or inside a `vpnfwd-*` directory there.
fn ours(p: &std::path::Path) -> Option<std::path::PathBuf> {
    let rest = p.strip_prefix(std::env::temp_dir()).ok()?;
    let top = rest.components().next()?.as_os_str().to_str()?;
    top.starts_with("vpnfwd-").then(|| p.to_path_buf())
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
            files: Vec::new(),
        }
    }

    /// Remove `path` (a file, or a directory with its contents) when the
    /// lab is dropped.
    pub fn track(&mut self, path: impl Into<std::path::PathBuf>) {
        let p = path.into();
        if !self.files.contains(&p) {
            self.files.push(p);
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
        self.exec(a, &["ip", "link", "set", "dev", a_if, "up"])?;
        self.exec(b, &["ip", "link", "set", "dev", b_if, "up"])?;
        Ok(())
    }

    /// Run a command in namespace `ns` and wait for it; fails on non-zero exit.
    ///
    /// # Errors
    /// [`CmdError`] with the command's output.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<Output, CmdError> {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args))
    }

    /// Run a command in `ns`; its standard output, empty if it failed (for
    /// polling a CLI until its answer shows something).
    pub fn stdout(&self, ns: &str, args: &[&str]) -> String {
        self.exec(ns, args)
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
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
        self.track(log);
        for a in args {
            if let Some(p) = ours(std::path::Path::new(a)).filter(|p| p.is_file()) {
                self.track(p);
            }
        }
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

    /// Capture the frames received on `ifname` in namespace `ns` for
    /// `duration` (an AF_PACKET socket of the test's own; the forwarder's
    /// sockets still get their copies). Returns the frames, at most `max`.
    ///
    /// # Errors
    /// If the namespace cannot be entered.
    pub fn capture(
        &self,
        ns: &str,
        ifname: &str,
        duration: Duration,
        max: usize,
    ) -> io::Result<std::thread::JoinHandle<Vec<Vec<u8>>>> {
        let ifname =
            std::ffi::CString::new(ifname).map_err(|_| io::Error::other("interface name"))?;
        self.in_ns(ns, move || {
            let mut frames = Vec::new();
            // SAFETY: plain socket calls on a descriptor this closure owns;
            // buffers outlive the calls that use them.
            unsafe {
                let proto = (libc::ETH_P_ALL as u16).to_be();
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
                assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = libc::if_nametoindex(ifname.as_ptr()) as i32;
                let rc = libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                let start = Instant::now();
                let mut buf = vec![0u8; 65536];
                while start.elapsed() < duration && frames.len() < max {
                    let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n > 0 {
                        frames.push(buf[..n as usize].to_vec());
                    }
                }
                libc::close(fd);
            }
            frames
        })
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
        let failed = std::thread::panicking();
        for p in self.files.drain(..) {
            if failed && p.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- last lines of {}:", p.display());
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_removes_the_files_it_tracks_and_only_ours_are_taken_from_arguments() {
        let dir = std::env::temp_dir();
        let file = dir.join(format!("vpnfwd-{}-tracked.txt", std::process::id()));
        let sub = dir.join(format!("vpnfwd-{}-trackeddir", std::process::id()));
        std::fs::write(&file, "x").expect("file");
        std::fs::create_dir_all(&sub).expect("dir");
        std::fs::write(sub.join("inner"), "y").expect("inner");
        assert_eq!(ours(&file), Some(file.clone()));
        assert_eq!(ours(&sub.join("inner")), Some(sub.join("inner")));
        assert_eq!(ours(std::path::Path::new("/etc/hostname")), None);
        assert_eq!(ours(&dir.join("other.txt")), None);
        {
            let mut lab = Lab::new();
            lab.track(&file);
            lab.track(&sub);
            lab.track(&file);
            assert_eq!(lab.files.len(), 2, "tracked once");
        }
        assert!(!file.exists());
        assert!(!sub.exists());
    }
}

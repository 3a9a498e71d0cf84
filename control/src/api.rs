//! The REST API (127.0.0.1:8082 by default): `GET /ping`, `GET /peers`,
//! `GET /routes?family=vpnv4[&rd=…][&rt=…]`, `GET /stats` (the workers'
//! packet counters by reason; each AF_PACKET ring's kernel counters, or
//! each DPDK device's link, counters and free buffers), and
//! `POST /peers/<address>/refresh` (ask the peer to send its routes again,
//! RFC 2918), all JSON. A small
//! HTTP/1.1 server on its own thread; each request is passed to the control
//! thread, which answers from its tables between two of its own tasks, so
//! the API costs nothing while nobody asks (a snapshot pushed after every
//! change would cost time and memory in proportion to the whole RIB).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// A question for the control thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The peers and their state.
    Peers,
    /// Packet counters and ports.
    Stats,
    /// Send ROUTE-REFRESH to the peer at this address for each VPN family
    /// negotiated with it.
    Refresh(std::net::IpAddr),
    /// Learned VPN routes of one family, optionally of one RD or carrying
    /// one route target (as text, e.g. `65001:100`).
    Routes {
        /// VPNv6 rather than VPNv4.
        v6: bool,
        /// Only this RD.
        rd: Option<String>,
        /// Only routes carrying this target.
        rt: Option<String>,
    },
}

/// Where the API sends requests, each with the channel for its JSON answer.
pub type Requests = Sender<(Request, Sender<String>)>;

/// How long a request waits for the control thread.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

fn respond(s: &mut TcpStream, code: &str, body: &str) {
    let _ = write!(s, "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

/// The value of `key` in the query string `q`, percent-decoded (`+` is a
/// space); None if absent or not valid UTF-8 once decoded.
fn query(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .and_then(|(_, v)| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A stream whose reads fail once `.1` has passed (each waits at most
/// until then), so that a client sending a byte now and then cannot hold
/// the API.
struct Until(TcpStream, std::time::Instant);

impl std::io::Read for Until {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.1.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.0.set_read_timeout(Some(left))?;
        self.0.read(buf)
    }
}

/// Most bytes of a request's line and headers together.
const MAX_HEAD: u64 = 16 * 1024;
/// How long a client may take to send them.
const HEAD_WITHIN: Duration = Duration::from_secs(5);

fn ask(s: &mut TcpStream, requests: &Requests, req: Request) {
    let (tx, rx) = std::sync::mpsc::channel();
    if requests.send((req, tx)).is_err() {
        respond(
            s,
            "503 Service Unavailable",
            r#"{"error":"router stopping"}"#,
        );
        return;
    }
    match rx.recv_timeout(ANSWER_WITHIN) {
        Ok(body) => respond(s, "200 OK", &body),
        Err(_) => respond(
            s,
            "503 Service Unavailable",
            r#"{"error":"the router did not answer in time"}"#,
        ),
    }
}

fn handle(mut s: TcpStream, requests: &Requests) {
    let deadline = std::time::Instant::now() + HEAD_WITHIN;
    let mut line = String::new();
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => std::io::Read::take(Until(c, deadline), MAX_HEAD),
        Err(_) => return,
    });
    if r.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    // Skip the headers, up to the blank line that ends them; a head that
    // does not end within MAX_HEAD bytes or HEAD_WITHIN is refused.
    let mut h = String::new();
    let ended = loop {
        h.clear();
        match r.read_line(&mut h) {
            Ok(n) if n > 0 && h.ends_with('\n') && h.trim_end().is_empty() => break true,
            Ok(n) if n > 0 && h.ends_with('\n') => {}
            _ => break false,
        }
    };
    if !line.ends_with('\n') || !ended {
        respond(
            &mut s,
            "431 Request Header Fields Too Large",
            r#"{"error":"request line and headers must end within 16 KiB and 5 seconds"}"#,
        );
        // Read (a bounded amount of) what the client is still sending before
        // closing, so that the answer reaches it rather than a reset.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        let until = std::time::Instant::now() + Duration::from_millis(500);
        let mut buf = [0u8; 16384];
        while std::time::Instant::now() < until && s.read(&mut buf).is_ok_and(|n| n > 0) {}
        return;
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        respond(
            &mut s,
            "400 Bad Request",
            r#"{"error":"malformed request line"}"#,
        );
        return;
    };
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    if method == "POST" {
        let peer = path
            .strip_prefix("/peers/")
            .and_then(|r| r.strip_suffix("/refresh"));
        match peer.map(str::parse::<std::net::IpAddr>) {
            Some(Ok(a)) => ask(&mut s, requests, Request::Refresh(a)),
            Some(Err(_)) => respond(
                &mut s,
                "400 Bad Request",
                r#"{"error":"not an IP address"}"#,
            ),
            None => respond(&mut s, "404 Not Found", r#"{"error":"no such resource"}"#),
        }
        return;
    }
    if method != "GET" {
        respond(
            &mut s,
            "405 Method Not Allowed",
            r#"{"error":"GET, or POST /peers/<address>/refresh"}"#,
        );
        return;
    }
    match path {
        "/ping" => respond(&mut s, "200 OK", r#"{"status":"ok"}"#),
        "/peers" => ask(&mut s, requests, Request::Peers),
        "/stats" => ask(&mut s, requests, Request::Stats),
        "/routes" => {
            let v6 = match query(q, "family").as_deref() {
                None | Some("vpnv4") => false,
                Some("vpnv6") => true,
                Some(f) => {
                    respond(&mut s, "400 Bad Request", &serde_json::json!({"error": format!("unknown family {f:?} (vpnv4, vpnv6)")}).to_string());
                    return;
                }
            };
            let req = Request::Routes {
                v6,
                rd: query(q, "rd"),
                rt: query(q, "rt"),
            };
            ask(&mut s, requests, req);
        }
        _ => respond(&mut s, "404 Not Found", r#"{"error":"no such resource"}"#),
    }
}

/// Serve the API on `addr` until `stop` is set.
///
/// # Errors
/// If the address cannot be bound.
pub fn serve(
    addr: SocketAddr,
    requests: Requests,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    serve_on(TcpListener::bind(addr)?, requests, stop)
}

/// [`serve`] on a bound listener.
fn serve_on(
    l: TcpListener,
    requests: Requests,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    l.set_nonblocking(true)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    handle(s, &requests);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }))
}

/// `GET path` from the API at `addr`; the body on success.
///
/// # Errors
/// A message when the API cannot be reached or answers with an error.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    call(addr, "GET", path)
}

/// `POST path` (no body) to the API at `addr`; the body on success.
///
/// # Errors
/// A message when the API cannot be reached or answers with an error.
pub fn post(addr: SocketAddr, path: &str) -> Result<String, String> {
    call(addr, "POST", path)
}

fn call(addr: SocketAddr, method: &str, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| {
        format!("cannot reach the vpnfwd API at {addr}: {e} (is `vpnfwd run` running?)")
    })?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{}: {body}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API on a free loopback port whose control thread answers each
    /// request with its debug text.
    fn api() -> (SocketAddr, Arc<AtomicBool>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let (tx, rx) = std::sync::mpsc::channel::<(Request, Sender<String>)>();
        std::thread::spawn(move || {
            for (req, reply) in rx {
                let _ = reply.send(serde_json::json!(format!("{req:?}")).to_string());
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        serve_on(l, tx, stop.clone()).expect("serve");
        (addr, stop)
    }

    fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query("rd=65001%3A7&rt=a+b", "rd").as_deref(),
            Some("65001:7")
        );
        assert_eq!(query("rd=65001%3A7&rt=a+b", "rt").as_deref(), Some("a b"));
        assert_eq!(query("rd=%zz", "rd"), None, "bad escape");
        assert_eq!(query("rd=%4", "rd"), None, "cut escape");
        assert_eq!(query("rd=%ff", "rd"), None, "not UTF-8");
        let (addr, stop) = api();
        let body = get(addr, "/routes?family=vpnv4&rd=65001%3A7").expect("answer");
        assert!(body.contains(r#"rd: Some(\"65001:7\")"#), "{body}");
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn an_oversized_or_endless_request_head_is_refused_and_the_api_goes_on() {
        let (addr, stop) = api();
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000));
        assert!(raw(addr, long_line.as_bytes()).starts_with("HTTP/1.1 431"));
        let mut flood = b"GET /ping HTTP/1.1\r\n".to_vec();
        for i in 0..2000 {
            flood.extend_from_slice(format!("X-Filler-{i}: yes\r\n").as_bytes());
        }
        flood.extend_from_slice(b"\r\n");
        assert!(raw(addr, &flood).starts_with("HTTP/1.1 431"));
        assert!(
            raw(addr, b"GET /ping HTTP/1.1\r\nHost: x").starts_with("HTTP/1.1 431"),
            "head not ended"
        );
        assert!(raw(addr, b"").is_empty(), "nothing asked, nothing said");
        assert_eq!(get(addr, "/ping").expect("ping"), r#"{"status":"ok"}"#);
        stop.store(true, Ordering::Relaxed);
    }
}

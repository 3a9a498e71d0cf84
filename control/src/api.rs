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

use std::io::{BufRead, BufReader, Write};
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

fn query(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    })
}

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
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    if r.read_line(&mut line).is_err() {
        return;
    }
    // Skip the headers.
    let mut h = String::new();
    while r.read_line(&mut h).is_ok_and(|n| n > 2) {
        h.clear();
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
    let l = TcpListener::bind(addr)?;
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

//! The read-only REST API (127.0.0.1:8082 by default): `GET /ping`,
//! `GET /peers`, `GET /routes?family=vpnv4[&rd=…][&rt=…]`, all JSON. A small
//! HTTP/1.1 server on its own thread; the control thread publishes a
//! snapshot of what the API shows after each change, so requests never
//! touch the tables.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the API serves.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Peers: address, AS, state, since, routes received.
    pub peers: Vec<serde_json::Value>,
    /// Learned VPN routes.
    pub routes: Vec<serde_json::Value>,
}

/// The shared snapshot.
pub type Shared = Arc<Mutex<Snapshot>>;

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

fn handle(mut s: TcpStream, snap: &Shared) {
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
    if method != "GET" {
        respond(&mut s, "405 Method Not Allowed", r#"{"error":"only GET"}"#);
        return;
    }
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let snap = snap.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match path {
        "/ping" => respond(&mut s, "200 OK", r#"{"status":"ok"}"#),
        "/peers" => respond(
            &mut s,
            "200 OK",
            &serde_json::Value::Array(snap.peers).to_string(),
        ),
        "/routes" => {
            match query(q, "family").as_deref() {
                None | Some("vpnv4") | Some("vpnv6") => {}
                Some(f) => {
                    respond(&mut s, "400 Bad Request", &serde_json::json!({"error": format!("unknown family {f:?} (vpnv4, vpnv6)")}).to_string());
                    return;
                }
            }
            let v6 = query(q, "family").as_deref() == Some("vpnv6");
            let rd = query(q, "rd");
            let rt = query(q, "rt");
            let routes: Vec<serde_json::Value> = snap
                .routes
                .into_iter()
                .filter(|r| r["prefix"].as_str().is_some_and(|p| p.contains(':') == v6))
                .filter(|r| rd.as_deref().is_none_or(|x| r["rd"] == x))
                .filter(|r| {
                    rt.as_deref().is_none_or(|x| {
                        r["route_targets"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|t| t == x))
                    })
                })
                .collect();
            respond(
                &mut s,
                "200 OK",
                &serde_json::Value::Array(routes).to_string(),
            );
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
    snap: Shared,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    handle(s, &snap);
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
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| {
        format!("cannot reach the vpnfwd API at {addr}: {e} (is `vpnfwd run` running?)")
    })?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
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

//! BGP messages on the wire: header, OPEN, UPDATE, NOTIFICATION, KEEPALIVE
//! and ROUTE-REFRESH (RFC 4271 §4, RFC 2918).
//!
//! Decoding takes a [`Context`] of what the session negotiated (4-octet AS
//! numbers, ADD-PATH) and either returns the message or the NOTIFICATION the
//! session must send ([`Notification`]). UPDATE attribute errors follow
//! RFC 7606: attribute discard and treat-as-withdraw are reported inside the
//! decoded [`update::Update`]; only errors that leave the message unparseable
//! reset the session.

pub mod attr;
pub mod nlri;
pub mod open;
pub mod update;

pub use attr::{AsPathSegment, Attr, Origin};
pub use nlri::{Afi, Prefix, RouteDistinguisher, Safi, VpnPrefix};
pub use open::{Capability, Open};
pub use update::Update;

/// Length of the message header (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended-message capability.
pub const MAX_LEN: usize = 4096;

/// Message types.
pub mod msg_type {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 5;
}

/// NOTIFICATION error codes and subcodes (RFC 4271 §6).
pub mod err {
    /// Message header error.
    pub const HEADER: u8 = 1;
    /// OPEN message error.
    pub const OPEN: u8 = 2;
    /// UPDATE message error.
    pub const UPDATE: u8 = 3;
    /// Hold timer expired.
    pub const HOLD_TIMER: u8 = 4;
    /// Finite state machine error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// Header: connection not synchronised (bad marker).
    pub const HDR_NOT_SYNC: u8 = 1;
    /// Header: bad message length.
    pub const HDR_BAD_LENGTH: u8 = 2;
    /// Header: bad message type.
    pub const HDR_BAD_TYPE: u8 = 3;
    /// OPEN: unsupported version number.
    pub const OPEN_VERSION: u8 = 1;
    /// OPEN: bad peer AS.
    pub const OPEN_BAD_AS: u8 = 2;
    /// OPEN: bad BGP identifier.
    pub const OPEN_BAD_ID: u8 = 3;
    /// OPEN: unacceptable hold time.
    pub const OPEN_HOLD_TIME: u8 = 6;
    /// UPDATE: malformed attribute list.
    pub const UPD_MALFORMED_ATTRS: u8 = 1;
    /// UPDATE: attribute flags error.
    pub const UPD_FLAGS: u8 = 4;
    /// UPDATE: attribute length error.
    pub const UPD_LENGTH: u8 = 5;
    /// UPDATE: invalid NETWORK field.
    pub const UPD_NETWORK: u8 = 10;
    /// UPDATE: optional attribute error.
    pub const UPD_OPTIONAL: u8 = 9;
    /// UPDATE: missing well-known attribute.
    pub const UPD_MISSING: u8 = 3;
}

/// The NOTIFICATION a decoding error calls for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BGP error {code}/{subcode}: {reason}")]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data field.
    pub data: Vec<u8>,
    /// What was wrong, for the log.
    pub reason: String,
}

impl Notification {
    /// A notification with a reason.
    pub fn new(code: u8, subcode: u8, data: Vec<u8>, reason: impl Into<String>) -> Self {
        Notification {
            code,
            subcode,
            data,
            reason: reason.into(),
        }
    }
}

/// What the session negotiated, which changes the encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Both sides support 4-octet AS numbers (RFC 6793).
    pub four_octet_as: bool,
    /// Families whose NLRI carry ADD-PATH path identifiers (RFC 7911).
    pub add_path: Vec<(Afi, Safi)>,
}

impl Context {
    /// True if NLRI of this family carry path identifiers.
    pub fn add_path(&self, afi: Afi, safi: Safi) -> bool {
        self.add_path.contains(&(afi, safi))
    }
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION (code, subcode, data).
    Notification {
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
        /// Data.
        data: Vec<u8>,
    },
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918; subtype from RFC 7313).
    RouteRefresh {
        /// Address family.
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
        /// 0 normal, 1 begin-of-RR, 2 end-of-RR.
        subtype: u8,
    },
}

/// The length of the message at the start of `buf`, once its header is
/// there; for framing a TCP stream.
///
/// # Errors
/// A header [`Notification`] for a bad marker or length.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Notification> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16] != [0xff; 16] {
        return Err(Notification::new(
            err::HEADER,
            err::HDR_NOT_SYNC,
            vec![],
            "marker is not all ones",
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(Notification::new(
            err::HEADER,
            err::HDR_BAD_LENGTH,
            (len as u16).to_be_bytes().to_vec(),
            format!("length {len}"),
        ));
    }
    Ok(Some(len))
}

/// Decode one whole message (header included).
///
/// # Errors
/// The [`Notification`] the session must send.
pub fn decode(buf: &[u8], ctx: &Context) -> Result<Message, Notification> {
    let len = frame_len(buf)?.ok_or_else(|| {
        Notification::new(err::HEADER, err::HDR_BAD_LENGTH, vec![], "short header")
    })?;
    if buf.len() != len {
        return Err(Notification::new(
            err::HEADER,
            err::HDR_BAD_LENGTH,
            (len as u16).to_be_bytes().to_vec(),
            format!("length field {len}, message {}", buf.len()),
        ));
    }
    let ty = buf[18];
    let body = &buf[HEADER_LEN..];
    let bad_len = || {
        Notification::new(
            err::HEADER,
            err::HDR_BAD_LENGTH,
            (len as u16).to_be_bytes().to_vec(),
            format!("type {ty} with length {len}"),
        )
    };
    match ty {
        msg_type::OPEN => Open::decode(body).map(Message::Open),
        msg_type::UPDATE => Update::decode(body, ctx).map(Message::Update),
        msg_type::NOTIFICATION => {
            if body.len() < 2 {
                return Err(bad_len());
            }
            Ok(Message::Notification {
                code: body[0],
                subcode: body[1],
                data: body[2..].to_vec(),
            })
        }
        msg_type::KEEPALIVE => {
            if !body.is_empty() {
                return Err(bad_len());
            }
            Ok(Message::Keepalive)
        }
        msg_type::ROUTE_REFRESH => {
            if body.len() != 4 {
                return Err(bad_len());
            }
            Ok(Message::RouteRefresh {
                afi: Afi(u16::from_be_bytes([body[0], body[1]])),
                subtype: body[2],
                safi: Safi(body[3]),
            })
        }
        _ => Err(Notification::new(
            err::HEADER,
            err::HDR_BAD_TYPE,
            vec![ty],
            format!("message type {ty}"),
        )),
    }
}

/// Encode a message with its header.
///
/// # Errors
/// A description if the message does not fit 4096 bytes.
pub fn encode(m: &Message, ctx: &Context) -> Result<Vec<u8>, String> {
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&[0, 0, 0]);
    let ty = match m {
        Message::Open(o) => {
            o.encode(&mut out);
            msg_type::OPEN
        }
        Message::Update(u) => {
            u.encode(&mut out, ctx);
            msg_type::UPDATE
        }
        Message::Notification {
            code,
            subcode,
            data,
        } => {
            out.extend_from_slice(&[*code, *subcode]);
            out.extend_from_slice(data);
            msg_type::NOTIFICATION
        }
        Message::Keepalive => msg_type::KEEPALIVE,
        Message::RouteRefresh { afi, safi, subtype } => {
            out.extend_from_slice(&afi.0.to_be_bytes());
            out.extend_from_slice(&[*subtype, safi.0]);
            msg_type::ROUTE_REFRESH
        }
    };
    if out.len() > MAX_LEN {
        return Err(format!("message of {} bytes exceeds {MAX_LEN}", out.len()));
    }
    let len = out.len() as u16;
    out[16..18].copy_from_slice(&len.to_be_bytes());
    out[18] = ty;
    Ok(out)
}

/// Reads a big-endian cursor over a slice, failing with a notification.
pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }
    pub fn left(&self) -> usize {
        self.buf.len() - self.at
    }
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
}

//! UPDATE messages (RFC 4271 §4.3) with RFC 7606 error handling.
//!
//! Decoding never fails on a bad attribute value: the attribute is dropped
//! (attribute discard) or the whole UPDATE is marked treat-as-withdraw, as
//! RFC 7606 §7 prescribes per attribute. Only an UPDATE whose NLRI cannot be
//! located or parsed resets the session.

use super::attr::{self, code, flag, Attr, AttrError, PathAttr};
use super::nlri::{self, Afi, Nlri, Safi};
use super::{err, Context, Notification, Reader};

/// An UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn IPv4 unicast routes.
    pub withdrawn: Vec<Nlri>,
    /// Path attributes, in wire order.
    pub attrs: Vec<PathAttr>,
    /// Reachable IPv4 unicast routes.
    pub nlri: Vec<Nlri>,
    /// RFC 7606 treat-as-withdraw: every NLRI of this UPDATE (including
    /// MP_REACH's) must be handled as withdrawn.
    pub treat_as_withdraw: bool,
    /// Codes of attributes discarded under RFC 7606.
    pub discarded: Vec<u8>,
}

fn malformed(why: impl Into<String>) -> Notification {
    Notification::new(err::UPDATE, err::UPD_MALFORMED_ATTRS, vec![], why)
}

impl Update {
    /// The attribute with this type code, if present.
    pub fn attr(&self, c: u8) -> Option<&Attr> {
        self.attrs
            .iter()
            .find(|a| a.attr.code() == c)
            .map(|a| &a.attr)
    }

    /// An UPDATE with the given attributes (default flags) and no IPv4 NLRI.
    pub fn with_attrs(attrs: Vec<Attr>) -> Update {
        Update {
            attrs: attrs
                .into_iter()
                .map(|a| PathAttr {
                    flags: a.default_flags(),
                    attr: a,
                })
                .collect(),
            ..Update::default()
        }
    }

    /// True for an End-of-RIB marker (RFC 4724 §2).
    pub fn is_end_of_rib(&self) -> Option<(Afi, Safi)> {
        if self.withdrawn.is_empty() && self.nlri.is_empty() && self.attrs.is_empty() {
            return Some((Afi::IPV4, Safi::UNICAST));
        }
        match self.attrs.as_slice() {
            [PathAttr {
                attr: Attr::MpUnreach { afi, safi, nlri },
                ..
            }] if nlri.is_empty() && self.nlri.is_empty() && self.withdrawn.is_empty() => {
                Some((*afi, *safi))
            }
            _ => None,
        }
    }

    /// Decode an UPDATE body.
    ///
    /// # Errors
    /// The [`Notification`] for errors that RFC 7606 resolves by a session reset.
    pub fn decode(body: &[u8], ctx: &Context) -> Result<Update, Notification> {
        let mut r = Reader::new(body);
        let wlen = usize::from(r.u16().ok_or_else(|| malformed("no withdrawn length"))?);
        let wbuf = r
            .take(wlen)
            .ok_or_else(|| malformed("withdrawn routes overrun the message"))?;
        let alen = usize::from(r.u16().ok_or_else(|| malformed("no attribute length"))?);
        let abuf = r
            .take(alen)
            .ok_or_else(|| malformed("path attributes overrun the message"))?;
        let nbuf = &body[r.at..];
        let v4_add_path = ctx.add_path(Afi::IPV4, Safi::UNICAST);
        let bad_nlri =
            |_| Notification::new(err::UPDATE, err::UPD_NETWORK, vec![], "NLRI malformed");
        let withdrawn =
            nlri::decode(wbuf, Afi::IPV4, Safi::UNICAST, v4_add_path).map_err(bad_nlri)?;
        let nlri = nlri::decode(nbuf, Afi::IPV4, Safi::UNICAST, v4_add_path).map_err(bad_nlri)?;
        let mut u = Update {
            withdrawn,
            nlri,
            ..Update::default()
        };
        let mut a = Reader::new(abuf);
        let mut seen = [false; 256];
        while a.left() > 0 {
            let (Some(flags), Some(c)) = (a.u8(), a.u8()) else {
                // RFC 7606 §4: a truncated attribute header: the attributes
                // cannot be trusted, the NLRI can be located.
                u.treat_as_withdraw = true;
                break;
            };
            let len = if flags & flag::EXT_LEN != 0 {
                a.u16().map(usize::from)
            } else {
                a.u8().map(usize::from)
            };
            let Some(data) = len.and_then(|l| a.take(l)) else {
                u.treat_as_withdraw = true;
                break;
            };
            if seen[usize::from(c)] {
                // RFC 7606 §3.g: duplicates are discarded, except MP attributes.
                if c == code::MP_REACH || c == code::MP_UNREACH {
                    return Err(malformed(format!("duplicate attribute {c}")));
                }
                u.discarded.push(c);
                continue;
            }
            seen[usize::from(c)] = true;
            match attr::decode_value(flags, c, data, ctx) {
                Ok(attr) => u.attrs.push(PathAttr { flags, attr }),
                Err(AttrError::Discard(c)) => u.discarded.push(c),
                Err(AttrError::TreatAsWithdraw(_)) => u.treat_as_withdraw = true,
                Err(AttrError::Reset(n)) => return Err(n),
            }
        }
        // RFC 7606 §3.d: missing well-known mandatory attributes with NLRI
        // present → treat-as-withdraw.
        let has_mp_reach = u
            .attrs
            .iter()
            .any(|a| matches!(a.attr, Attr::MpReach { .. }));
        if !u.nlri.is_empty() || has_mp_reach {
            let needs_nh = !u.nlri.is_empty();
            if !seen[usize::from(code::ORIGIN)]
                || !seen[usize::from(code::AS_PATH)]
                || (needs_nh && !seen[usize::from(code::NEXT_HOP)])
            {
                u.treat_as_withdraw = true;
            }
        }
        Ok(u)
    }

    /// Encode the body.
    pub fn encode(&self, out: &mut Vec<u8>, ctx: &Context) {
        let mut w = Vec::new();
        nlri::encode(&mut w, &self.withdrawn);
        out.extend_from_slice(&(w.len() as u16).to_be_bytes());
        out.extend_from_slice(&w);
        let mut a = Vec::new();
        for pa in &self.attrs {
            attr::encode(&mut a, pa, ctx);
        }
        out.extend_from_slice(&(a.len() as u16).to_be_bytes());
        out.extend_from_slice(&a);
        nlri::encode(out, &self.nlri);
    }
}

//! KRPC, the DHT's message format (BEP 5): one bencoded dictionary per UDP datagram, with a
//! transaction id `t`, a type `y` (`q` query, `r` response, `e` error) and the query's method
//! `q` and arguments `a`, the response's values `r`, or the error's `[code, text]` in `e`.
//!
//! Everything here comes from strangers: sizes are checked before anything is kept, lists are
//! cut at fixed lengths, and a query we cannot take says why in a [`DecodeError`] so that its
//! sender gets error 203 or 204 in the same transaction. Malformed responses and errors are
//! never answered, so two nodes cannot bounce errors at each other.

use super::compact::{self, NodeInfo};
use super::id::NodeId;
use crate::bencode::{self, BencodeError, Value};
use crate::InfoHash;
use std::net::SocketAddr;
use thiserror::Error;

/// Larger datagrams are dropped unread: an honest KRPC message fits in one Ethernet frame, and
/// this leaves room for generous ones.
pub const MAX_DATAGRAM: usize = 8 * 1024;
/// Transaction ids are short (2 to 4 bytes in the wild); longer ones are not echoed.
pub const MAX_TRANSACTION: usize = 16;
pub const MAX_TOKEN: usize = 64;
/// Entries taken from one `nodes` or `nodes6` string (honest nodes send 8).
pub const MAX_NODES: usize = 32;
/// Peers taken from one `values` list.
pub const MAX_VALUES: usize = 200;
pub const MAX_ERROR_TEXT: usize = 256;
const MAX_VERSION: usize = 16;

/// Error codes of BEP 5.
pub mod code {
    pub const GENERIC: i64 = 201;
    pub const SERVER: i64 = 202;
    /// A malformed packet, an invalid argument or a bad token.
    pub const PROTOCOL: i64 = 203;
    pub const METHOD_UNKNOWN: i64 = 204;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub transaction: Vec<u8>,
    pub body: Body,
    /// The sender's client and version (`v`), when it says and it is short.
    pub version: Option<Vec<u8>>,
    /// BEP 42: in a response, the address the responder saw the query come from.
    pub ip: Option<SocketAddr>,
    /// BEP 43: the sender answers no queries, so it does not belong in a routing table.
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Query(Query),
    Response(Response),
    Error(ErrorReply),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Ping {
        id: NodeId,
    },
    FindNode {
        id: NodeId,
        target: NodeId,
        want: Option<Want>,
    },
    GetPeers {
        id: NodeId,
        info_hash: InfoHash,
        want: Option<Want>,
    },
    AnnouncePeer {
        id: NodeId,
        info_hash: InfoHash,
        /// 0 when absent with `implied_port`.
        port: u16,
        /// Store the port the query came from instead of `port` (for peers behind NAT, or on
        /// uTP at the DHT's own port).
        implied_port: bool,
        token: Vec<u8>,
    },
}

/// BEP 32 `want`: which address families the querier wants nodes of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    pub v4: bool,
    pub v6: bool,
}

/// A response's values. Which query it answers is known only from the transaction, so every
/// field but `id` is optional and read whenever present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: NodeId,
    /// Written only when not empty.
    pub nodes: Vec<NodeInfo>,
    pub nodes6: Vec<NodeInfo>,
    pub values: Vec<SocketAddr>,
    pub token: Option<Vec<u8>>,
}

impl Response {
    pub fn new(id: NodeId) -> Response {
        Response {
            id,
            nodes: Vec::new(),
            nodes6: Vec::new(),
            values: Vec::new(),
            token: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: i64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KrpcError {
    #[error("datagram of {0} bytes is larger than {MAX_DATAGRAM}")]
    TooLarge(usize),
    #[error(transparent)]
    Bencode(#[from] BencodeError),
    #[error("not a dictionary")]
    NotADict,
    #[error("no usable transaction id")]
    NoTransaction,
    #[error("unknown message type")]
    UnknownType,
    #[error("method unknown: {0}")]
    UnknownMethod(String),
    #[error("missing or invalid argument {0}")]
    BadArgument(&'static str),
    #[error("missing or invalid response field {0}")]
    BadResponse(&'static str),
    #[error("malformed error message")]
    BadError,
}

impl KrpcError {
    /// The error code a query failing this way is answered with, if any.
    pub fn code(&self) -> Option<i64> {
        match self {
            KrpcError::UnknownMethod(_) => Some(code::METHOD_UNKNOWN),
            KrpcError::BadArgument(_) => Some(code::PROTOCOL),
            _ => None,
        }
    }
}

/// A datagram that was not a message we can use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind}")]
pub struct DecodeError {
    pub kind: KrpcError,
    /// The transaction of a query we refuse, so that its sender can be told why.
    pub query_transaction: Option<Vec<u8>>,
}

impl DecodeError {
    fn new(kind: KrpcError) -> DecodeError {
        DecodeError {
            kind,
            query_transaction: None,
        }
    }

    /// The error reply owed to the sender: only a query with a transaction id gets one.
    pub fn reply(&self) -> Option<Message> {
        let t = self.query_transaction.clone()?;
        let code = self.kind.code()?;
        Some(Message::error(t, code, &self.kind.to_string()))
    }
}

impl Query {
    /// The querier's id.
    pub fn id(&self) -> NodeId {
        match self {
            Query::Ping { id }
            | Query::FindNode { id, .. }
            | Query::GetPeers { id, .. }
            | Query::AnnouncePeer { id, .. } => *id,
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Query::Ping { .. } => "ping",
            Query::FindNode { .. } => "find_node",
            Query::GetPeers { .. } => "get_peers",
            Query::AnnouncePeer { .. } => "announce_peer",
        }
    }
}

impl Message {
    pub fn query(transaction: Vec<u8>, query: Query) -> Message {
        Message::with_body(transaction, Body::Query(query))
    }

    pub fn response(transaction: Vec<u8>, response: Response) -> Message {
        Message::with_body(transaction, Body::Response(response))
    }

    pub fn error(transaction: Vec<u8>, code: i64, message: &str) -> Message {
        let message = truncate(message.as_bytes());
        Message::with_body(transaction, Body::Error(ErrorReply { code, message }))
    }

    fn with_body(transaction: Vec<u8>, body: Body) -> Message {
        Message {
            transaction,
            body,
            version: None,
            ip: None,
            read_only: false,
        }
    }

    /// The bencoded datagram. Keys are written in sorted order, as bencode requires.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(b'd');
        match &self.body {
            Body::Query(q) => {
                put_str(&mut out, b"a");
                encode_args(q, &mut out);
            }
            Body::Error(e) => {
                put_str(&mut out, b"e");
                out.push(b'l');
                put_int(&mut out, e.code);
                put_str(&mut out, e.message.as_bytes());
                out.push(b'e');
            }
            Body::Response(_) => {}
        }
        if let Some(ip) = &self.ip {
            let mut b = Vec::with_capacity(compact::PEER_V6);
            compact::write_peer(ip, &mut b);
            put_str(&mut out, b"ip");
            put_str(&mut out, &b);
        }
        if let Body::Query(q) = &self.body {
            put_str(&mut out, b"q");
            put_str(&mut out, q.method().as_bytes());
        }
        if let Body::Response(r) = &self.body {
            put_str(&mut out, b"r");
            encode_response(r, &mut out);
        }
        if self.read_only {
            put_str(&mut out, b"ro");
            put_int(&mut out, 1);
        }
        put_str(&mut out, b"t");
        put_str(&mut out, &self.transaction);
        if let Some(v) = &self.version {
            put_str(&mut out, b"v");
            put_str(&mut out, v);
        }
        put_str(&mut out, b"y");
        put_str(
            &mut out,
            match self.body {
                Body::Query(_) => b"q",
                Body::Response(_) => b"r",
                Body::Error(_) => b"e",
            },
        );
        out.push(b'e');
        out
    }
}

fn encode_args(q: &Query, out: &mut Vec<u8>) {
    out.push(b'd');
    put_str(out, b"id");
    put_str(out, &q.id().0);
    match q {
        Query::Ping { .. } => {}
        Query::FindNode { target, want, .. } => {
            put_str(out, b"target");
            put_str(out, &target.0);
            put_want(out, want);
        }
        Query::GetPeers {
            info_hash, want, ..
        } => {
            put_str(out, b"info_hash");
            put_str(out, &info_hash.0);
            put_want(out, want);
        }
        Query::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
            ..
        } => {
            put_str(out, b"implied_port");
            put_int(out, i64::from(*implied_port));
            put_str(out, b"info_hash");
            put_str(out, &info_hash.0);
            put_str(out, b"port");
            put_int(out, i64::from(*port));
            put_str(out, b"token");
            put_str(out, token);
        }
    }
    out.push(b'e');
}

fn put_want(out: &mut Vec<u8>, want: &Option<Want>) {
    let Some(want) = want else { return };
    put_str(out, b"want");
    out.push(b'l');
    if want.v4 {
        put_str(out, b"n4");
    }
    if want.v6 {
        put_str(out, b"n6");
    }
    out.push(b'e');
}

fn encode_response(r: &Response, out: &mut Vec<u8>) {
    out.push(b'd');
    put_str(out, b"id");
    put_str(out, &r.id.0);
    for (key, nodes) in [(&b"nodes"[..], &r.nodes), (b"nodes6", &r.nodes6)] {
        if nodes.is_empty() {
            continue;
        }
        let mut b = Vec::with_capacity(nodes.len() * compact::NODE_V6);
        for n in nodes {
            compact::write_node(n, &mut b);
        }
        put_str(out, key);
        put_str(out, &b);
    }
    if let Some(token) = &r.token {
        put_str(out, b"token");
        put_str(out, token);
    }
    if !r.values.is_empty() {
        put_str(out, b"values");
        out.push(b'l');
        let mut b = Vec::with_capacity(compact::PEER_V6);
        for v in &r.values {
            b.clear();
            compact::write_peer(v, &mut b);
            put_str(out, &b);
        }
        out.push(b'e');
    }
    out.push(b'e');
}

fn put_str(out: &mut Vec<u8>, b: &[u8]) {
    out.extend(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend(b);
}

fn put_int(out: &mut Vec<u8>, i: i64) {
    out.push(b'i');
    out.extend(i.to_string().as_bytes());
    out.push(b'e');
}

/// Reads one datagram.
pub fn decode(data: &[u8]) -> Result<Message, DecodeError> {
    if data.len() > MAX_DATAGRAM {
        return Err(DecodeError::new(KrpcError::TooLarge(data.len())));
    }
    let root = bencode::decode(data).map_err(|e| DecodeError::new(e.into()))?;
    if !root.is_dict() {
        return Err(DecodeError::new(KrpcError::NotADict));
    }
    let transaction = root
        .get("t")
        .and_then(Value::as_bytes)
        .filter(|t| t.len() <= MAX_TRANSACTION)
        .ok_or_else(|| DecodeError::new(KrpcError::NoTransaction))?;
    let body = match root.get("y").and_then(Value::as_bytes) {
        Some(b"q") => Body::Query(parse_query(&root).map_err(|kind| DecodeError {
            kind,
            query_transaction: Some(transaction.to_vec()),
        })?),
        Some(b"r") => Body::Response(parse_response(root.get("r")).map_err(DecodeError::new)?),
        Some(b"e") => Body::Error(parse_error(root.get("e")).map_err(DecodeError::new)?),
        _ => return Err(DecodeError::new(KrpcError::UnknownType)),
    };
    Ok(Message {
        transaction: transaction.to_vec(),
        body,
        version: root
            .get("v")
            .and_then(Value::as_bytes)
            .filter(|v| v.len() <= MAX_VERSION)
            .map(<[u8]>::to_vec),
        ip: root
            .get("ip")
            .and_then(Value::as_bytes)
            .and_then(compact::parse_peer),
        read_only: root.get("ro").and_then(Value::as_int) == Some(1),
    })
}

fn parse_query(root: &Value<'_>) -> Result<Query, KrpcError> {
    let method = root
        .get("q")
        .and_then(Value::as_bytes)
        .ok_or(KrpcError::BadArgument("q"))?;
    // An unknown method is 204 whatever its arguments look like.
    if !matches!(
        method,
        b"ping" | b"find_node" | b"get_peers" | b"announce_peer"
    ) {
        let shown = &method[..method.len().min(32)];
        return Err(KrpcError::UnknownMethod(
            String::from_utf8_lossy(shown).into_owned(),
        ));
    }
    let a = root
        .get("a")
        .filter(|a| a.is_dict())
        .ok_or(KrpcError::BadArgument("a"))?;
    let id = key_arg(a, "id")?;
    Ok(match method {
        b"ping" => Query::Ping { id },
        b"find_node" => Query::FindNode {
            id,
            target: key_arg(a, "target")?,
            want: want_arg(a),
        },
        b"get_peers" => Query::GetPeers {
            id,
            info_hash: InfoHash(key_arg(a, "info_hash")?.0),
            want: want_arg(a),
        },
        _ => {
            let info_hash = InfoHash(key_arg(a, "info_hash")?.0);
            let implied_port = a
                .get("implied_port")
                .and_then(Value::as_int)
                .is_some_and(|v| v != 0);
            let port = a
                .get("port")
                .and_then(Value::as_int)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0);
            let port = match (port, implied_port) {
                (Some(p), _) => p,
                (None, true) => 0,
                (None, false) => return Err(KrpcError::BadArgument("port")),
            };
            let token = a
                .get("token")
                .and_then(Value::as_bytes)
                .filter(|t| t.len() <= MAX_TOKEN)
                .ok_or(KrpcError::BadArgument("token"))?
                .to_vec();
            Query::AnnouncePeer {
                id,
                info_hash,
                port,
                implied_port,
                token,
            }
        }
    })
}

fn key_arg(a: &Value<'_>, name: &'static str) -> Result<NodeId, KrpcError> {
    a.get(name)
        .and_then(Value::as_bytes)
        .and_then(|b| <[u8; 20]>::try_from(b).ok())
        .map(NodeId)
        .ok_or(KrpcError::BadArgument(name))
}

fn want_arg(a: &Value<'_>) -> Option<Want> {
    let list = a.get("want")?.as_list()?;
    let mut want = Want::default();
    for item in list.iter().take(8) {
        match item.as_bytes() {
            Some(b"n4") => want.v4 = true,
            Some(b"n6") => want.v6 = true,
            _ => {}
        }
    }
    Some(want)
}

fn parse_response(r: Option<&Value<'_>>) -> Result<Response, KrpcError> {
    let r = r
        .filter(|r| r.is_dict())
        .ok_or(KrpcError::BadResponse("r"))?;
    let id = key_arg(r, "id").map_err(|_| KrpcError::BadResponse("id"))?;
    let mut response = Response::new(id);
    if let Some(b) = r.get("nodes").and_then(Value::as_bytes) {
        compact::parse_nodes(b, false, MAX_NODES, &mut response.nodes);
    }
    if let Some(b) = r.get("nodes6").and_then(Value::as_bytes) {
        compact::parse_nodes(b, true, MAX_NODES, &mut response.nodes6);
    }
    if let Some(list) = r.get("values").and_then(Value::as_list) {
        response.values = list
            .iter()
            .filter_map(|v| v.as_bytes().and_then(compact::parse_peer))
            .take(MAX_VALUES)
            .collect();
    }
    response.token = r
        .get("token")
        .and_then(Value::as_bytes)
        .filter(|t| t.len() <= MAX_TOKEN)
        .map(<[u8]>::to_vec);
    Ok(response)
}

fn parse_error(e: Option<&Value<'_>>) -> Result<ErrorReply, KrpcError> {
    let list = e.and_then(Value::as_list).ok_or(KrpcError::BadError)?;
    let code = list
        .first()
        .and_then(Value::as_int)
        .ok_or(KrpcError::BadError)?;
    let message = list
        .get(1)
        .and_then(Value::as_bytes)
        .map(truncate)
        .unwrap_or_default();
    Ok(ErrorReply { code, message })
}

fn truncate(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(MAX_ERROR_TEXT)]).into_owned()
}

#[cfg(test)]
mod tests;

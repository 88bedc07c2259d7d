//! etcd's v3 API as its JSON gateway speaks it (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/lease/*`, `/v3/auth/authenticate`): the gRPC messages of
//! `etcdserverpb/rpc.proto` in protobuf's JSON mapping. Bytes are base64,
//! 64-bit integers are strings, and fields at their default value (0, false,
//! empty) are left out, so every field here has a default.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes as base64 (protobuf `bytes`).
pub mod b64 {
    use super::*;

    /// Encodes.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    /// Decodes; absent is empty.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// A 64-bit integer as protobuf's JSON mapping writes it (a string), read
/// from a string or a number.
pub mod int {
    use super::*;

    /// Encodes as a string.
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Decodes a string or a number; absent is 0.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(i64),
        }
        match Option::<Either>::deserialize(d)? {
            None => Ok(0),
            Some(Either::N(n)) => Ok(n),
            Some(Either::S(s)) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Every response's header.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Header {
    /// The store's revision when the request was applied.
    #[serde(default, with = "int")]
    pub revision: i64,
}

/// A key and its value, with its revisions.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(default, with = "b64")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(default, with = "b64")]
    pub value: Vec<u8>,
    /// The revision that created it (a leader key's: the leader's epoch).
    #[serde(default, with = "int")]
    pub create_revision: i64,
    /// The revision of its last change.
    #[serde(default, with = "int")]
    pub mod_revision: i64,
    /// How many times it was written since it was created.
    #[serde(default, with = "int")]
    pub version: i64,
    /// The lease it is attached to, 0 for none.
    #[serde(default, with = "int")]
    pub lease: i64,
}

/// `RangeRequest`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RangeRequest {
    /// The key, or the range's first key.
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    /// One past the range's last key; empty for a single key.
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    /// At most this many keys; 0 for all.
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub limit: i64,
    /// `NONE`, `ASCEND`, `DESCEND`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<&'static str>,
    /// `KEY`, `VERSION`, `CREATE`, `MOD`, `VALUE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_target: Option<&'static str>,
}

/// `RangeResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RangeResponse {
    /// The header.
    #[serde(default)]
    pub header: Header,
    /// The keys found.
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    /// More keys matched than were returned.
    #[serde(default)]
    pub more: bool,
}

/// `PutRequest`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PutRequest {
    /// The key.
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    /// A lease to attach it to (it goes when the lease does); 0 for none.
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub lease: i64,
}

/// `DeleteRangeRequest`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeleteRequest {
    /// The key, or the range's first key.
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    /// One past the range's last key; empty for a single key.
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
}

/// One operation of a transaction (`RequestOp`).
#[derive(Clone, Debug, Serialize)]
pub enum RequestOp {
    /// Read.
    #[serde(rename = "request_range")]
    Range(RangeRequest),
    /// Write.
    #[serde(rename = "request_put")]
    Put(PutRequest),
    /// Delete.
    #[serde(rename = "request_delete_range")]
    Delete(DeleteRequest),
}

/// What a comparison looks at, and the value it compares with (`Compare`).
#[derive(Clone, Debug)]
pub enum Target {
    /// How many times the key was written (0: absent).
    Version(i64),
    /// The revision that created it (0: absent).
    Create(i64),
    /// The revision of its last change.
    Mod(i64),
    /// Its value.
    Value(Vec<u8>),
}

/// A comparison a transaction's branch rests on.
#[derive(Clone, Debug)]
pub struct Compare {
    /// The key.
    pub key: Vec<u8>,
    /// `EQUAL`, `GREATER`, `LESS`, `NOT_EQUAL`.
    pub result: &'static str,
    /// What is compared.
    pub target: Target,
}

impl Compare {
    /// `key`'s `target` equals its value.
    pub fn equal(key: impl Into<Vec<u8>>, target: Target) -> Compare {
        Compare {
            key: key.into(),
            result: "EQUAL",
            target,
        }
    }
}

impl Serialize for Compare {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("key", &b64(&self.key))?;
        m.serialize_entry("result", self.result)?;
        match &self.target {
            Target::Version(v) => {
                m.serialize_entry("target", "VERSION")?;
                m.serialize_entry("version", &v.to_string())?;
            }
            Target::Create(v) => {
                m.serialize_entry("target", "CREATE")?;
                m.serialize_entry("create_revision", &v.to_string())?;
            }
            Target::Mod(v) => {
                m.serialize_entry("target", "MOD")?;
                m.serialize_entry("mod_revision", &v.to_string())?;
            }
            Target::Value(v) => {
                m.serialize_entry("target", "VALUE")?;
                m.serialize_entry("value", &b64(v))?;
            }
        }
        m.end()
    }
}

/// `TxnRequest`: if every comparison holds, `success`, else `failure`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TxnRequest {
    /// The comparisons.
    pub compare: Vec<Compare>,
    /// Done when they all hold.
    pub success: Vec<RequestOp>,
    /// Done otherwise.
    pub failure: Vec<RequestOp>,
}

/// One operation's answer in a transaction (`ResponseOp`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ResponseOp {
    /// A read's.
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
}

/// `TxnResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TxnResponse {
    /// The header: its revision is the transaction's.
    #[serde(default)]
    pub header: Header,
    /// Whether the comparisons held.
    #[serde(default)]
    pub succeeded: bool,
    /// The answers of the branch that ran, in order.
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

/// `LeaseGrantRequest`.
#[derive(Clone, Debug, Serialize)]
pub struct LeaseGrantRequest {
    /// Seconds.
    #[serde(rename = "TTL", with = "int")]
    pub ttl: i64,
}

/// `LeaseGrantResponse`, `LeaseKeepAliveResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LeaseResponse {
    /// The header.
    #[serde(default)]
    pub header: Header,
    /// The lease.
    #[serde(rename = "ID", default, with = "int")]
    pub id: i64,
    /// Seconds left; 0 (absent) when the lease is gone.
    #[serde(rename = "TTL", default, with = "int")]
    pub ttl: i64,
    /// Why a grant failed.
    #[serde(default)]
    pub error: String,
}

/// The keep-alive stream's one message, as the gateway answers a single
/// request.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KeepAliveStream {
    /// The answer.
    #[serde(default)]
    pub result: Option<LeaseResponse>,
    /// A failure inside the stream.
    #[serde(default)]
    pub error: Option<GatewayError>,
}

/// A lease by id (`LeaseKeepAliveRequest`, `LeaseRevokeRequest`).
#[derive(Clone, Debug, Serialize)]
pub struct LeaseId {
    /// The lease.
    #[serde(rename = "ID", with = "int")]
    pub id: i64,
}

/// `AuthenticateRequest`.
#[derive(Serialize)]
pub struct AuthenticateRequest<'a> {
    /// The user.
    pub name: &'a str,
    /// Its password.
    pub password: &'a str,
}

/// `AuthenticateResponse`.
#[derive(Deserialize)]
pub struct AuthenticateResponse {
    /// The token, sent as `Authorization` from then on.
    #[serde(default)]
    pub token: String,
}

/// `Member` of `MemberListResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Member {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Where it serves clients.
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
}

/// `MemberListResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MemberListResponse {
    /// The members.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// What the gateway answers when a call fails (a gRPC status).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GatewayError {
    /// The gRPC code (5: not found, 9: failed precondition, 14:
    /// unavailable, 16: unauthenticated, ...).
    #[serde(default)]
    pub code: i32,
    /// etcd's message.
    #[serde(default)]
    pub message: String,
    /// The same, in older gateways.
    #[serde(default)]
    pub error: String,
}

/// One past the last key that starts with `prefix` (etcd's prefix range).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compare_is_written_as_the_gateway_reads_it() {
        let c = Compare::equal("k", Target::Create(0));
        assert_eq!(
            serde_json::to_string(&c).expect("json"),
            r#"{"key":"aw==","result":"EQUAL","target":"CREATE","create_revision":"0"}"#
        );
    }

    #[test]
    fn responses_with_defaults_left_out_and_numbers_as_strings_are_read() {
        let r: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"7"},"responses":[{"response_range":{"header":{"revision":"7"},"kvs":[{"key":"Zm9v","create_revision":"5","mod_revision":"6","version":"2","value":"YmFy"}],"count":"1"}}]}"#,
        )
        .expect("txn");
        assert!(!r.succeeded);
        assert_eq!(r.header.revision, 7);
        let kv = &r.responses[0].response_range.as_ref().expect("range").kvs[0];
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice()),
            (&b"foo"[..], &b"bar"[..])
        );
        assert_eq!((kv.create_revision, kv.lease), (5, 0));
        let l: KeepAliveStream =
            serde_json::from_str(r#"{"result":{"header":{},"ID":"12345"}}"#).expect("keepalive");
        assert_eq!(
            l.result.expect("result").ttl,
            0,
            "an expired lease has no TTL"
        );
    }

    #[test]
    fn bad_base64_or_integers_are_errors_not_zeroes() {
        assert!(serde_json::from_str::<KeyValue>(r#"{"key":"!!"}"#).is_err());
        assert!(serde_json::from_str::<KeyValue>(r#"{"version":"x"}"#).is_err());
    }

    #[test]
    fn a_prefix_range_ends_past_every_key_under_it() {
        assert_eq!(prefix_end(b"/vmdr/"), b"/vmdr0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}

//! A client of etcd's v3 API through its JSON gateway (HTTP/1.1 and JSON, no
//! gRPC): the few calls a cluster of drd needs, over every endpoint of the
//! cluster in turn, with TLS and user/password authentication.
//!
//! Why the gateway and not gRPC: etcd serves it on its client port itself,
//! and a gRPC client needs `protoc` at build time, which a fresh machine
//! does not have (the README's main command must build there).

use crate::wire::{self, KeyValue, RangeRequest, TxnRequest, TxnResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Where a secret is read from, at each use (so it can be rotated without a
/// restart). Its `Debug` names the source, never the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// A file's content, without its trailing newline.
    File(PathBuf),
    /// An environment variable of the daemon.
    Env(String),
}

impl Secret {
    /// Reads it now.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("password file {}: {e}", path.display())),
            Secret::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
        }
    }
}

/// How to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://` or `https://`), tried in turn.
    pub endpoints: Vec<String>,
    /// CA bundle that signs the members' certificates (`https://`).
    pub ca_file: Option<PathBuf>,
    /// This client's certificate and key (PEM), for members that require
    /// client certificates.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// User and password, when etcd's authentication is on.
    pub user: Option<(String, Secret)>,
    /// One request's limit (a leader's renewals need it well under the
    /// lease's TTL).
    pub request_timeout: Duration,
}

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The configuration cannot work (a CA file, a URL).
    #[error("etcd configuration: {0}")]
    Config(String),
    /// No endpoint could be reached: nothing was sent.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// A request was sent and no answer came in time: it may or may not
    /// have been applied.
    #[error(
        "etcd {op} at {endpoint}: no answer within {after:?} (it may or may not have been applied)"
    )]
    Timeout {
        /// The call.
        op: &'static str,
        /// Where it went.
        endpoint: String,
        /// The limit.
        after: Duration,
    },
    /// etcd refused or failed the call.
    #[error("etcd {op} at {endpoint}: {message} (gRPC code {code})")]
    Status {
        /// The call.
        op: &'static str,
        /// Where it went.
        endpoint: String,
        /// The gRPC code.
        code: i32,
        /// etcd's message.
        message: String,
    },
    /// The answer is not what the API says it is.
    #[error("etcd {op} at {endpoint}: unreadable answer: {reason}")]
    Decode {
        /// The call.
        op: &'static str,
        /// Where it went.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Authentication failed.
    #[error("etcd authentication as {user}: {reason}")]
    Auth {
        /// The user.
        user: String,
        /// Why.
        reason: String,
    },
}

/// gRPC's "unavailable" (no leader, request timed out inside etcd).
const UNAVAILABLE: i32 = 14;
/// gRPC's "unauthenticated" (the token expired).
const UNAUTHENTICATED: i32 = 16;

/// Whether a call may be sent again elsewhere after an unclear failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and lease renewals: repeating them changes nothing.
    Idempotent,
    /// Writes: sent again only when they surely were not sent.
    Once,
}

/// The client. Cheap to share (`Arc`); calls from several tasks at once.
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    user: Option<(String, Secret)>,
    token: Mutex<Option<String>>,
    timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// A client for `cfg`; connects lazily.
    pub fn new(cfg: &EtcdConfig) -> Result<Etcd, EtcdError> {
        if cfg.endpoints.is_empty() {
            return Err(EtcdError::Config("no endpoint".into()));
        }
        let mut endpoints = Vec::new();
        for e in &cfg.endpoints {
            let url = reqwest::Url::parse(e)
                .map_err(|err| EtcdError::Config(format!("endpoint {e:?}: {err}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(EtcdError::Config(format!(
                    "endpoint {e:?}: an http:// or https:// URL with a host"
                )));
            }
            endpoints.push(e.trim_end_matches('/').to_owned());
        }
        let mut b = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout)
            .pool_max_idle_per_host(2)
            .use_rustls_tls();
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| EtcdError::Config(format!("CA file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| EtcdError::Config(format!("CA file {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(EtcdError::Config(format!(
                    "CA file {}: no certificate in it",
                    ca.display()
                )));
            }
            b = certs
                .into_iter()
                .fold(b, reqwest::ClientBuilder::add_root_certificate);
        }
        if let Some((cert, key)) = &cfg.client_cert {
            let mut pem = std::fs::read(cert).map_err(|e| {
                EtcdError::Config(format!("client certificate {}: {e}", cert.display()))
            })?;
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| EtcdError::Config(format!("client key {}: {e}", key.display())))?,
            );
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                EtcdError::Config(format!(
                    "client certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            b = b.identity(id);
        }
        let http = b
            .build()
            .map_err(|e| EtcdError::Config(format!("HTTP client: {e}")))?;
        Ok(Etcd {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            user: cfg.user.clone(),
            token: Mutex::new(None),
            timeout: cfg.request_timeout,
        })
    }

    /// The endpoints, in the configured order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// One key, if it exists.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
        let r: wire::RangeResponse = self
            .call(
                "range",
                "/v3/kv/range",
                &RangeRequest {
                    key: key.to_vec(),
                    ..RangeRequest::default()
                },
                Retry::Idempotent,
            )
            .await?;
        Ok(r.kvs.into_iter().next())
    }

    /// The keys under `prefix`, in key order (`descending`: reversed), at
    /// most `limit` of them (0: all).
    pub async fn list(
        &self,
        prefix: &[u8],
        limit: i64,
        descending: bool,
    ) -> Result<Vec<KeyValue>, EtcdError> {
        let r: wire::RangeResponse = self
            .call(
                "range",
                "/v3/kv/range",
                &RangeRequest {
                    key: prefix.to_vec(),
                    range_end: wire::prefix_end(prefix),
                    limit,
                    sort_order: Some(if descending { "DESCEND" } else { "ASCEND" }),
                    sort_target: Some("KEY"),
                },
                Retry::Idempotent,
            )
            .await?;
        Ok(r.kvs)
    }

    /// A transaction: sent once (a write).
    pub async fn txn(&self, txn: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.call("txn", "/v3/kv/txn", txn, Retry::Once).await
    }

    /// A new lease of `ttl` seconds: its id and granted TTL.
    pub async fn grant(&self, ttl: i64) -> Result<(i64, i64), EtcdError> {
        let r: wire::LeaseResponse = self
            .call(
                "lease grant",
                "/v3/lease/grant",
                &wire::LeaseGrantRequest { ttl },
                Retry::Once,
            )
            .await?;
        if !r.error.is_empty() || r.id == 0 {
            return Err(EtcdError::Status {
                op: "lease grant",
                endpoint: self.endpoint_now(),
                code: 0,
                message: if r.error.is_empty() {
                    "no lease granted".into()
                } else {
                    r.error
                },
            });
        }
        Ok((r.id, r.ttl))
    }

    /// Renews lease `id`: the seconds it has left from now, 0 when it is
    /// gone (expired or revoked).
    pub async fn keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        let r: wire::KeepAliveStream = self
            .call(
                "lease keep-alive",
                "/v3/lease/keepalive",
                &wire::LeaseId { id },
                Retry::Idempotent,
            )
            .await?;
        if let Some(e) = r.error {
            return Err(EtcdError::Status {
                op: "lease keep-alive",
                endpoint: self.endpoint_now(),
                code: e.code,
                message: if e.message.is_empty() {
                    e.error
                } else {
                    e.message
                },
            });
        }
        Ok(r.result.map_or(0, |l| l.ttl))
    }

    /// Revokes lease `id` (its keys go at once).
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        let _: serde_json::Value = self
            .call(
                "lease revoke",
                "/v3/lease/revoke",
                &wire::LeaseId { id },
                Retry::Idempotent,
            )
            .await?;
        Ok(())
    }

    /// The cluster's members.
    pub async fn members(&self) -> Result<Vec<wire::Member>, EtcdError> {
        let r: wire::MemberListResponse = self
            .call(
                "member list",
                "/v3/cluster/member/list",
                &serde_json::json!({}),
                Retry::Idempotent,
            )
            .await?;
        Ok(r.members)
    }

    fn endpoint_now(&self) -> String {
        let i = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
        self.endpoints[i].clone()
    }

    /// Sends `body` to `path` on the preferred endpoint, then on the others
    /// in turn when one cannot be reached (or, for `Idempotent` calls, when
    /// it does not answer or has no quorum).
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: &'static str,
        path: &str,
        body: &Req,
        retry: Retry,
    ) -> Result<Resp, EtcdError> {
        let body = serde_json::to_vec(body).map_err(|e| EtcdError::Config(e.to_string()))?;
        let first = self.preferred.load(Ordering::Relaxed);
        let n = self.endpoints.len();
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let endpoint = &self.endpoints[i];
            match self.send(op, endpoint, path, &body).await {
                Ok(resp) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(Failure::NotSent(why)) => failures.push(format!("{endpoint}: {why}")),
                Err(Failure::Unclear(e)) if retry == Retry::Idempotent => {
                    failures.push(e.to_string());
                }
                Err(Failure::Unclear(e) | Failure::Final(e)) => return Err(e),
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    /// One request to one endpoint, authenticating first (and once more
    /// when the token has expired).
    async fn send<Resp: DeserializeOwned>(
        &self,
        op: &'static str,
        endpoint: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Resp, Failure> {
        let mut fresh_token = false;
        loop {
            let token = match &self.user {
                None => None,
                Some(_) => Some(self.token(endpoint, fresh_token).await?),
            };
            let mut req = self
                .http
                .post(format!("{endpoint}{path}"))
                .header("content-type", "application/json")
                .body(body.to_vec());
            if let Some(t) = &token {
                req = req.header("authorization", t.as_str());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() => return Err(Failure::NotSent(e.to_string())),
                Err(e) if e.is_timeout() => {
                    return Err(Failure::Unclear(EtcdError::Timeout {
                        op,
                        endpoint: endpoint.to_owned(),
                        after: self.timeout,
                    }))
                }
                Err(e) => {
                    return Err(Failure::Unclear(EtcdError::Status {
                        op,
                        endpoint: endpoint.to_owned(),
                        code: UNAVAILABLE,
                        message: e.to_string(),
                    }))
                }
            };
            let status = resp.status();
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    return Err(Failure::Unclear(EtcdError::Timeout {
                        op,
                        endpoint: format!("{endpoint} ({e})"),
                        after: self.timeout,
                    }))
                }
            };
            if status.is_success() {
                return serde_json::from_slice(&bytes).map_err(|e| {
                    Failure::Final(EtcdError::Decode {
                        op,
                        endpoint: endpoint.to_owned(),
                        reason: e.to_string(),
                    })
                });
            }
            let err: wire::GatewayError =
                serde_json::from_slice(&bytes).unwrap_or_else(|_| wire::GatewayError {
                    code: 0,
                    message: format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    ),
                    error: String::new(),
                });
            if err.code == UNAUTHENTICATED && self.user.is_some() && !fresh_token {
                // The token expired (etcd's simple tokens last minutes):
                // the request was refused, not applied. Once more with a
                // new one.
                fresh_token = true;
                continue;
            }
            let e = EtcdError::Status {
                op,
                endpoint: endpoint.to_owned(),
                code: err.code,
                message: if err.message.is_empty() {
                    err.error
                } else {
                    err.message
                },
            };
            return Err(if err.code == UNAVAILABLE {
                Failure::Unclear(e)
            } else {
                Failure::Final(e)
            });
        }
    }

    /// The auth token: the one in hand, or a new one (`renew`).
    async fn token(&self, endpoint: &str, renew: bool) -> Result<String, Failure> {
        if !renew {
            if let Some(t) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return Ok(t);
            }
        }
        let Some((user, secret)) = &self.user else {
            return Ok(String::new());
        };
        let auth_error = |reason: String| {
            Failure::Final(EtcdError::Auth {
                user: user.clone(),
                reason,
            })
        };
        let password = secret.read().map_err(auth_error)?;
        let body = serde_json::to_vec(&wire::AuthenticateRequest {
            name: user,
            password: &password,
        })
        .map_err(|e| auth_error(e.to_string()))?;
        drop(password);
        let resp = match self
            .http
            .post(format!("{endpoint}/v3/auth/authenticate"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Err(Failure::NotSent(e.to_string())),
            Err(e) => return Err(Failure::Unclear(EtcdError::Unreachable(e.to_string()))),
        };
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::Unclear(EtcdError::Unreachable(e.to_string())))?;
        if !status.is_success() {
            let err: wire::GatewayError = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(auth_error(if err.message.is_empty() {
                format!("HTTP {status}")
            } else {
                err.message
            }));
        }
        let a: wire::AuthenticateResponse =
            serde_json::from_slice(&bytes).map_err(|e| auth_error(e.to_string()))?;
        if a.token.is_empty() {
            return Err(auth_error(
                "no token in the answer (is authentication enabled?)".into(),
            ));
        }
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(a.token.clone());
        Ok(a.token)
    }
}

/// How a request to one endpoint failed.
enum Failure {
    /// Surely not sent: another endpoint may be tried.
    NotSent(String),
    /// Sent, with no clear answer.
    Unclear(EtcdError),
    /// A clear answer that another endpoint would repeat.
    Final(EtcdError),
}

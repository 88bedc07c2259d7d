//! SOAP over HTTP(S) to `/sdk`: envelopes out, bounded XML in, faults typed,
//! the session cookie kept.

use crate::error::VsphereError;
use crate::xml::{self, Element, Limits};
use std::sync::Mutex;

/// The session cookie's name.
const COOKIE: &str = "vmware_soap_session";

/// A managed object reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MoRef {
    /// Its type (`VirtualMachine`, `HostSystem`, ...).
    pub kind: String,
    /// Its id (`vm-42`).
    pub value: String,
}

impl MoRef {
    /// A reference.
    pub fn new(kind: &str, value: &str) -> Self {
        MoRef {
            kind: kind.to_owned(),
            value: value.to_owned(),
        }
    }

    /// From an element like `<obj type="VirtualMachine">vm-42</obj>`.
    pub fn from_element(e: &Element) -> Option<MoRef> {
        let kind = e.attr("type")?;
        (!e.text.is_empty()).then(|| MoRef::new(kind, e.text.trim()))
    }

    /// As the element `<tag type="...">value</tag>`.
    pub fn xml(&self, tag: &str) -> String {
        format!(
            r#"<{tag} type="{}">{}</{tag}>"#,
            xml::escape(&self.kind),
            xml::escape(&self.value)
        )
    }
}

/// The HTTP side of a vCenter connection.
pub struct Soap {
    http: reqwest::Client,
    url: reqwest::Url,
    cookie: Mutex<Option<String>>,
    limits: Limits,
}

impl Soap {
    /// A connection to `url` (`https://vcenter/sdk`) through `http`.
    pub fn new(http: reqwest::Client, url: reqwest::Url, limits: Limits) -> Self {
        Soap {
            http,
            url,
            cookie: Mutex::new(None),
            limits,
        }
    }

    /// Forgets the session cookie.
    pub fn clear_session(&self) {
        *self
            .cookie
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Whether a session cookie is held.
    pub fn has_session(&self) -> bool {
        self.cookie
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// `req` with the session cookie, if one is held.
    fn with_session(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let cookie = self
            .cookie
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match cookie {
            Some(c) => req.header("Cookie", format!("{COOKIE}={c}")),
            None => req,
        }
    }

    /// Calls `method` with its body (the method element's inner XML, in the
    /// `urn:vim25` namespace). Returns the response element (the child of
    /// the SOAP body), or the fault.
    pub async fn call(&self, method: &str, inner: &str) -> Result<Element, VsphereError> {
        let envelope = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soapenv:Body><{method} xmlns="urn:vim25">{inner}</{method}></soapenv:Body></soapenv:Envelope>"#
        );
        let req = self
            .http
            .post(self.url.clone())
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "urn:vim25/6.5")
            .body(envelope);
        let req = self.with_session(req);
        let http_err = |source| VsphereError::http(method, source);
        let mut resp = req.send().await.map_err(http_err)?;
        for v in resp.headers().get_all("set-cookie") {
            if let Some(c) = v.to_str().ok().and_then(session_cookie) {
                *self
                    .cookie
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c);
            }
        }
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        // Read with a cap: a response larger than the limit is refused
        // before it is all in memory.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            if body.len() + chunk.len() > self.limits.max_bytes {
                return Err(VsphereError::Xml {
                    method: method.to_owned(),
                    source: xml::XmlError::TooLarge(format!(
                        "over {} bytes",
                        self.limits.max_bytes
                    )),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !ctype.contains("xml") {
            let snippet: String = String::from_utf8_lossy(&body[..body.len().min(120)])
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            return Err(VsphereError::NotSoap {
                method: method.to_owned(),
                detail: format!("HTTP {status}, {ctype:?}: {snippet:?}"),
            });
        }
        let root = xml::parse(&body, self.limits).map_err(|source| VsphereError::Xml {
            method: method.to_owned(),
            source,
        })?;
        let missing = |what: &str| VsphereError::Missing {
            method: method.to_owned(),
            what: what.to_owned(),
        };
        if root.name != "Envelope" {
            return Err(VsphereError::NotSoap {
                method: method.to_owned(),
                detail: format!("root element <{}>", root.name),
            });
        }
        let body = root.child("Body").ok_or_else(|| missing("a SOAP Body"))?;
        let first = body
            .children
            .first()
            .ok_or_else(|| missing("a response element"))?;
        if first.name == "Fault" {
            return Err(fault(method, first));
        }
        if !status.is_success() {
            return Err(VsphereError::NotSoap {
                method: method.to_owned(),
                detail: format!("HTTP {status} without a fault"),
            });
        }
        Ok(first.clone())
    }
}

impl Soap {
    /// `PUT`s `body` (`len` bytes) to `path` on datastore `ds` of the
    /// datacenter at inventory path `dc`, through vCenter's `/folder`
    /// service, with the session cookie. Returns the HTTP status for the
    /// caller to judge (401: the session is gone).
    pub async fn put_datastore_file(
        &self,
        (dc, ds, path): (&str, &str, &str),
        body: reqwest::Body,
        len: u64,
        timeout: std::time::Duration,
    ) -> Result<reqwest::StatusCode, VsphereError> {
        let method = format!("upload of [{ds}] {path}");
        let mut url = self.url.clone();
        url.set_path("/folder");
        url.path_segments_mut()
            .map_err(|()| VsphereError::Config(format!("vCenter URL {}: no path", self.url)))?
            .extend(path.split('/').filter(|s| !s.is_empty()));
        url.query_pairs_mut()
            .clear()
            .append_pair("dcPath", dc)
            .append_pair("dsName", ds);
        let req = self
            .http
            .put(url)
            .timeout(timeout)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string())
            .body(body);
        let req = self.with_session(req);
        let resp = req
            .send()
            .await
            .map_err(|source| VsphereError::http(&method, source))?;
        Ok(resp.status())
    }
}

/// The session id from a `Set-Cookie` header, if it sets ours.
fn session_cookie(header: &str) -> Option<String> {
    let first = header.split(';').next()?.trim();
    let value = first.strip_prefix(COOKIE)?.strip_prefix('=')?;
    Some(value.trim_matches('"').to_owned()).filter(|v| !v.is_empty())
}

/// A SOAP fault as a typed error: the VIM fault type comes from the detail
/// element's `xsi:type` (or its name without the `Fault` suffix).
fn fault(method: &str, f: &Element) -> VsphereError {
    let message = f.child_text("faultstring").unwrap_or("").trim().to_owned();
    let kind = f
        .child("detail")
        .and_then(|d| d.children.first())
        .map(|d| {
            d.xsi_type()
                .or_else(|| d.attr("type"))
                .map(str::to_owned)
                .unwrap_or_else(|| d.name.strip_suffix("Fault").unwrap_or(&d.name).to_owned())
        })
        .unwrap_or_else(|| "SoapFault".to_owned());
    VsphereError::Fault {
        method: method.to_owned(),
        fault: kind,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        assert_eq!(
            session_cookie(r#"vmware_soap_session="abc-123"; Path=/; HttpOnly"#),
            Some("abc-123".into())
        );
        assert_eq!(session_cookie("other=1; Path=/"), None);
        assert_eq!(session_cookie("vmware_soap_session=; Path=/"), None);
    }

    #[test]
    fn faults_are_typed() {
        let doc = br#"<Envelope><Body><Fault><faultcode>ServerFaultCode</faultcode><faultstring>The session is not authenticated.</faultstring><detail><NotAuthenticatedFault xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="NotAuthenticated"><object type="Folder">group-d1</object></NotAuthenticatedFault></detail></Fault></Body></Envelope>"#;
        let root = xml::parse(doc, Limits::default()).unwrap();
        let f = root.path(&["Body", "Fault"]).unwrap();
        let e = fault("RetrieveProperties", f);
        assert_eq!(e.fault(), Some("NotAuthenticated"));
        assert!(e.to_string().contains("The session is not authenticated."));
        let bare = xml::parse(
            b"<Fault><faultstring>x</faultstring></Fault>",
            Limits::default(),
        )
        .unwrap();
        assert_eq!(fault("M", &bare).fault(), Some("SoapFault"));
    }
}

//! What the drctl tests share: a plain HTTP GET (the tests carry no HTTP
//! client).

use std::io::{Read, Write};

/// GET `path` from `addr` (`HOST:PORT`, or with `http://`): the status
/// code and the body; `None` when nothing answers or the answer is not
/// HTTP.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let addr = addr.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let code = raw.split(' ').nth(1)?.parse().ok()?;
    Some((code, raw.split_once("\r\n\r\n")?.1.to_owned()))
}

//! A small, bounded XML tree for SOAP responses.
//!
//! vCenter answers are parsed into [`Element`]s with hard limits on size,
//! depth and element count; DTDs are refused outright, so no entity is ever
//! expanded or fetched.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Bounds on what a response may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the whole document.
    pub max_bytes: usize,
    /// Nesting depth.
    pub max_depth: usize,
    /// Elements in the document.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 20,
            max_depth: 64,
            max_elements: 4_000_000,
        }
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Over a [`Limits`] bound.
    #[error("XML response too large: {0}")]
    TooLarge(String),
    /// A DOCTYPE: never accepted from a server.
    #[error("XML response carries a DTD, which is not accepted")]
    Dtd,
    /// Not well-formed.
    #[error("malformed XML at byte {pos}: {reason}")]
    Malformed {
        /// Byte offset.
        pos: u64,
        /// What was wrong.
        reason: String,
    },
}

/// One element: local names only (namespaces dropped), attributes, child
/// elements, and its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// Attributes as written (`type`, `xsi:type`), namespace declarations
    /// left out.
    pub attrs: Vec<(String, String)>,
    /// Child elements in order.
    pub children: Vec<Element>,
    /// Concatenated text content.
    pub text: String,
}

impl Element {
    /// Writes its children as XML (its own tag is the caller's: a value
    /// read from one property is sent back under another name). Mixed
    /// content is not kept: an element has children or text.
    pub fn write_children(&self, out: &mut String) {
        for c in &self.children {
            out.push('<');
            out.push_str(&c.name);
            for (k, v) in &c.attrs {
                out.push_str(&format!(" {}=\"{}\"", k, escape(v)));
            }
            out.push('>');
            if c.children.is_empty() {
                out.push_str(&escape(&c.text));
            } else {
                c.write_children(out);
            }
            out.push_str("</");
            out.push_str(&c.name);
            out.push('>');
        }
    }

    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// An attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The XML Schema instance type (`xsi:type`, whatever the prefix), with
    /// its own prefix dropped (`xsd:string` → `string`).
    pub fn xsi_type(&self) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.ends_with(":type"))
            .map(|(_, v)| v.rsplit(':').next().unwrap_or(v))
    }

    /// The text of a child, if present.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The text of a descendant by path of local names.
    pub fn path(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, name| e.child(name))
    }
}

fn malformed(reader: &Reader<&[u8]>, reason: impl ToString) -> XmlError {
    XmlError::Malformed {
        pos: reader.buffer_position(),
        reason: reason.to_string(),
    }
}

/// Parses a whole document into its root element.
pub fn parse(bytes: &[u8], limits: Limits) -> Result<Element, XmlError> {
    if bytes.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(format!(
            "{} bytes (limit {})",
            bytes.len(),
            limits.max_bytes
        )));
    }
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let ev = reader.read_event().map_err(|e| malformed(&reader, e))?;
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                count += 1;
                if count > limits.max_elements {
                    return Err(XmlError::TooLarge(format!(
                        "more than {} elements",
                        limits.max_elements
                    )));
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooLarge(format!(
                        "nesting deeper than {}",
                        limits.max_depth
                    )));
                }
                if root.is_some() {
                    return Err(malformed(&reader, "content after the root element"));
                }
                let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(|e| malformed(&reader, e))?;
                    let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                    if key == "xmlns" || key.starts_with("xmlns:") {
                        continue;
                    }
                    let value = a
                        .unescape_value()
                        .map_err(|e| malformed(&reader, e))?
                        .into_owned();
                    attrs.push((key, value));
                }
                let el = Element {
                    name,
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                };
                if matches!(ev, Event::Empty(_)) {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| malformed(&reader, "unbalanced end tag"))?;
                close(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text
                        .push_str(&t.unescape().map_err(|e| malformed(&reader, e))?);
                } else if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(malformed(&reader, "text outside the root element"));
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&c));
                }
            }
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed(
            &reader,
            "document ends inside an element (truncated?)",
        ));
    }
    root.ok_or_else(|| malformed(&reader, "no root element"))
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Escapes text for an XML element or attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaced_soap() {
        let doc = br#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="s" xmlns:xsi="i"><soapenv:Body><R xmlns="urn:vim25"><returnval type="Folder">group-d1</returnval><val xsi:type="xsd:string">a &amp; b</val><e/></R></soapenv:Body></soapenv:Envelope>"#;
        let root = parse(doc, Limits::default()).unwrap();
        assert_eq!(root.name, "Envelope");
        let r = root.path(&["Body", "R"]).unwrap();
        assert_eq!(r.child("returnval").unwrap().attr("type"), Some("Folder"));
        assert_eq!(r.child_text("returnval"), Some("group-d1"));
        assert_eq!(r.child("val").unwrap().xsi_type(), Some("string"));
        assert_eq!(
            r.child("val").unwrap().attr("type"),
            None,
            "xsi:type is not the moref type"
        );
        assert_eq!(r.child_text("val"), Some("a & b"));
        assert!(r.child("e").is_some());
    }

    #[test]
    fn refuses_dtds_and_entities() {
        let doc = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>"#;
        assert_eq!(parse(doc, Limits::default()), Err(XmlError::Dtd));
    }

    #[test]
    fn refuses_truncated_and_oversized_documents() {
        assert!(matches!(
            parse(b"<a><b>text</b>", Limits::default()),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"<a></b>", Limits::default()),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"", Limits::default()),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"<html><body>Bad gateway", Limits::default()),
            Err(XmlError::Malformed { .. })
        ));
        let small = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse(b"<a>0123456789</a>", small),
            Err(XmlError::TooLarge(_))
        ));
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(matches!(
            parse(deep.as_bytes(), Limits::default()),
            Err(XmlError::TooLarge(_))
        ));
        let many = format!("<a>{}</a>", "<b/>".repeat(50));
        let few = Limits {
            max_elements: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse(many.as_bytes(), few),
            Err(XmlError::TooLarge(_))
        ));
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }
}

//! What vmdr reads from a domain's XML: its size (vCPUs, memory), its
//! address from vmdr's metadata, its disks, and whether it has a guest
//! agent channel. Read with a streaming parser, no DTD, a bounded depth;
//! anything vmdr does not need is skipped.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::net::IpAddr;

/// The namespace of vmdr's element in a domain's `<metadata>`:
/// `<vmdr:vm xmlns:vmdr="https://vmdr.dev/xmlns/libvirt/1"><vmdr:ip>ADDR</vmdr:ip></vmdr:vm>`.
pub const METADATA_NS: &str = "https://vmdr.dev/xmlns/libvirt/1";

const MAX_DEPTH: usize = 64;

/// A domain as its XML describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainXml {
    /// `<name>`.
    pub name: String,
    /// `<uuid>`.
    pub uuid: String,
    /// `<memory>`, MiB.
    pub memory_mb: u64,
    /// `<vcpu>`.
    pub vcpus: u32,
    /// The address in vmdr's metadata, if any.
    pub ip: Option<IpAddr>,
    /// The sources of its disks (`device='disk'`), in order: files or
    /// block devices.
    pub disks: Vec<String>,
    /// Its network interfaces.
    pub interfaces: usize,
    /// It has a QEMU guest agent channel.
    pub agent: bool,
}

fn attr(e: &BytesStart<'_>, key: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn local(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Whether an element declares vmdr's namespace for its own prefix.
fn is_vmdr_ns(e: &BytesStart<'_>) -> bool {
    let prefix = e.name().prefix().map(|p| p.as_ref().to_vec());
    e.attributes().flatten().any(|a| {
        let k = a.key.as_ref();
        let declares = match &prefix {
            Some(p) => k.strip_prefix(b"xmlns:") == Some(p.as_slice()),
            None => k == b"xmlns",
        };
        declares && a.value.as_ref() == METADATA_NS.as_bytes()
    })
}

fn to_mib(value: &str, unit: Option<&str>) -> Result<u64, String> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("memory {value:?} is not a number"))?;
    let bytes_per = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "k" | "KiB" => 1 << 10,
        "KB" => 1000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        "T" | "TiB" => 1 << 40,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("memory unit {other:?} is unknown")),
    };
    Ok(n.saturating_mul(bytes_per) >> 20)
}

impl DomainXml {
    /// Reads a domain's XML; the error says what is wrong.
    pub fn parse(xml: &str) -> Result<DomainXml, String> {
        let mut r = Reader::from_str(xml);
        r.config_mut().expand_empty_elements = true;
        let mut d = DomainXml::default();
        let mut path: Vec<Vec<u8>> = Vec::new();
        let mut memory_unit: Option<String> = None;
        let mut in_vmdr = false;
        let mut disk_is_disk = false;
        let mut seen_domain = false;
        loop {
            let ev = r
                .read_event()
                .map_err(|e| format!("malformed at byte {}: {e}", r.buffer_position()))?;
            match ev {
                Event::DocType(_) => return Err("a DTD is not accepted".into()),
                Event::Start(e) => {
                    let name = local(e.name().as_ref()).to_vec();
                    let depth = path.len();
                    if depth >= MAX_DEPTH {
                        return Err(format!("nested deeper than {MAX_DEPTH}"));
                    }
                    let parent = path.last().map(Vec::as_slice);
                    match (depth, parent, name.as_slice()) {
                        (0, _, b"domain") => seen_domain = true,
                        (0, _, other) => {
                            return Err(format!(
                                "root element is <{}>, not <domain>",
                                String::from_utf8_lossy(other)
                            ))
                        }
                        (1, _, b"memory") => memory_unit = attr(&e, b"unit"),
                        (2, Some(b"metadata"), b"vm") => in_vmdr = is_vmdr_ns(&e),
                        (2, Some(b"devices"), b"disk") => {
                            disk_is_disk =
                                attr(&e, b"device").as_deref().unwrap_or("disk") == "disk"
                        }
                        (2, Some(b"devices"), b"interface") => d.interfaces += 1,
                        (3, Some(b"disk"), b"source") if disk_is_disk => {
                            if let Some(s) = attr(&e, b"file").or_else(|| attr(&e, b"dev")) {
                                d.disks.push(s);
                            }
                        }
                        (3, Some(b"channel"), b"target")
                            if attr(&e, b"name").as_deref() == Some("org.qemu.guest_agent.0") =>
                        {
                            d.agent = true;
                        }
                        _ => {}
                    }
                    path.push(name);
                }
                Event::End(_) => {
                    if path.len() == 3 && path[1] == b"metadata" && path[2] == b"vm" {
                        in_vmdr = false;
                    }
                    path.pop();
                }
                Event::Text(t) => {
                    let text = t
                        .unescape()
                        .map_err(|e| format!("bad text: {e}"))?
                        .trim()
                        .to_owned();
                    match path
                        .iter()
                        .map(Vec::as_slice)
                        .collect::<Vec<_>>()
                        .as_slice()
                    {
                        [b"domain", b"name"] => d.name = text,
                        [b"domain", b"uuid"] => d.uuid = text,
                        [b"domain", b"memory"] => {
                            d.memory_mb = to_mib(&text, memory_unit.as_deref())?
                        }
                        [b"domain", b"vcpu"] => {
                            d.vcpus = text
                                .parse()
                                .map_err(|_| format!("vcpu {text:?} is not a number"))?
                        }
                        [b"domain", b"metadata", b"vm", b"ip"] if in_vmdr => {
                            d.ip = Some(text.parse().map_err(|_| {
                                format!("vmdr metadata ip {text:?} is not an address")
                            })?)
                        }
                        _ => {}
                    }
                }
                Event::Eof => {
                    if let Some(open) = path.last() {
                        return Err(format!(
                            "malformed: <{}> is not closed",
                            String::from_utf8_lossy(open)
                        ));
                    }
                    break;
                }
                _ => {}
            }
        }
        if !seen_domain {
            return Err("no <domain> element".into());
        }
        if d.name.is_empty() {
            return Err("no <name>".into());
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = r#"<domain type='qemu'>
  <name>g1</name>
  <uuid>e6dadd68-bbb6-4e2d-82ba-1b719b9efde5</uuid>
  <metadata>
    <vmdr:vm xmlns:vmdr="https://vmdr.dev/xmlns/libvirt/1">
      <vmdr:ip>198.19.0.101</vmdr:ip>
    </vmdr:vm>
    <other:vm xmlns:other="https://example.invalid/x"><other:ip>10.9.9.9</other:ip></other:vm>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <vcpu placement='static'>2</vcpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/lab/shared/g1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><source file='/iso/x.iso'/></disk>
    <disk type='block' device='disk'><source dev='/dev/vg/g1-data'/></disk>
    <interface type='bridge'><source bridge='br0'/></interface>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>"#;

    #[test]
    fn the_lab_guest_reads_as_defined() {
        let d = DomainXml::parse(LAB).expect("parses");
        assert_eq!(d.name, "g1");
        assert_eq!(d.uuid, "e6dadd68-bbb6-4e2d-82ba-1b719b9efde5");
        assert_eq!(d.memory_mb, 128);
        assert_eq!(d.vcpus, 2);
        assert_eq!(d.ip, Some("198.19.0.101".parse().expect("ip")));
        assert_eq!(d.disks, vec!["/lab/shared/g1.qcow2", "/dev/vg/g1-data"]);
        assert_eq!(d.interfaces, 1);
        assert!(d.agent);
    }

    #[test]
    fn bad_documents_say_why() {
        for (xml, says) in [
            ("<vm/>", "root element"),
            ("<domain><name>x</name><memory unit='parsec'>1</memory></domain>", "unit"),
            ("<domain><name>x</name><vcpu>many</vcpu></domain>", "vcpu"),
            ("<!DOCTYPE d [<!ENTITY e 'x'>]><domain/>", "DTD"),
            ("<domain><memory>1</memory></domain>", "no <name>"),
            ("<domain><name>x</name>", "malformed"),
            (
                "<domain><name>x</name><metadata><v:vm xmlns:v='https://vmdr.dev/xmlns/libvirt/1'><v:ip>nope</v:ip></v:vm></metadata></domain>",
                "not an address",
            ),
        ] {
            let e = DomainXml::parse(xml).expect_err(xml);
            assert!(e.contains(says), "{xml}: {e}");
        }
    }
}

/// What vmdr reads from a snapshot's XML.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotXml {
    /// `<name>`: libvirt's identifier of the snapshot.
    pub name: String,
    /// `<description>`: the label vmdr gave it, if any.
    pub description: Option<String>,
    /// `<creationTime>`, seconds since the Unix epoch.
    pub created_s: u64,
}

impl SnapshotXml {
    /// Reads the top of a snapshot's XML (the domain inside is skipped).
    pub fn parse(xml: &str) -> Result<SnapshotXml, String> {
        let mut r = Reader::from_str(xml);
        r.config_mut().expand_empty_elements = true;
        let mut s = SnapshotXml::default();
        let mut depth = 0usize;
        let mut field: Option<Vec<u8>> = None;
        loop {
            match r
                .read_event()
                .map_err(|e| format!("malformed at byte {}: {e}", r.buffer_position()))?
            {
                Event::DocType(_) => return Err("a DTD is not accepted".into()),
                Event::Start(e) => {
                    if depth == 0 && e.name().as_ref() != b"domainsnapshot" {
                        return Err("root element is not <domainsnapshot>".into());
                    }
                    if depth == 1 {
                        field = Some(e.name().as_ref().to_vec());
                    }
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(format!("nested deeper than {MAX_DEPTH}"));
                    }
                }
                Event::End(_) => {
                    depth = depth.saturating_sub(1);
                    if depth == 1 {
                        field = None;
                    }
                }
                Event::Text(t) if depth == 2 => {
                    let text = t
                        .unescape()
                        .map_err(|e| format!("bad text: {e}"))?
                        .trim()
                        .to_owned();
                    match field.as_deref() {
                        Some(b"name") => s.name = text,
                        Some(b"description") => s.description = Some(text),
                        Some(b"creationTime") => {
                            s.created_s = text
                                .parse()
                                .map_err(|_| format!("creationTime {text:?} is not a number"))?
                        }
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if s.name.is_empty() {
            return Err("no <name>".into());
        }
        Ok(s)
    }

    /// The XML that creates a snapshot named `name`, labelled `label`.
    pub fn create(name: &str, label: &str) -> String {
        format!(
            "<domainsnapshot><name>{}</name><description>{}</description></domainsnapshot>",
            escape(name),
            escape(label)
        )
    }
}

/// Escapes text for an XML element.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_as_created() {
        let xml = "<domainsnapshot><name>vmdr-1</name><description>rot &lt;0&gt;</description>\
            <creationTime>1796112004</creationTime><domain><name>g1</name>\
            <description>not this</description></domain></domainsnapshot>";
        let s = SnapshotXml::parse(xml).expect("parses");
        assert_eq!(s.name, "vmdr-1");
        assert_eq!(s.description.as_deref(), Some("rot <0>"));
        assert_eq!(s.created_s, 1_796_112_004);
        let made = SnapshotXml::parse(&SnapshotXml::create("a&b", "x<y")).expect("parses");
        assert_eq!(
            (made.name.as_str(), made.description.as_deref()),
            ("a&b", Some("x<y"))
        );
        assert!(SnapshotXml::parse("<domain/>").is_err());
    }
}

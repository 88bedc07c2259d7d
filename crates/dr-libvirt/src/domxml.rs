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
    /// Each disk's target device (`vda`), in the same order.
    pub targets: Vec<String>,
    /// Each disk's image format (its driver's `type`: `qcow2`, `raw`; empty
    /// when not given), in the same order.
    pub formats: Vec<String>,
    /// Its network interfaces.
    pub interfaces: usize,
    /// It has a QEMU guest agent channel.
    pub agent: bool,
    /// It is a recovery drill's copy of this VM (vmdr's marker in its
    /// metadata): only such a domain is ever removed as a copy.
    pub drill_of: Option<String>,
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
        // A disk's driver usually comes before its source.
        let mut disk_format: Option<String> = None;
        let mut disk_sourced = false;
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
                        (2, Some(b"metadata"), b"vm" | b"drill") => in_vmdr = is_vmdr_ns(&e),
                        (2, Some(b"devices"), b"disk") => {
                            disk_is_disk =
                                attr(&e, b"device").as_deref().unwrap_or("disk") == "disk";
                            disk_format = None;
                            disk_sourced = false;
                        }
                        (3, Some(b"disk"), b"driver") if disk_is_disk => {
                            let t = attr(&e, b"type").unwrap_or_default();
                            match (disk_sourced, d.formats.last_mut()) {
                                (true, Some(f)) => *f = t,
                                _ => disk_format = Some(t),
                            }
                        }
                        (2, Some(b"devices"), b"interface") => d.interfaces += 1,
                        (3, Some(b"disk"), b"source") if disk_is_disk => {
                            if let Some(s) = attr(&e, b"file").or_else(|| attr(&e, b"dev")) {
                                d.disks.push(s);
                                d.targets.push(String::new());
                                d.formats.push(disk_format.take().unwrap_or_default());
                                disk_sourced = true;
                            }
                        }
                        (3, Some(b"disk"), b"target") if disk_is_disk => {
                            // A disk's target follows its source.
                            if let (Some(t), Some(dev)) = (d.targets.last_mut(), attr(&e, b"dev")) {
                                if t.is_empty() {
                                    *t = dev;
                                }
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
                    if path.len() == 3
                        && path[1] == b"metadata"
                        && (path[2] == b"vm" || path[2] == b"drill")
                    {
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
                        [b"domain", b"metadata", b"drill"] if in_vmdr => d.drill_of = Some(text),
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
        assert_eq!(d.targets, vec!["vda", ""]);
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

/// `xml` (a domain's definition) with its disks (`device='disk'`, in
/// order) on `images` instead: each one a file, its driver's format set to
/// the image's. Everything else (name, UUID, MACs, metadata) stays: it is
/// the same VM, brought up from other disks. Every disk must get one.
pub fn with_disk_images(xml: &str, images: &[(String, &str)]) -> Result<String, String> {
    // Disks without a driver element get one, so the format is stated.
    let driverless: Vec<bool> = DomainXml::parse(xml)?
        .formats
        .iter()
        .map(String::is_empty)
        .collect();
    let mut r = Reader::from_str(xml);
    let mut w = quick_xml::Writer::new(Vec::new());
    let mut path: Vec<Vec<u8>> = Vec::new();
    // The image of the disk being copied through, if it is one.
    let mut current: Option<usize> = None;
    let mut next = 0usize;
    let write = |w: &mut quick_xml::Writer<Vec<u8>>, e: Event<'_>| {
        w.write_event(e).map_err(|e| format!("cannot write: {e}"))
    };
    let attrs = |e: &BytesStart<'_>| -> Result<Vec<(String, String)>, String> {
        e.attributes()
            .flatten()
            .map(|a| {
                let k = std::str::from_utf8(a.key.as_ref())
                    .map_err(|_| "attribute name is not UTF-8".to_owned())?
                    .to_owned();
                let v = a
                    .unescape_value()
                    .map_err(|e| format!("bad attribute: {e}"))?
                    .into_owned();
                Ok((k, v))
            })
            .collect()
    };
    let rebuilt = |name: &str, kv: Vec<(String, String)>| {
        let mut s = BytesStart::new(name.to_owned());
        for (k, v) in &kv {
            s.push_attribute((k.as_str(), v.as_str()));
        }
        s
    };
    loop {
        let ev = r
            .read_event()
            .map_err(|e| format!("malformed at byte {}: {e}", r.buffer_position()))?;
        match ev {
            Event::DocType(_) => return Err("a DTD is not accepted".into()),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let name = local(e.name().as_ref()).to_vec();
                let depth = path.len();
                let parent = path.last().map(Vec::as_slice);
                if depth == 3 && current.is_some() && name == b"backingStore" {
                    // The old disk's backing chain: not the image's.
                    if !empty {
                        skip_element(&mut r)?;
                    }
                    continue;
                }
                let out = match (depth, parent, name.as_slice(), current) {
                    (2, Some(b"devices"), b"disk", _) => {
                        let mut kv = attrs(e)?;
                        let is_disk = kv
                            .iter()
                            .find(|(k, _)| k == "device")
                            .is_none_or(|(_, v)| v == "disk");
                        if is_disk {
                            if next >= images.len() {
                                return Err(format!(
                                    "the definition has more disks than the {} images given",
                                    images.len()
                                ));
                            }
                            current = Some(next);
                            next += 1;
                            kv.retain(|(k, _)| k != "type");
                            kv.insert(0, ("type".into(), "file".into()));
                        }
                        Event::Start(rebuilt("disk", kv))
                    }
                    (3, Some(b"disk"), b"source", Some(i)) => Event::Empty(rebuilt(
                        "source",
                        vec![("file".into(), images[i].0.clone())],
                    )),
                    (3, Some(b"disk"), b"driver", Some(i)) => {
                        let mut kv = attrs(e)?;
                        kv.retain(|(k, _)| k != "type");
                        kv.push(("type".into(), images[i].1.to_owned()));
                        Event::Empty(rebuilt("driver", kv))
                    }
                    _ => ev.clone(),
                };
                match out {
                    // A disk element copied as a start needs its end; an
                    // empty one is closed at once below.
                    Event::Start(s) if empty => {
                        write(&mut w, Event::Empty(s))?;
                        if depth == 2 {
                            current = None;
                        }
                    }
                    Event::Empty(s) if !empty => {
                        // A replaced source or driver with children: the
                        // children (backing stores, seclabels) are dropped
                        // with it, they describe the old disk.
                        write(&mut w, Event::Empty(s))?;
                        skip_element(&mut r)?;
                    }
                    other => {
                        write(&mut w, other)?;
                        if !empty {
                            path.push(name);
                        }
                        if let (2, Some(i)) = (depth, current) {
                            if driverless.get(i).copied().unwrap_or(false) {
                                let d = BytesStart::new("driver")
                                    .with_attributes([("name", "qemu"), ("type", images[i].1)]);
                                write(&mut w, Event::Empty(d))?;
                            }
                        }
                    }
                }
            }
            Event::End(e) => {
                if path.len() == 3 && path[2] == b"disk" {
                    current = None;
                }
                path.pop();
                write(&mut w, Event::End(e))?;
            }
            Event::Eof => break,
            other => write(&mut w, other)?,
        }
    }
    if !path.is_empty() {
        return Err("malformed: an element is not closed".into());
    }
    if next != images.len() {
        return Err(format!(
            "{} images for a definition with {next} disks",
            images.len()
        ));
    }
    String::from_utf8(w.into_inner()).map_err(|_| "the result is not UTF-8".into())
}

/// Reads past the end of the element whose start was just read.
fn skip_element(r: &mut Reader<&[u8]>) -> Result<(), String> {
    let mut depth = 1usize;
    while depth > 0 {
        match r
            .read_event()
            .map_err(|e| format!("malformed at byte {}: {e}", r.buffer_position()))?
        {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth -= 1,
            Event::Eof => return Err("malformed: cut off".into()),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn a_definition_on_other_images_keeps_the_vm_and_swaps_each_disk() {
        let xml = "<domain type='kvm'><name>db-1</name><uuid>u-1</uuid><devices>\
            <disk type='block' device='disk'><driver name='qemu' type='qcow2' cache='none'/>\
            <source dev='/dev/vg/db'><seclabel model='dac' relabel='no'/></source>\
            <backingStore type='file'><format type='qcow2'/><source file='/base.qcow2'/></backingStore>\
            <target dev='vda' bus='virtio'/></disk>\
            <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda'/></disk>\
            <disk type='file' device='disk'><source file='/img/db-2.qcow2'/><target dev='vdb'/></disk>\
            <interface type='bridge'><mac address='52:54:00:01:02:03'/></interface></devices></domain>";
        let out = with_disk_images(
            xml,
            &[
                ("/r/db-1-disk0.img".into(), "raw"),
                ("/r/db-1-disk1.img".into(), "raw"),
            ],
        )
        .expect("rewritten");
        let d = DomainXml::parse(&out).expect("parses");
        assert_eq!(d.name, "db-1");
        assert_eq!(d.uuid, "u-1");
        assert_eq!(d.disks, vec!["/r/db-1-disk0.img", "/r/db-1-disk1.img"]);
        assert_eq!(d.targets, vec!["vda", "vdb"]);
        assert_eq!(d.formats, vec!["raw", "raw"]);
        assert!(
            out.contains("cache=\"none\"") && out.contains("52:54:00:01:02:03"),
            "{out}"
        );
        assert!(out.contains("/iso/x.iso"), "the cdrom is untouched: {out}");
        assert!(
            !out.contains("backingStore")
                && !out.contains("/dev/vg/db")
                && !out.contains("seclabel"),
            "{out}"
        );
        assert!(
            with_disk_images(xml, &[("/a".into(), "raw")]).is_err(),
            "too few images"
        );
        assert!(with_disk_images(
            xml,
            &[
                ("/a".into(), "raw"),
                ("/b".into(), "raw"),
                ("/c".into(), "raw")
            ]
        )
        .is_err());
    }
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

/// The definition of a recovery drill's copy of a domain: named `copy`,
/// without the original's UUID (libvirt gives it one), its disks' sources
/// replaced as `disks` maps them (original → copy), every network
/// interface's link down and its MAC address dropped (a new one is made),
/// and vmdr's address metadata dropped: the copy shares nothing with the
/// original that could reach the network or be mistaken for it. Every
/// disk of the domain must be in `disks`.
pub fn drill_copy(
    xml: &str,
    copy: &str,
    of: &str,
    disks: &[(String, String)],
) -> Result<String, String> {
    use quick_xml::events::{BytesEnd, BytesText};
    let marker = |w: &mut quick_xml::Writer<Vec<u8>>| -> Result<(), String> {
        let start = BytesStart::new("vmdr:drill").with_attributes([("xmlns:vmdr", METADATA_NS)]);
        w.write_event(Event::Start(start))
            .and_then(|_| w.write_event(Event::Text(BytesText::new(of))))
            .and_then(|_| w.write_event(Event::End(BytesEnd::new("vmdr:drill"))))
            .map_err(|e| format!("cannot write: {e}"))
    };
    let mut metadata_seen = false;
    let mut r = Reader::from_str(xml);
    let mut w = quick_xml::Writer::new(Vec::new());
    let mut path: Vec<Vec<u8>> = Vec::new();
    // Depth at which an element being dropped started.
    let mut skipping: Option<usize> = None;
    let mut replaced = 0usize;
    let write = |w: &mut quick_xml::Writer<Vec<u8>>, e: Event<'_>| {
        w.write_event(e).map_err(|e| format!("cannot write: {e}"))
    };
    loop {
        let ev = r
            .read_event()
            .map_err(|e| format!("malformed at byte {}: {e}", r.buffer_position()))?;
        let depth = path.len();
        if let Some(d) = skipping {
            match &ev {
                Event::Start(_) => path.push(Vec::new()),
                Event::End(_) => {
                    path.pop();
                    if path.len() == d {
                        skipping = None;
                    }
                }
                Event::Eof => return Err("malformed: cut off".into()),
                _ => {}
            }
            continue;
        }
        match ev {
            Event::DocType(_) => return Err("a DTD is not accepted".into()),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = local(e.name().as_ref()).to_vec();
                let parent = path.last().map(Vec::as_slice);
                let empty = matches!(ev, Event::Empty(_));
                let drop = match (depth, parent, name.as_slice()) {
                    (1, _, b"uuid") => true,
                    (2, Some(b"metadata"), b"vm") => is_vmdr_ns(e),
                    (3, Some(b"interface"), b"mac" | b"link") => true,
                    _ => false,
                };
                if drop {
                    if !empty {
                        skipping = Some(depth);
                        path.push(name);
                    }
                    continue;
                }
                let in_disk = depth == 3 && parent == Some(b"disk") && name == b"source";
                let out = if in_disk {
                    let mut s = BytesStart::new("source");
                    for a in e.attributes().flatten() {
                        let key = a.key.as_ref();
                        let value = a
                            .unescape_value()
                            .map_err(|e| format!("bad attribute: {e}"))?;
                        if key == b"file" || key == b"dev" {
                            let (_, to) = disks
                                .iter()
                                .find(|(from, _)| *from == value)
                                .ok_or_else(|| format!("disk {value} has no copy"))?;
                            s.push_attribute((
                                std::str::from_utf8(key).unwrap_or("file"),
                                to.as_str(),
                            ));
                            replaced += 1;
                        } else {
                            s.push_attribute((
                                std::str::from_utf8(key)
                                    .map_err(|_| "attribute name is not UTF-8")?,
                                value.as_ref(),
                            ));
                        }
                    }
                    if empty {
                        Event::Empty(s)
                    } else {
                        Event::Start(s)
                    }
                } else {
                    ev.clone()
                };
                if depth == 1 && name == b"metadata" {
                    metadata_seen = true;
                    if empty {
                        write(&mut w, Event::Start(BytesStart::new("metadata")))?;
                        marker(&mut w)?;
                        write(&mut w, Event::End(BytesEnd::new("metadata")))?;
                        continue;
                    }
                    write(&mut w, out)?;
                    marker(&mut w)?;
                    path.push(name);
                    continue;
                }
                write(&mut w, out)?;
                if depth == 2 && parent == Some(b"devices") && name == b"interface" && !empty {
                    write(
                        &mut w,
                        Event::Empty(BytesStart::new("link").with_attributes([("state", "down")])),
                    )?;
                }
                if !empty {
                    path.push(name);
                }
            }
            Event::End(e) => {
                path.pop();
                if path.is_empty() && !metadata_seen {
                    write(&mut w, Event::Start(BytesStart::new("metadata")))?;
                    marker(&mut w)?;
                    write(&mut w, Event::End(BytesEnd::new("metadata")))?;
                }
                write(&mut w, Event::End(e))?;
            }
            Event::Text(t) => {
                if path.len() == 2 && path[1] == b"name" {
                    write(&mut w, Event::Text(BytesText::new(copy)))?;
                } else {
                    write(&mut w, Event::Text(t))?;
                }
            }
            Event::Eof => break,
            other => write(&mut w, other)?,
        }
    }
    if !path.is_empty() {
        return Err("malformed: an element is not closed".into());
    }
    if replaced < disks.len() {
        return Err(format!(
            "{} of {} disks were not found in the definition",
            disks.len() - replaced,
            disks.len()
        ));
    }
    String::from_utf8(w.into_inner()).map_err(|_| "the copy is not UTF-8".into())
}

#[cfg(test)]
mod drill_tests {
    use super::*;

    #[test]
    fn a_drill_copy_shares_no_identity_disk_or_network_with_its_original() {
        let xml = r#"<domain type='qemu'>
  <name>g1</name>
  <uuid>e6dadd68-bbb6-4e2d-82ba-1b719b9efde5</uuid>
  <metadata><vmdr:vm xmlns:vmdr="https://vmdr.dev/xmlns/libvirt/1"><vmdr:ip>198.19.0.101</vmdr:ip></vmdr:vm></metadata>
  <memory unit='KiB'>131072</memory>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/s/g1.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <interface type='bridge'><mac address='52:54:00:6e:fb:f6'/><source bridge='br0'/><link state='up'/><model type='virtio'/></interface>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>"#;
        let out = drill_copy(
            xml,
            "g1-vmdr-drill-1",
            "g1",
            &[("/s/g1.qcow2".into(), "/s/g1-vmdr-drill-1-vda.qcow2".into())],
        )
        .expect("copy");
        let d = DomainXml::parse(&out).expect("the copy parses");
        assert_eq!(d.drill_of.as_deref(), Some("g1"), "{out}");
        assert_eq!(DomainXml::parse(xml).expect("original").drill_of, None);
        let bare = "<domain><name>g2</name><devices><disk type='file' device='disk'><source file='/s/g2'/><target dev='vda'/></disk></devices></domain>";
        let copied = drill_copy(
            bare,
            "c2",
            "g2",
            &[("/s/g2".into(), "/s/c2-vda.qcow2".into())],
        )
        .expect("copy");
        assert_eq!(
            DomainXml::parse(&copied)
                .expect("parses")
                .drill_of
                .as_deref(),
            Some("g2"),
            "{copied}"
        );
        assert_eq!(d.name, "g1-vmdr-drill-1");
        assert!(d.uuid.is_empty(), "{out}");
        assert_eq!(d.ip, None);
        assert_eq!(d.disks, vec!["/s/g1-vmdr-drill-1-vda.qcow2"]);
        assert!(d.agent);
        assert!(!out.contains("52:54:00:6e:fb:f6"), "{out}");
        assert!(out.contains(r#"<link state="down"/>"#), "{out}");
        assert!(!out.contains("state='up'"), "{out}");
        assert!(out.contains("<source bridge='br0'/>"), "{out}");
        let missing = drill_copy(xml, "c", "g1", &[("/other.qcow2".into(), "/x".into())]);
        assert!(missing.is_err());
        assert!(
            drill_copy(xml, "c", "g1", &[]).is_err(),
            "a disk without a copy"
        );
    }
}

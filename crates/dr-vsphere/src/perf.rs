//! Vitals beyond the quick stats: disk I/O and network rates from the
//! performance manager (`QueryPerf`), one call for every running VM and
//! connected host, refreshed at vSphere's real-time sampling interval.

use crate::error::VsphereError;
use crate::inventory;
use crate::session::Session;
use crate::soap::MoRef;
use std::collections::HashMap;

/// vSphere's real-time statistics interval, seconds.
pub const INTERVAL_SECS: u32 = 20;

/// The counter ids of `disk.usage.average` and `net.usage.average` (KB/s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Disk usage.
    pub disk: i64,
    /// Network usage.
    pub net: i64,
}

/// Looks the counters up in the performance manager's catalogue.
pub async fn counters(s: &Session, perf: &MoRef) -> Result<Counters, VsphereError> {
    let o = inventory::retrieve_one(s, perf, &["perfCounter"]).await?;
    let mut disk = None;
    let mut net = None;
    if let Some(list) = o.props.get("perfCounter") {
        for c in &list.children {
            let name = (
                c.path(&["groupInfo", "key"]).map(|e| e.text.trim()),
                c.path(&["nameInfo", "key"]).map(|e| e.text.trim()),
                c.child_text("rollupType").map(str::trim),
            );
            let key = c
                .child_text("key")
                .and_then(|k| k.trim().parse::<i64>().ok());
            match name {
                (Some("disk"), Some("usage"), Some("average")) => disk = disk.or(key),
                (Some("net"), Some("usage"), Some("average")) => net = net.or(key),
                _ => {}
            }
        }
    }
    match (disk, net) {
        (Some(disk), Some(net)) => Ok(Counters { disk, net }),
        _ => Err(VsphereError::Missing {
            method: "RetrievePropertiesEx".into(),
            what: "the disk.usage and net.usage counters".into(),
        }),
    }
}

/// The latest disk and network rates (KB/s) of each entity.
pub async fn query(
    s: &Session,
    perf: &MoRef,
    c: Counters,
    entities: &[MoRef],
) -> Result<HashMap<MoRef, (u32, u32)>, VsphereError> {
    if entities.is_empty() {
        return Ok(HashMap::new());
    }
    let metric =
        |id: i64| format!("<metricId><counterId>{id}</counterId><instance></instance></metricId>");
    let specs: String = entities
        .iter()
        .map(|e| format!("<querySpec>{}<maxSample>1</maxSample>{}{}<intervalId>{INTERVAL_SECS}</intervalId></querySpec>", e.xml("entity"), metric(c.disk), metric(c.net)))
        .collect();
    let r = s
        .invoke("QueryPerf", &format!("{}{specs}", perf.xml("_this")))
        .await?;
    let mut out = HashMap::new();
    for m in r.children_named("returnval") {
        let Some(entity) = m.child("entity").and_then(MoRef::from_element) else {
            continue;
        };
        let mut disk = 0;
        let mut net = 0;
        for series in m.children_named("value") {
            let id = series
                .path(&["id", "counterId"])
                .and_then(|e| e.text.trim().parse::<i64>().ok());
            let latest = series
                .children_named("value")
                .last()
                .and_then(|v| v.text.trim().parse::<i64>().ok())
                .unwrap_or(0);
            let latest = u32::try_from(latest.max(0)).unwrap_or(u32::MAX);
            if id == Some(c.disk) {
                disk = latest;
            } else if id == Some(c.net) {
                net = latest;
            }
        }
        out.insert(entity, (disk, net));
    }
    Ok(out)
}

//! Who switched a VM on or off: power events from the event manager, with the
//! user who caused them.

use crate::error::VsphereError;
use crate::session::Session;
use crate::time;
use crate::xml::{self, Element};
use dr_core::model::{Actor, PowerEvent, PowerEventKind};
use dr_core::Timestamp;

/// The event types read, and what each means.
const KINDS: &[(&str, PowerEventKind)] = &[
    ("VmPoweredOnEvent", PowerEventKind::PoweredOn),
    ("VmPoweredOffEvent", PowerEventKind::PoweredOff),
    ("VmGuestShutdownEvent", PowerEventKind::PoweredOff),
    ("VmResettingEvent", PowerEventKind::Reset),
    ("VmSuspendedEvent", PowerEventKind::Suspended),
];

/// Whether the event's user is the orchestrator's own (vCenter may print
/// `VSPHERE.LOCAL\vmdr` for `vmdr@vsphere.local`).
fn is_us(event_user: &str, our_user: &str) -> bool {
    let local = |u: &str| {
        let u = u.rsplit('\\').next().unwrap_or(u);
        u.split('@').next().unwrap_or(u).to_ascii_lowercase()
    };
    event_user.eq_ignore_ascii_case(our_user) || local(event_user) == local(our_user)
}

/// One event, if it is a power event of a VM.
fn parse(e: &Element, our_user: &str) -> Option<PowerEvent> {
    let kind = KINDS
        .iter()
        .find(|(t, _)| Some(*t) == e.xsi_type())
        .map(|(_, k)| *k)?;
    let at = time::parse(e.child_text("createdTime")?)?;
    let vm = e.path(&["vm", "name"])?.text.trim().to_owned();
    let user = e.child_text("userName").unwrap_or("").trim();
    let by = if user.is_empty() {
        Actor::System
    } else if is_us(user, our_user) {
        Actor::Orchestrator
    } else {
        Actor::User(user.to_owned())
    };
    Some(PowerEvent { vm, at, kind, by })
}

/// Power events at or after `since`, oldest first (at most the event
/// manager's latest 1,000 of these types).
pub async fn power_events(
    s: &Session,
    since: Timestamp,
    our_user: &str,
) -> Result<Vec<PowerEvent>, VsphereError> {
    let Some(em) = s.content().event_manager.as_ref() else {
        return Ok(Vec::new());
    };
    let types: String = KINDS
        .iter()
        .map(|(t, _)| format!("<eventTypeId>{t}</eventTypeId>"))
        .collect();
    let body = format!(
        "{}<filter><time><beginTime>{}</beginTime></time>{types}<maxCount>1000</maxCount></filter>",
        em.xml("_this"),
        xml::escape(&time::format(since))
    );
    let r = s.invoke("QueryEvents", &body).await?;
    let mut out: Vec<PowerEvent> = r
        .children_named("returnval")
        .filter_map(|e| parse(e, our_user))
        .filter(|e| e.at >= since)
        .collect();
    out.sort_by_key(|e| e.at);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_kinds() {
        let doc = br#"<r xmlns:x="i"><returnval x:type="VmPoweredOffEvent"><createdTime>2026-11-25T10:00:00Z</createdTime><userName>VSPHERE.LOCAL\alice</userName><vm><name>web-1</name></vm></returnval></r>"#;
        let e = crate::xml::parse(doc, Default::default()).unwrap();
        let ev = parse(e.child("returnval").unwrap(), "vmdr@vsphere.local").unwrap();
        assert_eq!(ev.by, Actor::User("VSPHERE.LOCAL\\alice".into()));
        assert_eq!(ev.kind, PowerEventKind::PoweredOff);
        assert!(is_us("VSPHERE.LOCAL\\vmdr", "vmdr@vsphere.local"));
        assert!(is_us("VMDR", "vmdr"));
        assert!(!is_us("alice", "vmdr"));
    }
}

//! vSphere HA as evidence: a cluster's HA settings (`configurationEx`'s
//! `dasConfig`) and each host's state as HA's master reports it
//! (`runtime.dasHostState`), mapped onto the port's [`HaSignal`].
//!
//! HA's master watches every host by its network heartbeats and by the
//! heartbeat files the host writes on the cluster's datastores, so it tells
//! an isolated host (which runs its isolation response) from a partitioned
//! one (which keeps running its VMs) where vmdr and vCenter only see
//! silence. Its settings say whether HA restarts a failed host's VMs itself
//! (then they are HA's, never vmdr's) and what the isolation response does
//! and when.

use crate::xml::Element;
use dr_core::model::{HaHostState, HaSignal};

/// HA's isolation policy delay when the cluster does not set it
/// (`das.config.fdm.isolationPolicyDelaySec`), s: vSphere 6 and later wait
/// this long after a host declares itself isolated before its response.
const DEFAULT_POLICY_DELAY_S: u32 = 30;
/// How long a shutdown isolation response waits for the guest before it
/// powers the VM off (`das.isolationShutdownTimeout`), s.
const DEFAULT_SHUTDOWN_TIMEOUT_S: u32 = 300;

/// A cluster's HA settings, where HA watches its hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HaConfig {
    /// HA restarts a failed host's VMs (default restart priority not
    /// `disabled`).
    pub restarts: bool,
    /// From a host declaring itself isolated to its VMs being off, ms
    /// (`None`: the response leaves them running).
    pub response_after_ms: Option<u32>,
}

/// The HA settings in a cluster's `configurationEx`: `None` when HA is off
/// or does not monitor hosts (then it says nothing of them).
pub fn config(configuration_ex: &Element) -> Option<HaConfig> {
    let das = configuration_ex.child("dasConfig")?;
    if das.child_text("enabled").map(str::trim) != Some("true") {
        return None;
    }
    // Host monitoring off: HA neither watches hosts nor responds to
    // isolation.
    if das.child_text("hostMonitoring").map(str::trim) == Some("disabled") {
        return None;
    }
    let settings = das.child("defaultVmSettings");
    let setting = |name: &str| {
        settings
            .and_then(|s| s.child_text(name))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let option = |key: &str| -> Option<u32> {
        das.children_named("option")
            .find(|o| o.child_text("key").map(str::trim) == Some(key))
            .and_then(|o| o.child_text("value"))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    let delay_s =
        option("das.config.fdm.isolationPolicyDelaySec").unwrap_or(DEFAULT_POLICY_DELAY_S);
    let shutdown_s = option("das.isolationShutdownTimeout").unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_S);
    let response_after_s = match setting("isolationResponse") {
        Some("powerOff") => Some(delay_s),
        Some("shutdown") => Some(delay_s.saturating_add(shutdown_s)),
        // "none" (the default: leave powered on), or anything else.
        _ => None,
    };
    Some(HaConfig {
        restarts: setting("restartPriority") != Some("disabled"),
        response_after_ms: response_after_s.map(|s| s.saturating_mul(1000)),
    })
}

/// A host's `runtime.dasHostState` (a `ClusterDasFdmHostState`) in the
/// port's terms.
pub fn host_state(das_host_state: Option<&Element>) -> HaHostState {
    match das_host_state
        .and_then(|e| e.child_text("state"))
        .map(str::trim)
    {
        Some("master" | "connectedToMaster") => HaHostState::Alive,
        Some("networkPartitionedFromMaster") => HaHostState::Partitioned,
        Some("networkIsolated") => HaHostState::Isolated,
        Some("hostDown") => HaHostState::Dead,
        // election, uninitialized, initializationError, fdmUnreachable, …
        _ => HaHostState::Unknown,
    }
}

/// What vmdr is told of a host of a cluster with `config`.
pub fn signal(config: HaConfig, das_host_state: Option<&Element>) -> HaSignal {
    HaSignal {
        state: host_state(das_host_state),
        restarts: config.restarts,
        response_after_ms: config.response_after_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml;

    fn parse(s: &str) -> Element {
        xml::parse(s.as_bytes(), xml::Limits::default()).expect("xml")
    }

    fn cluster(das: &str) -> Element {
        parse(&format!(
            "<val xsi:type=\"ClusterConfigInfoEx\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><dasConfig>{das}</dasConfig></val>"
        ))
    }

    #[test]
    fn settings_give_the_restarts_and_the_isolation_responses_time() {
        assert_eq!(config(&cluster("<enabled>false</enabled>")), None);
        assert_eq!(
            config(&cluster(
                "<enabled>true</enabled><hostMonitoring>disabled</hostMonitoring>"
            )),
            None
        );
        // Defaults: restarts on, isolation response none.
        assert_eq!(
            config(&cluster("<enabled>true</enabled>")),
            Some(HaConfig {
                restarts: true,
                response_after_ms: None
            })
        );
        let power_off = cluster(
            "<enabled>true</enabled><hostMonitoring>enabled</hostMonitoring>\
             <defaultVmSettings><restartPriority>disabled</restartPriority>\
             <isolationResponse>powerOff</isolationResponse></defaultVmSettings>",
        );
        assert_eq!(
            config(&power_off),
            Some(HaConfig {
                restarts: false,
                response_after_ms: Some(30_000)
            })
        );
        let shutdown = cluster(
            "<enabled>true</enabled><defaultVmSettings><restartPriority>disabled</restartPriority>\
             <isolationResponse>shutdown</isolationResponse></defaultVmSettings>\
             <option><key>das.config.fdm.isolationPolicyDelaySec</key><value xsi:type=\"xsd:string\">10</value></option>\
             <option><key>das.isolationShutdownTimeout</key><value>60</value></option>",
        );
        assert_eq!(
            config(&shutdown).and_then(|c| c.response_after_ms),
            Some(70_000)
        );
    }

    #[test]
    fn host_states() {
        let st = |s: &str| host_state(Some(&parse(&format!("<v><state>{s}</state></v>"))));
        assert_eq!(st("master"), HaHostState::Alive);
        assert_eq!(st("connectedToMaster"), HaHostState::Alive);
        assert_eq!(st("networkPartitionedFromMaster"), HaHostState::Partitioned);
        assert_eq!(st("networkIsolated"), HaHostState::Isolated);
        assert_eq!(st("hostDown"), HaHostState::Dead);
        assert_eq!(st("election"), HaHostState::Unknown);
        assert_eq!(host_state(None), HaHostState::Unknown);
    }
}

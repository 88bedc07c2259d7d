//! The [`Fencer`] contract: what every fence backend must do.

use dr_core::ports::{FenceError, FencePower, Fencer};

/// What the suite may use: a host with a device, powered on, that it may
/// power off (it stays off), and a host name without a device.
#[derive(Clone, Debug)]
pub struct FencerFixture {
    /// A host whose device the suite powers off.
    pub host: String,
    /// A host with no device.
    pub no_device: String,
}

/// Runs every rule against `fencer`.
pub async fn run_all(fencer: &dyn Fencer, fx: &FencerFixture) {
    lists_its_devices(fencer, fx);
    unknown_hosts_have_no_device(fencer, fx).await;
    off_then_status_reads_off(fencer, fx).await;
}

/// `devices` names the fixture's host and not the one without a device.
pub fn lists_its_devices(fencer: &dyn Fencer, fx: &FencerFixture) {
    let d = fencer.devices();
    assert!(d.contains(&fx.host), "devices() lacks {}: {d:?}", fx.host);
    assert!(
        !d.contains(&fx.no_device),
        "devices() names {}, which has none",
        fx.no_device
    );
}

/// A host without a device is `NoDevice`, never an answer.
pub async fn unknown_hosts_have_no_device(fencer: &dyn Fencer, fx: &FencerFixture) {
    assert!(
        matches!(
            fencer.power_status(&fx.no_device).await,
            Err(FenceError::NoDevice { .. })
        ),
        "status of a host without a device must be NoDevice"
    );
    assert!(
        matches!(
            fencer.power_off(&fx.no_device).await,
            Err(FenceError::NoDevice { .. })
        ),
        "off of a host without a device must be NoDevice"
    );
}

/// The host reads on, an off succeeds, then it reads off, and an off of a
/// host already off succeeds again (a retried fence).
pub async fn off_then_status_reads_off(fencer: &dyn Fencer, fx: &FencerFixture) {
    assert_eq!(
        fencer.power_status(&fx.host).await,
        Ok(FencePower::On),
        "the fixture's host must read on first"
    );
    fencer
        .power_off(&fx.host)
        .await
        .unwrap_or_else(|e| panic!("off of {}: {e}", fx.host));
    assert_eq!(
        fencer.power_status(&fx.host).await,
        Ok(FencePower::Off),
        "after an off, a status must read off"
    );
    fencer
        .power_off(&fx.host)
        .await
        .unwrap_or_else(|e| panic!("a second off of {} (already off): {e}", fx.host));
    assert_eq!(fencer.power_status(&fx.host).await, Ok(FencePower::Off));
}

//! Running fence agents: vmdr's [`Fencer`] over the hosts' devices.

use crate::device::{ConfigError, Credentials, DeviceConfig};
use async_trait::async_trait;
use dr_core::ports::{FenceError, FencePower, Fencer};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::io::AsyncWriteExt;

/// What an agent printed, at most, quoted in an error.
const QUOTED: usize = 400;

/// The exit code of a `status` whose device reads the host off (0: on).
const STATUS_OFF: i32 = 2;

/// The hosts' fence devices, run through their agents. The set can be
/// replaced while running (a configuration reload); a fence under way
/// keeps the device it started with.
#[derive(Debug, Default)]
pub struct FenceAgents {
    devices: RwLock<BTreeMap<String, Arc<DeviceConfig>>>,
}

impl FenceAgents {
    /// These devices; at most one per host.
    pub fn new(devices: Vec<DeviceConfig>) -> Result<Self, ConfigError> {
        let agents = FenceAgents::default();
        agents.set_devices(devices)?;
        Ok(agents)
    }

    /// Replaces the devices (refused, and the old ones kept, if two are
    /// for one host).
    pub fn set_devices(&self, devices: Vec<DeviceConfig>) -> Result<(), ConfigError> {
        let mut map = BTreeMap::new();
        for d in devices {
            let host = d.host.clone();
            if map.insert(host.clone(), Arc::new(d)).is_some() {
                return Err(ConfigError::DuplicateHost(host));
            }
        }
        *self.devices.write().unwrap_or_else(PoisonError::into_inner) = map;
        Ok(())
    }

    fn device(&self, host: &str) -> Result<Arc<DeviceConfig>, FenceError> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .cloned()
            .ok_or_else(|| FenceError::NoDevice { host: host.into() })
    }

    /// Runs `device`'s agent with `action`: its exit code, or why there is
    /// none.
    async fn run(&self, device: &DeviceConfig, op: &'static str) -> Result<i32, FenceError> {
        let host = device.host.as_str();
        let secret = read_secret(device).await?;
        let mut input = String::new();
        for (k, v) in &device.options {
            input.push_str(&format!("{k}={v}\n"));
        }
        if let Some(s) = &secret {
            input.push_str(&format!("password={s}\n"));
        }
        input.push_str(&format!("action={op}\n"));
        tracing::info!(host, agent = %device.agent.display(), action = op, "running fence agent");
        let mut cmd = tokio::process::Command::new(&device.agent);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // An agent that outlives its time (or a fence the loop gave up
            // on) is killed, not left to act later; in a process group of
            // its own, so what it runs (ipmitool, ssh) goes with it.
            .kill_on_drop(true)
            .process_group(0);
        if let Credentials::Env(name) = &device.credentials {
            cmd.env_remove(name);
        }
        let failed = |detail: String| FenceError::Failed {
            host: host.to_owned(),
            op,
            detail,
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| failed(format!("cannot run {}: {e}", device.agent.display())))?;
        let mut group = GroupGuard(child.id());
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| failed("the agent's standard input is not a pipe".into()))?;
        let run = async {
            // An agent that exits without reading its input is its own
            // answer: a broken pipe is not the failure to report.
            let _ = stdin.write_all(input.as_bytes()).await;
            drop(stdin);
            child.wait_with_output().await
        };
        let out = match tokio::time::timeout(device.run_timeout, run).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(failed(format!("waiting for the agent: {e}"))),
            Err(_) => {
                if let Some(pgid) = group.0.take() {
                    kill_group(pgid).await;
                }
                return Err(FenceError::Timeout {
                    host: host.to_owned(),
                    op,
                    after: device.run_timeout,
                });
            }
        };
        // It exited: its group is its own business now (and its number may
        // be reused).
        group.0 = None;
        match out.status.code() {
            Some(code) => {
                let said = quote(&out.stdout, &out.stderr, secret.as_deref());
                tracing::debug!(host, action = op, code, output = %said, "fence agent finished");
                if code == 0 || (op == "status" && code == STATUS_OFF) {
                    Ok(code)
                } else {
                    Err(failed(format!(
                        "{} exited with {code}: {said}",
                        agent_name(device)
                    )))
                }
            }
            None => Err(failed(format!(
                "{} was killed by a signal",
                agent_name(device)
            ))),
        }
    }
}

/// The agent's process group while it may still run: killed if the run is
/// abandoned (the loop's own timeout dropped it).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let (Some(pgid), Ok(rt)) = (self.0, tokio::runtime::Handle::try_current()) {
            rt.spawn(kill_group(pgid));
        }
    }
}

/// Kills process group `pgid` (the agent was killed when its future was
/// dropped; this takes what it started with it). Through kill(1): this
/// crate has no unsafe code to call kill(2) with.
async fn kill_group(pgid: u32) {
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if !killed.is_ok_and(|s| s.success()) {
        tracing::debug!(pgid, "the fence agent's process group was gone already");
    }
}

fn agent_name(device: &DeviceConfig) -> String {
    device.agent.file_name().map_or_else(
        || device.agent.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The device's password, if it has one: the first line of its file or its
/// environment variable, which must not be empty nor hold a line break (it
/// would add options of its own to the agent's input).
async fn read_secret(device: &DeviceConfig) -> Result<Option<String>, FenceError> {
    let bad = |detail: String| FenceError::Credentials {
        host: device.host.clone(),
        detail,
    };
    let secret = match &device.credentials {
        Credentials::None => return Ok(None),
        Credentials::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| bad(format!("password_file {}: {e}", path.display())))?,
        Credentials::Env(name) => std::env::var(name)
            .map_err(|_| bad(format!("password_env {name} is not set (or not UTF-8)")))?,
    };
    let secret = secret
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&secret);
    if secret.is_empty() {
        return Err(bad("the password is empty".into()));
    }
    if secret.contains(['\n', '\r', '\0']) {
        return Err(bad(
            "the password holds a line break or a NUL (one line is read)".into(),
        ));
    }
    Ok(Some(secret.to_owned()))
}

/// What the agent said, for an error: its last lines (Python's warnings
/// left out), at most [`QUOTED`] characters, with the secret masked should
/// an agent echo it.
fn quote(stdout: &[u8], stderr: &[u8], secret: Option<&str>) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let text = match secret {
        Some(s) => text.replace(s, "***"),
        None => text,
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("DeprecationWarning") && !l.starts_with("from "))
        .collect();
    let joined = lines.join(" | ");
    if joined.is_empty() {
        return "(no output)".into();
    }
    let chars = joined.chars().count();
    if chars <= QUOTED {
        joined
    } else {
        let tail: String = joined.chars().skip(chars - QUOTED).collect();
        format!("…{tail}")
    }
}

#[async_trait]
impl Fencer for FenceAgents {
    fn devices(&self) -> BTreeSet<String> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    async fn power_off(&self, host: &str) -> Result<(), FenceError> {
        let device = self.device(host)?;
        self.run(&device, "off").await.map(|_| ())
    }

    async fn power_status(&self, host: &str) -> Result<FencePower, FenceError> {
        let device = self.device(host)?;
        Ok(match self.run(&device, "status").await? {
            STATUS_OFF => FencePower::Off,
            _ => FencePower::On,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_mask_the_secret_and_drop_python_noise() {
        let q = quote(
            b"Failed: Unable to obtain correct plug status or plug is not available\n",
            b"/usr/sbin/fence_ipmilan:5: DeprecationWarning: 'pipes' is deprecated\n  from pipes import quote\nlogin with s3cret failed\n",
            Some("s3cret"),
        );
        assert_eq!(
            q,
            "Failed: Unable to obtain correct plug status or plug is not available | login with *** failed"
        );
        assert_eq!(quote(b"", b"", None), "(no output)");
        let long = "x".repeat(1000);
        assert_eq!(
            quote(long.as_bytes(), b"", None).chars().count(),
            QUOTED + 1
        );
    }
}

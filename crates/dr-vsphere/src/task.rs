//! vCenter tasks: an operation returns a `Task`; its `info.state` is polled
//! until it succeeds or fails, and a failure's fault becomes a typed error.

use crate::error::VsphereError;
use crate::session::Session;
use crate::soap::MoRef;
use crate::xml::Element;
use std::time::Duration;

/// Starts `method` on `this` with `args` (inner XML after `_this`) and waits
/// for its task. Returns the task's result element, if any.
pub async fn run(
    s: &Session,
    method: &str,
    this: &MoRef,
    args: &str,
    timeout: Duration,
) -> Result<Option<Element>, VsphereError> {
    let r = s
        .invoke(method, &format!("{}{args}", this.xml("_this")))
        .await?;
    let task = r
        .child("returnval")
        .and_then(MoRef::from_element)
        .ok_or_else(|| VsphereError::Missing {
            method: method.into(),
            what: "a task".into(),
        })?;
    wait(s, method, &task, timeout).await
}

/// Polls a task until it ends (50 ms, doubling to 1 s between polls).
pub async fn wait(
    s: &Session,
    method: &str,
    task: &MoRef,
    timeout: Duration,
) -> Result<Option<Element>, VsphereError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    let body = format!(
        "{}<specSet><propSet><type>Task</type><pathSet>info</pathSet></propSet><objectSet>{}</objectSet></specSet><options/>",
        s.content().property_collector.xml("_this"),
        task.xml("obj")
    );
    loop {
        let r = s.invoke("RetrievePropertiesEx", &body).await?;
        let info = r
            .path(&["returnval", "objects", "propSet", "val"])
            .ok_or_else(|| VsphereError::Missing {
                method: method.into(),
                what: format!("the info of {}", task.value),
            })?;
        match info.child_text("state").map(str::trim) {
            Some("success") => return Ok(info.child("result").cloned()),
            Some("error") => {
                let err = info.child("error");
                let fault = err
                    .and_then(|e| e.child("fault"))
                    .and_then(|f| f.xsi_type().map(str::to_owned))
                    .unwrap_or_else(|| "TaskFailed".to_owned());
                let message = err
                    .and_then(|e| e.child_text("localizedMessage"))
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                return Err(VsphereError::Fault {
                    method: method.into(),
                    fault,
                    message,
                });
            }
            Some("queued" | "running") => {}
            other => {
                return Err(VsphereError::Missing {
                    method: method.into(),
                    what: format!("a known task state (got {other:?})"),
                });
            }
        }
        if tokio::time::Instant::now() + pause > deadline {
            return Err(VsphereError::Fault {
                method: method.into(),
                fault: "Timeout".into(),
                message: format!("task {} still running after {timeout:?}", task.value),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

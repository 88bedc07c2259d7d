//! This host's guests, through its own libvirt: what the agent destroys
//! when it fences.

use dr_libvirt::remote::Client;
use dr_libvirt::uri::Uri;
use dr_libvirt::LibvirtError;
use std::time::Duration;

/// The host's libvirt, connected on first use and again after an error.
pub struct Guests {
    uri: Result<Uri, String>,
    timeout: Duration,
    client: Option<Client>,
}

impl Guests {
    /// Over the libvirt at `uri` (checked when the configuration was),
    /// every call bounded by `timeout`.
    pub fn new(uri: &str, timeout: Duration) -> Guests {
        Guests {
            uri: Uri::parse(uri).map_err(|e| e.to_string()),
            timeout,
            client: None,
        }
    }

    async fn client(&mut self) -> Result<&Client, LibvirtError> {
        if self.client.as_ref().is_some_and(|c| c.closed().is_some()) {
            self.client = None;
        }
        if self.client.is_none() {
            let uri = self.uri.clone().map_err(LibvirtError::Config)?;
            self.client = Some(Client::open(&uri, self.timeout, Box::new(|_| {})).await?);
        }
        self.client
            .as_ref()
            .ok_or_else(|| LibvirtError::Config("no libvirt connection".into()))
    }

    /// Destroys (hard power-off) every running guest; their names. On an
    /// error the connection is dropped, to be made again next time.
    pub async fn destroy_running(&mut self) -> Result<Vec<String>, LibvirtError> {
        let result = async {
            let client = self.client().await?;
            let mut destroyed = Vec::new();
            for dom in client.list_all_domains().await? {
                if dom.id == -1 {
                    continue;
                }
                client.destroy(&dom).await?;
                destroyed.push(dom.name.clone());
            }
            Ok(destroyed)
        }
        .await;
        if result.is_err() {
            self.client = None;
        }
        result
    }
}

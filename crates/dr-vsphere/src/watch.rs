//! Incremental inventory: a private property collector with one filter over
//! the container view; after the first full read, each refresh is one
//! `WaitForUpdatesEx` round trip that returns only what changed.

use crate::error::VsphereError;
use crate::inventory::{self, ObjectContent};
use crate::session::Session;
use crate::soap::MoRef;
use crate::xml::{self, Element};
use std::collections::BTreeMap;

/// A live view of the inventory's properties.
pub struct Watch {
    collector: MoRef,
    version: String,
    objects: BTreeMap<(String, String), ObjectContent>,
}

impl Watch {
    /// Creates the collector, view and filter, and reads everything.
    /// Returns the watch and the round trips taken.
    pub async fn start(s: &Session) -> Result<(Watch, u32), VsphereError> {
        let r = s
            .invoke(
                "CreatePropertyCollector",
                &s.content().property_collector.xml("_this"),
            )
            .await?;
        let collector = r
            .child("returnval")
            .and_then(MoRef::from_element)
            .ok_or_else(|| VsphereError::Missing {
                method: "CreatePropertyCollector".into(),
                what: "returnval".into(),
            })?;
        let view = inventory::create_view(s).await?;
        let body = format!(
            "{}<spec>{}</spec><partialUpdates>false</partialUpdates>",
            collector.xml("_this"),
            inventory::spec_set_inner(&view)
        );
        s.invoke("CreateFilter", &body).await?;
        let mut w = Watch {
            collector,
            version: String::new(),
            objects: BTreeMap::new(),
        };
        let trips = w.refresh(s).await?;
        Ok((w, trips + 3))
    }

    /// Applies what changed since the last call. Returns the round trips.
    pub async fn refresh(&mut self, s: &Session) -> Result<u32, VsphereError> {
        let mut trips = 0;
        loop {
            let body = format!(
                "{}<version>{}</version><options><maxWaitSeconds>0</maxWaitSeconds></options>",
                self.collector.xml("_this"),
                xml::escape(&self.version)
            );
            let r = s.invoke("WaitForUpdatesEx", &body).await?;
            trips += 1;
            let Some(set) = r.child("returnval") else {
                return Ok(trips); // nothing changed
            };
            self.apply(set);
            if let Some(v) = set.child_text("version") {
                self.version = v.trim().to_owned();
            }
            if set.child_text("truncated").map(str::trim) != Some("true") {
                return Ok(trips);
            }
        }
    }

    fn apply(&mut self, set: &Element) {
        for fs in set.children_named("filterSet") {
            for ou in fs.children_named("objectSet") {
                let Some(obj) = ou.child("obj").and_then(MoRef::from_element) else {
                    continue;
                };
                let key = (obj.kind.clone(), obj.value.clone());
                match ou.child_text("kind").map(str::trim) {
                    Some("leave") => {
                        self.objects.remove(&key);
                    }
                    _ => {
                        let entry = self.objects.entry(key).or_insert_with(|| ObjectContent {
                            obj: Some(obj),
                            ..ObjectContent::default()
                        });
                        for ch in ou.children_named("changeSet") {
                            let Some(name) = ch.child_text("name") else {
                                continue;
                            };
                            match (ch.child_text("op").map(str::trim), ch.child("val")) {
                                (Some("assign"), Some(val)) => {
                                    entry.props.insert(name.to_owned(), val.clone());
                                }
                                _ => {
                                    entry.props.remove(name);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The objects as last seen, in a stable order.
    pub fn objects(&self) -> Vec<ObjectContent> {
        self.objects.values().cloned().collect()
    }

    /// Ends the watch on the server (best effort).
    pub async fn close(&self, s: &Session) {
        if let Err(e) = s
            .invoke("DestroyPropertyCollector", &self.collector.xml("_this"))
            .await
        {
            tracing::debug!(error = %e, "could not destroy the property collector");
        }
    }
}

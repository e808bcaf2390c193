//! Home Assistant MQTT discovery for the MQTT sink (`sinks.mqtt.discovery`, on by default): one
//! device per farsight box (its `client_id`); per camera an `event` entity (`event_types`:
//! `match`, `unknown`) and a sensor with the last identity seen there; per enrolled identity a
//! sensor with the camera where they were last seen. Every entity's availability is the sink's
//! availability topic. Config messages are retained under `<discovery_prefix>/<component>/
//! <node>/<object>/config`, published on every connect and again whenever Home Assistant says
//! `online` on `<discovery_prefix>/status`. Identities are those in the gallery at start, and any
//! other matched later; cameras are those configured, and any other seen later.
//!
//! State topics (under the sink's `topic_prefix`): `<camera>/face` (the event entity: JSON with
//! `event_type` and the event's identity, score, track and phase; fired once per visit and again
//! when an announced decision changes), `<camera>/last_identity` and
//! `identities/<slug>/last_camera` (both retained).

use crate::config::MqttSinkConfig;
use crate::event::{Phase, TrackDecision, TrackEvent};
use serde_json::json;
use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// The most open visits remembered as announced (a bound: past it, the memory starts again).
const MAX_OPEN_VISITS: usize = 10_000;

#[derive(Debug, Default)]
struct Known {
    cameras: BTreeSet<String>,
    identities: BTreeSet<String>,
    /// Visits (camera, track) whose decision fired the event entity; their final does not fire.
    announced: HashSet<(String, u64)>,
}

/// The discovery messages of one box, and what it has announced so far.
#[derive(Debug)]
pub struct Discovery {
    prefix: String,
    node: String,
    topic_prefix: String,
    availability: String,
    device: serde_json::Value,
    known: Mutex<Known>,
}

/// A name as an MQTT topic level and a Home Assistant object id: lower-case ASCII letters,
/// digits and `_`, plus 8 hex digits of the name's sha256 when anything was changed (so "Ada"
/// and "ada" stay apart).
pub fn slug(name: &str) -> String {
    let plain: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if plain == name && !plain.is_empty() {
        return plain;
    }
    let digest = crate::model::sha256_hex(name.as_bytes());
    format!("{}_{}", plain.chars().take(40).collect::<String>(), &digest[..8])
}

impl Discovery {
    /// Discovery for the sink configured by `config` (availability on `availability`), knowing
    /// `cameras` and `identities` from the start.
    pub fn new(config: &MqttSinkConfig, availability: &str, cameras: &[String], identities: &[String]) -> Self {
        let node = slug(&config.client_id);
        Self {
            prefix: config.discovery_prefix.clone(),
            topic_prefix: config.topic_prefix.clone(),
            availability: availability.to_owned(),
            device: json!({
                "identifiers": [format!("farsight_{node}")],
                "name": format!("farsight {}", config.client_id),
                "manufacturer": "farsight",
                "model": "farsight face recognition",
                "sw_version": env!("CARGO_PKG_VERSION"),
            }),
            node,
            known: Mutex::new(Known {
                cameras: cameras.iter().cloned().collect(),
                identities: identities.iter().cloned().collect(),
                announced: HashSet::new(),
            }),
        }
    }

    /// Where Home Assistant says `online` when it (re)starts.
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// The state topic of `camera`'s event entity.
    pub fn face_topic(&self, camera: &str) -> String {
        format!("{}/{camera}/face", self.topic_prefix)
    }

    /// The retained state topic of `camera`'s last-identity sensor.
    pub fn last_identity_topic(&self, camera: &str) -> String {
        format!("{}/{camera}/last_identity", self.topic_prefix)
    }

    /// The retained state topic of `identity`'s last-camera sensor.
    pub fn last_camera_topic(&self, identity: &str) -> String {
        format!("{}/identities/{}/last_camera", self.topic_prefix, slug(identity))
    }

    fn config(&self, component: &str, object: &str, mut body: serde_json::Value) -> Message {
        body["unique_id"] = json!(format!("farsight_{}_{object}", self.node));
        body["availability_topic"] = json!(self.availability);
        body["payload_available"] = json!("online");
        body["payload_not_available"] = json!("offline");
        body["device"] = self.device.clone();
        Message {
            topic: format!("{}/{component}/{}/{object}/config", self.prefix, self.node),
            payload: body.to_string(),
            retain: true,
        }
    }

    fn camera_configs(&self, camera: &str) -> [Message; 2] {
        let object = slug(camera);
        [
            self.config(
                "event",
                &format!("{object}_face"),
                json!({
                    "name": format!("{camera} face"),
                    "state_topic": self.face_topic(camera),
                    "event_types": ["match", "unknown"],
                    "icon": "mdi:face-recognition",
                }),
            ),
            self.config(
                "sensor",
                &format!("{object}_last_identity"),
                json!({
                    "name": format!("{camera} last identity"),
                    "state_topic": self.last_identity_topic(camera),
                    "icon": "mdi:account-eye",
                }),
            ),
        ]
    }

    fn identity_config(&self, identity: &str) -> Message {
        self.config(
            "sensor",
            &format!("person_{}", slug(identity)),
            json!({
                "name": format!("{identity} last camera"),
                "state_topic": self.last_camera_topic(identity),
                "icon": "mdi:cctv",
            }),
        )
    }

    /// Every entity's config message, for a (re)connect or Home Assistant's `online`.
    pub fn configs(&self) -> Vec<Message> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Message> = known.cameras.iter().flat_map(|c| self.camera_configs(c)).collect();
        out.extend(known.identities.iter().map(|i| self.identity_config(i)));
        out
    }

    /// What `event` changes: the config of a camera or identity seen for the first time, then the
    /// entities' states.
    pub fn on_event(&self, event: &TrackEvent) -> Vec<Message> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        if known.cameras.insert(event.camera.clone()) {
            out.extend(self.camera_configs(&event.camera));
        }
        let matched = event.event == TrackDecision::Match;
        if matched && known.identities.insert(event.identity.clone()) {
            out.push(self.identity_config(&event.identity));
        }
        let visit = (event.camera.clone(), event.track);
        let fire = match event.phase {
            Phase::Decision => {
                if known.announced.len() >= MAX_OPEN_VISITS {
                    known.announced.clear();
                }
                known.announced.insert(visit);
                true
            }
            Phase::Update => true,
            Phase::Final => !known.announced.remove(&visit),
        };
        if !fire {
            return out;
        }
        let kind = if matched { "match" } else { "unknown" };
        let phase = match event.phase {
            Phase::Decision => "decision",
            Phase::Update => "update",
            Phase::Final => "final",
        };
        let state = json!({
            "event_type": kind, "identity": event.identity, "score": event.score,
            "track": event.track, "phase": phase,
        });
        out.push(Message { topic: self.face_topic(&event.camera), payload: state.to_string(), retain: false });
        out.push(Message {
            topic: self.last_identity_topic(&event.camera),
            payload: event.identity.clone(),
            retain: true,
        });
        if matched {
            out.push(Message {
                topic: self.last_camera_topic(&event.identity),
                payload: event.camera.clone(),
                retain: true,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_topic_safe_and_keep_different_names_apart() {
        assert_eq!(slug("door"), "door");
        let (a, b) = (slug("Ada"), slug("ada"));
        assert_ne!(a, b);
        assert!(a.starts_with("ada_") && a.len() == 12, "{a}");
        let odd = slug("José/+#");
        assert!(odd.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'), "{odd}");
    }

    #[test]
    fn a_visit_fires_its_event_entity_once_and_again_on_a_change() {
        let d = Discovery::new(&MqttSinkConfig::default(), "farsight/farsight/availability", &[], &[]);
        let mut e = crate::sink::tests::event("door", 7);
        e.phase = Phase::Decision;
        let first = d.on_event(&e);
        let topics: Vec<&str> = first.iter().map(|m| m.topic.as_str()).collect();
        assert!(topics.contains(&"homeassistant/event/farsight/door_face/config"), "{topics:?}");
        assert!(topics.contains(&"farsight/door/face") && topics.contains(&"farsight/identities/ada/last_camera"));
        e.phase = Phase::Update;
        assert!(d.on_event(&e).iter().any(|m| m.topic == "farsight/door/face"), "a change fires again");
        e.phase = Phase::Final;
        assert!(d.on_event(&e).is_empty(), "the announced visit's final fires nothing, and door is known");
        let mut quiet = crate::sink::tests::event("door", 8);
        quiet.phase = Phase::Final;
        assert!(
            d.on_event(&quiet).iter().any(|m| m.topic == "farsight/door/face"),
            "an unannounced visit fires at its end"
        );
        assert_eq!(d.configs().len(), 3, "door's two entities and ada's sensor");
    }
}

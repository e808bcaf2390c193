//! The MQTT sink (rumqttc's synchronous client). Events are published as JSON to
//! `<topic_prefix>/<camera>/events` with the configured QoS, not retained. Availability lives on
//! `<topic_prefix>/<client_id>/availability`, retained: the broker publishes the last will
//! `offline` when the connection dies, the sink publishes `online` on every (re)connect and
//! `offline` before a clean disconnect at shutdown. With `discovery` (the default), Home
//! Assistant's MQTT discovery messages and entity states go out too ([`super::hass`]); they are
//! only sent while connected (configs again on every connect and when Home Assistant says
//! `online`), so they never take an event's place in `offline_queue`.
//!
//! A thread (`sink-mqtt-conn`) drives the connection. On an error it logs (at most one warning per
//! 10 s), sleeps with backoff (0.1 s doubling to 5 s) and polls again, which reconnects.
//!
//! Broker-down policy: an event counts as *unacknowledged* from [`EventSink::deliver`] until the
//! broker has it (QoS 0: written to the socket; QoS 1: PUBACK; QoS 2: PUBCOMP). While the broker
//! is unreachable, up to `offline_queue` unacknowledged events are held and published after the
//! reconnect (QoS 1 and 2 messages caught in flight by the disconnect are sent again). Once
//! `offline_queue` events are held, a further event is dropped and counted at once while the
//! broker is down (a permanent failure), and retried with the runner's backoff while it is up but
//! slow to acknowledge. The availability messages count against the same limit while unacknowledged.
//! At shutdown the sink waits up to [`FLUSH_WAIT`] for the broker to acknowledge what it holds
//! (not at all when the broker is down); what is left is counted as dropped.
//!
//! rumqttc's request channel is sized `offline_queue` plus room for the availability and
//! disconnect requests, and events enter it with `try_publish` only after the limit above was
//! checked, so `deliver` never blocks on it. TLS uses rustls: `ca_file` (PEM) when given, else the
//! system's CA bundle (`SSL_CERT_FILE`, or the usual Debian, Fedora and Alpine paths) read here,
//! because rumqttc's own platform-roots loader panics when it finds no certificates.

use super::hass::{Discovery, Message};
use super::{EventSink, SinkError, WarnLimiter};
use crate::config::MqttSinkConfig;
use crate::event::TrackEvent;
use rumqttc::{Client, Connection, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NAME: &str = "mqtt";

/// How long [`EventSink::flush`] waits for the broker to acknowledge the events it holds.
pub const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Room in rumqttc's request channel beyond `offline_queue`: availability messages, disconnect.
const CONTROL_ROOM: usize = 8;

/// Where the system CA bundle usually is, when `SSL_CERT_FILE` is not set.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// The connection's state as the sink and its connection thread share it.
#[derive(Debug, Default)]
pub struct MqttLink {
    connected: AtomicBool,
    closing: AtomicBool,
    unacked: AtomicUsize,
    connects: AtomicU64,
}

impl MqttLink {
    /// Whether the broker has accepted the connection and it has not failed since.
    pub fn is_connected(&self) -> bool {
        self.connected.load(SeqCst)
    }

    /// Messages handed to the client that the broker has not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.unacked.load(SeqCst)
    }

    /// How many times the broker accepted a connection (1 after the first connect).
    pub fn connects(&self) -> u64 {
        self.connects.load(SeqCst)
    }

    fn acked(&self) {
        let _ = self.unacked.fetch_update(SeqCst, SeqCst, |n| Some(n.saturating_sub(1)));
    }
}

/// Publishes events to an MQTT broker.
pub struct MqttSink {
    client: Client,
    qos: QoS,
    topic_prefix: String,
    availability: String,
    offline_queue: usize,
    link: Arc<MqttLink>,
    thread: Option<JoinHandle<()>>,
    undelivered: u64,
    discovery: Option<Arc<Discovery>>,
}

impl MqttSink {
    /// Starts the client and its connection thread. Fails only on configuration (an unreadable
    /// `ca_file`, a bad QoS): an unreachable broker is retried in the background.
    pub fn connect(config: &MqttSinkConfig) -> Result<Self, SinkError> {
        Self::connect_announcing(config, &[], &[])
    }

    /// [`MqttSink::connect`], with Home Assistant discovery (when `config.discovery`) announcing
    /// `cameras` and `identities` from the first connect on.
    pub fn connect_announcing(
        config: &MqttSinkConfig,
        cameras: &[String],
        identities: &[String],
    ) -> Result<Self, SinkError> {
        let config_err = |message: String| SinkError::Config { sink: NAME, message };
        let qos = match config.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            q => return Err(config_err(format!("qos {q} must be 0, 1 or 2"))),
        };
        let availability = format!("{}/{}/availability", config.topic_prefix, config.client_id);
        let mut options = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        options
            .set_keep_alive(Duration::from_secs(u64::from(config.keep_alive_s.max(5))))
            .set_clean_session(true)
            .set_max_packet_size(256 * 1024, 256 * 1024)
            .set_last_will(LastWill::new(availability.clone(), "offline", qos, true));
        if let Some(user) = &config.username {
            options.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
        }
        if config.tls {
            let ca = match &config.ca_file {
                Some(path) => read_pem(path)?,
                None => system_roots()?,
            };
            options.set_transport(Transport::tls(ca, None, None));
        }
        let (client, connection) = Client::new(options, config.offline_queue.max(1) + CONTROL_ROOM);
        let link = Arc::new(MqttLink::default());
        let discovery = config.discovery.then(|| Arc::new(Discovery::new(config, &availability, cameras, identities)));
        let thread = {
            let (client, link, topic, hass) = (client.clone(), link.clone(), availability.clone(), discovery.clone());
            std::thread::Builder::new()
                .name("sink-mqtt-conn".to_owned())
                .spawn(move || drive(connection, &client, &link, &topic, qos, hass.as_deref()))
                .map_err(|e| config_err(format!("cannot start the connection thread: {e}")))?
        };
        Ok(Self {
            client,
            qos,
            topic_prefix: config.topic_prefix.clone(),
            availability,
            offline_queue: config.offline_queue.max(1),
            link,
            thread: Some(thread),
            undelivered: 0,
            discovery,
        })
    }

    /// The shared connection state (for status reports and tests).
    pub fn link(&self) -> Arc<MqttLink> {
        self.link.clone()
    }

    /// The topic events of `camera` are published to.
    pub fn events_topic(&self, camera: &str) -> String {
        format!("{}/{camera}/events", self.topic_prefix)
    }

    /// Sends `offline` (retained) and a clean DISCONNECT, then waits briefly for the connection
    /// thread to end. Idempotent.
    fn close(&mut self) {
        if self.link.closing.swap(true, SeqCst) {
            return;
        }
        if self.link.is_connected() {
            let _ = self.client.try_publish(self.availability.clone(), self.qos, true, "offline");
        }
        let _ = self.client.try_disconnect();
        if let Some(thread) = self.thread.take() {
            let until = Instant::now() + Duration::from_secs(1);
            while !thread.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl EventSink for MqttSink {
    fn name(&self) -> &str {
        NAME
    }

    fn deliver(&mut self, event: &TrackEvent) -> Result<(), SinkError> {
        if self.link.closing.load(SeqCst) {
            return Err(SinkError::Permanent { sink: NAME, message: "the sink is closed".to_owned() });
        }
        let held = self.link.unacked();
        if held >= self.offline_queue {
            let message = format!("{held} messages await the broker's acknowledgement (offline_queue)");
            return Err(if self.link.is_connected() {
                SinkError::Transient { sink: NAME, message }
            } else {
                SinkError::Permanent { sink: NAME, message: format!("broker unreachable: {message}") }
            });
        }
        let payload = serde_json::to_vec(event)
            .map_err(|e| SinkError::Permanent { sink: NAME, message: format!("cannot encode the event: {e}") })?;
        if let Some(hass) = &self.discovery {
            // Learned even while disconnected (announced at the next connect); sent only while
            // connected: entity states are not worth an event's place in the offline queue.
            let messages = hass.on_event(event);
            if self.link.is_connected() {
                send(&self.client, &self.link, self.qos, &messages);
            }
        }
        // Count before handing over: the connection thread may see the acknowledgement first.
        self.link.unacked.fetch_add(1, SeqCst);
        match self.client.try_publish(self.events_topic(&event.camera), self.qos, false, payload) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.link.acked();
                Err(SinkError::Transient { sink: NAME, message: format!("request queue: {e}") })
            }
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let until = Instant::now() + FLUSH_WAIT;
        while self.link.unacked() > 0 && self.link.is_connected() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The events still held; an `online` caught unacknowledged is miscounted here as one.
        self.undelivered = self.link.unacked() as u64;
        self.close();
        if self.undelivered > 0 {
            return Err(SinkError::Transient {
                sink: NAME,
                message: format!("{} events were never acknowledged by the broker", self.undelivered),
            });
        }
        Ok(())
    }

    fn undelivered(&self) -> u64 {
        self.undelivered
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Queues `messages` (counted as unacknowledged like events, so acknowledgements match); one
/// that does not fit in the request queue is skipped (it is refreshed by the next event or
/// connect).
fn send(client: &Client, link: &MqttLink, qos: QoS, messages: &[Message]) {
    for m in messages {
        link.unacked.fetch_add(1, SeqCst);
        if client.try_publish(m.topic.clone(), qos, m.retain, m.payload.clone()).is_err() {
            link.acked();
        }
    }
}

/// The connection thread: polls rumqttc's event loop (which reconnects after an error), tracks
/// acknowledgements and publishes `online` on each connect (with Home Assistant discovery: the
/// entity configs, and again when Home Assistant says `online`). Ends after the DISCONNECT at
/// close.
fn drive(
    mut connection: Connection,
    client: &Client,
    link: &MqttLink,
    availability: &str,
    qos: QoS,
    hass: Option<&Discovery>,
) {
    let mut warn = WarnLimiter::new(Duration::from_secs(10));
    let mut backoff = Duration::from_millis(100);
    for notification in connection.iter() {
        match notification {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                link.connected.store(true, SeqCst);
                let n = link.connects.fetch_add(1, SeqCst) + 1;
                log::info!("sink mqtt: connected to the broker (connection {n})");
                backoff = Duration::from_millis(100);
                link.unacked.fetch_add(1, SeqCst);
                if client.try_publish(availability, qos, true, "online").is_err() {
                    link.acked();
                    warn.warn(NAME, &"could not queue the `online` availability message");
                }
                if let Some(hass) = hass {
                    send(client, link, qos, &hass.configs());
                    if client.try_subscribe(hass.status_topic(), QoS::AtLeastOnce).is_err() {
                        warn.warn(NAME, &"could not subscribe to Home Assistant's status topic");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(hass) = hass.filter(|h| p.topic == h.status_topic() && &p.payload[..] == b"online") {
                    log::info!("sink mqtt: Home Assistant is online: discovery published again");
                    send(client, link, qos, &hass.configs());
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => link.acked(),
            Ok(Event::Incoming(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => link.acked(),
            Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => link.acked(),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                link.connected.store(false, SeqCst);
                if link.closing.load(SeqCst) {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                link.connected.store(false, SeqCst);
                if link.closing.load(SeqCst) {
                    return;
                }
                warn.warn(NAME, &format_args!("broker connection: {e}; retrying in {backoff:?}"));
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if link.closing.load(SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

pub(crate) fn read_pem(path: &Path) -> Result<Vec<u8>, SinkError> {
    let pem = std::fs::read(path).map_err(|e| SinkError::Config {
        sink: NAME,
        message: format!("cannot read ca_file {}: {e}", path.display()),
    })?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(SinkError::Config {
            sink: NAME,
            message: format!("ca_file {} holds no PEM certificate", path.display()),
        });
    }
    Ok(pem)
}

/// The system's CA bundle, for `tls = true` without `ca_file`.
fn system_roots() -> Result<Vec<u8>, SinkError> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let candidates = from_env.into_iter().chain(CA_BUNDLES.iter().map(std::path::PathBuf::from));
    for path in candidates {
        if path.is_file() {
            return read_pem(&path);
        }
    }
    Err(SinkError::Config {
        sink: NAME,
        message: format!(
            "tls = true without ca_file, and no system CA bundle was found (SSL_CERT_FILE, {}): \
             set sinks.mqtt.ca_file or install ca-certificates",
            CA_BUNDLES.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_a_config_error() {
        let config = MqttSinkConfig { tls: true, ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        let r = MqttSink::connect(&config);
        assert!(matches!(r, Err(SinkError::Config { .. })));
    }

    #[test]
    fn a_full_offline_queue_drops_at_once_while_the_broker_is_down() {
        // Nothing listens on this port: the sink never connects.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = MqttSinkConfig { port, offline_queue: 2, ..Default::default() };
        let mut sink = MqttSink::connect(&config).unwrap();
        let e = crate::sink::tests::event("door", 1);
        sink.deliver(&e).unwrap();
        sink.deliver(&e).unwrap();
        let t = Instant::now();
        let third = sink.deliver(&e);
        assert!(matches!(third, Err(SinkError::Permanent { .. })), "{third:?}");
        assert!(t.elapsed() < Duration::from_millis(100));
        assert_eq!(sink.link().unacked(), 2);
        let r = sink.flush();
        assert!(r.is_err());
        assert_eq!(sink.undelivered(), 2);
    }
}

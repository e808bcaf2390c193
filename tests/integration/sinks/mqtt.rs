//! The MQTT sink against a real mosquitto broker started (and restarted) on a loopback port. A
//! missing mosquitto fails the test with what to install.

use super::{event, free_port, quiet_config, wait_until};
use crossbeam_channel::{bounded, Receiver};
use farsight::config::{MqttSinkConfig, SinksConfig};
use farsight::sink::{MqttSink, SinkSummary, Sinks};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A mosquitto process on a loopback port, killed on drop. Persistence is on (in the test's
/// directory) so a subscriber's session and its queued QoS 1 messages survive a broker restart:
/// without it, a restarted broker would race the test's subscriber against the sink's resend.
struct Broker {
    child: Child,
    dir: PathBuf,
}

fn mosquitto() -> PathBuf {
    let found = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    found.expect(
        "the MQTT sink tests need a real mosquitto broker at /usr/sbin/mosquitto: \
         install it (`apt-get install mosquitto mosquitto-clients`); these tests must not be skipped",
    )
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Self {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
                 persistence_location {}/\nautosave_interval 0\nlog_dest stderr\n",
                dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("mosquitto.log")).unwrap();
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        let mut broker = Self { child, dir: dir.to_owned() };
        wait_until(Duration::from_secs(30), "mosquitto to listen", || {
            let exited = broker.child.try_wait().unwrap();
            assert!(exited.is_none(), "mosquitto exited ({exited:?}): is port {port} taken? log in {}", dir.display());
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        broker
    }

    /// A broker on a free port: a port another process took between [`free_port`] and the
    /// broker's bind is given up for another one.
    fn start_free(dir: &Path) -> (Self, u16) {
        for _ in 0..5 {
            let port = free_port();
            match std::panic::catch_unwind(|| Self::start(dir, port)) {
                Ok(broker) => return (broker, port),
                Err(_) => eprintln!("mosquitto could not take port {port}; trying another"),
            }
        }
        panic!("mosquitto did not start on any of 5 free ports (log in {})", dir.display());
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait for the exit.
    fn stop(mut self) {
        // SIGTERM, not Child::kill's SIGKILL: only a clean exit writes the persistence file.
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("the MQTT restart test stops mosquitto with `kill` (Debian package procps)");
        assert!(status.success());
        wait_until(Duration::from_secs(20), "mosquitto to exit", || self.child.try_wait().unwrap().is_some());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
            eprintln!("mosquitto log:\n{log}");
        }
    }
}

/// A message a [`Subscriber`] received.
#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: String,
    retain: bool,
}

/// A rumqttc subscriber on its own thread; subscribes (QoS 1) whenever the broker has no session.
struct Subscriber {
    rx: Receiver<Msg>,
    client: Client,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    fn start(port: u16, id: &str, persistent: bool, topics: &[&str]) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_clean_session(!persistent).set_keep_alive(Duration::from_secs(20));
        let (client, mut connection) = Client::new(options, 16);
        let (tx, rx) = bounded(10_000);
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        {
            let (client, stop, subscribed) = (client.clone(), stop.clone(), subscribed.clone());
            std::thread::spawn(move || {
                for n in connection.iter() {
                    match n {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                            for t in &topics {
                                client.try_subscribe(t.clone(), QoS::AtLeastOnce).unwrap();
                            }
                        }
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {}
                        Ok(Event::Incoming(Packet::SubAck(_))) => subscribed.store(true, SeqCst),
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let payload = String::from_utf8_lossy(&p.payload).into_owned();
                            let _ = tx.try_send(Msg { topic: p.topic.clone(), payload, retain: p.retain });
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(_) if stop.load(SeqCst) => return,
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            });
        }
        wait_until(Duration::from_secs(20), "the subscription", || subscribed.load(SeqCst));
        Self { rx, client, stop }
    }

    /// The next message on `topic` within `within`, skipping others.
    fn next_on(&self, topic: &str, within: Duration) -> Msg {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let m = self.rx.recv_timeout(left).unwrap_or_else(|_| panic!("nothing on {topic} within {within:?}"));
            if m.topic == topic {
                return m;
            }
        }
    }

    /// The track numbers of the next `n` events on `topic`.
    fn tracks(&self, topic: &str, n: usize, within: Duration) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let m = self.next_on(topic, within);
                let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
                v["track"].as_u64().unwrap()
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = self.client.try_disconnect();
    }
}

/// The retained message on `topic`, read by a fresh client.
fn retained(port: u16, topic: &str) -> String {
    let sub = Subscriber::start(port, "farsight-test-retained", false, &[topic]);
    let m = sub.next_on(topic, Duration::from_secs(20));
    assert!(m.retain, "{topic}: {m:?} is not retained");
    m.payload
}

#[test]
fn mqtt_events_availability_and_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, port) = Broker::start_free(dir.path());
    let sub = Subscriber::start(port, "farsight-test-sub", true, &["farsight/+/events", "farsight/+/availability"]);

    let mqtt = MqttSinkConfig { port, client_id: "box1".into(), offline_queue: 3, ..Default::default() };
    let sink = MqttSink::connect(&mqtt).unwrap();
    let link = sink.link();
    let sinks = Sinks::from_sinks(vec![Box::new(sink)], &quiet_config()).unwrap();
    wait_until(Duration::from_secs(20), "the sink to connect", || link.is_connected());
    assert_eq!(sub.next_on("farsight/box1/availability", Duration::from_secs(20)).payload, "online");
    assert_eq!(retained(port, "farsight/box1/availability"), "online");

    for track in 1..=3 {
        sinks.publish(event("door", track));
    }
    assert_eq!(sub.tracks("farsight/door/events", 3, Duration::from_secs(20)), vec![1, 2, 3]);
    wait_until(Duration::from_secs(20), "the broker's acknowledgements", || link.unacked() == 0);

    // The broker goes away: publish must not block, 3 events (offline_queue) are held, 2 dropped.
    broker.stop();
    wait_until(Duration::from_secs(20), "the sink to notice the broker is gone", || !link.is_connected());
    let t = Instant::now();
    for track in 10..15 {
        sinks.publish(event("door", track));
    }
    // A blocked publish would wait for the broker's return; any bound far below that will do.
    assert!(t.elapsed() < Duration::from_secs(10), "publish blocked for {:?}", t.elapsed());
    let stats = sinks.stats()[0].clone();
    wait_until(Duration::from_secs(20), "the runner to take every event", || {
        let s = stats.snapshot();
        s.output == 6 && s.dropped == 2
    });
    assert_eq!(link.unacked(), 3);

    // Back on the same port: the held events arrive, in order.
    let _broker = Broker::start(dir.path(), port);
    assert_eq!(sub.tracks("farsight/door/events", 3, Duration::from_secs(15)), vec![10, 11, 12]);
    wait_until(Duration::from_secs(20), "the resent events to be acknowledged", || link.unacked() == 0);
    assert!(link.connects() >= 2);

    let summary = sinks.close(Duration::from_secs(20));
    assert_eq!(summary, vec![SinkSummary { name: "mqtt".into(), delivered: 6, dropped: 2, finished: true }]);
    assert_eq!(retained(port, "farsight/box1/availability"), "offline");
    let late: Vec<Msg> = sub.rx.try_iter().filter(|m| m.topic.ends_with("/events")).collect();
    assert!(late.is_empty(), "dropped events arrived after all: {late:?}");
}

#[test]
fn mqtt_sink_without_a_broker_never_blocks_publish_and_closes_quickly() {
    let port = free_port();
    let mqtt = MqttSinkConfig { port, offline_queue: 2, ..Default::default() };
    let config = SinksConfig { retries: 100, retry_backoff_ms: 60_000, ..quiet_config() };
    let sinks = Sinks::from_sinks(vec![Box::new(MqttSink::connect(&mqtt).unwrap())], &config).unwrap();
    let t = Instant::now();
    for track in 0..100 {
        sinks.publish(event("door", track));
    }
    // A blocked publish would wait for the broker's return; any bound far below that will do.
    assert!(t.elapsed() < Duration::from_secs(10), "publish blocked for {:?}", t.elapsed());
    let t = Instant::now();
    let summary = sinks.close(Duration::from_millis(500));
    assert!(t.elapsed() < Duration::from_secs(10), "close took {:?}", t.elapsed());
    // Two held (never acknowledged), the rest dropped at once or for the full queue.
    assert_eq!(summary, vec![SinkSummary { name: "mqtt".into(), delivered: 0, dropped: 100, finished: true }]);
}

/// The JSON of the next message on `topic`.
fn json_on(sub: &Subscriber, topic: &str) -> (serde_json::Value, Msg) {
    let m = sub.next_on(topic, Duration::from_secs(20));
    let v = serde_json::from_str(&m.payload).unwrap_or_else(|e| panic!("{topic}: not JSON ({e}): {}", m.payload));
    (v, m)
}

#[test]
fn home_assistant_discovery_is_published_parses_and_follows_events() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = Broker::start_free(dir.path());
    let sub = Subscriber::start(port, "farsight-test-ha", false, &["homeassistant/#", "farsight/#"]);
    let mqtt = MqttSinkConfig { port, client_id: "box1".into(), ..Default::default() };
    let sink = MqttSink::connect_announcing(&mqtt, &["door".to_owned()], &["Ada Lovelace".to_owned()]).unwrap();
    let link = sink.link();
    let sinks = Sinks::from_sinks(vec![Box::new(sink)], &quiet_config()).unwrap();
    wait_until(Duration::from_secs(20), "the sink to connect", || link.is_connected());

    // One device, the camera's event entity and last-identity sensor, the identity's sensor: each
    // retained, with the keys Home Assistant's MQTT discovery documents.
    let (door, _) = json_on(&sub, "homeassistant/event/box1/door_face/config");
    let kept: serde_json::Value =
        serde_json::from_str(&retained(port, "homeassistant/event/box1/door_face/config")).unwrap();
    assert_eq!(kept, door, "configs are retained");
    assert_eq!(door["event_types"], serde_json::json!(["match", "unknown"]));
    assert_eq!(door["state_topic"], "farsight/door/face");
    let (sensor, _) = json_on(&sub, "homeassistant/sensor/box1/door_last_identity/config");
    let ada = farsight::sink::hass::slug("Ada Lovelace");
    let (person, _) = json_on(&sub, &format!("homeassistant/sensor/box1/person_{ada}/config"));
    for entity in [&door, &sensor, &person] {
        for key in ["name", "unique_id", "state_topic", "availability_topic", "payload_available", "device"] {
            assert!(!entity[key].is_null(), "{key} missing: {entity}");
        }
        assert_eq!(entity["availability_topic"], "farsight/box1/availability");
        assert_eq!(entity["device"]["identifiers"], serde_json::json!(["farsight_box1"]), "one device per box");
    }
    let uniques: std::collections::HashSet<&str> =
        [&door, &sensor, &person].iter().map(|e| e["unique_id"].as_str().unwrap()).collect();
    assert_eq!(uniques.len(), 3);

    // A match decision fires the camera's event entity and updates both sensors.
    let mut e = event("door", 5);
    e.event = farsight::event::TrackDecision::Match;
    e.phase = farsight::event::Phase::Decision;
    e.update = true;
    e.identity = "Ada Lovelace".into();
    sinks.publish(e.clone());
    let (fired, _) = json_on(&sub, "farsight/door/face");
    assert_eq!((fired["event_type"].as_str(), fired["identity"].as_str()), (Some("match"), Some("Ada Lovelace")));
    assert_eq!(sub.next_on("farsight/door/last_identity", Duration::from_secs(20)).payload, "Ada Lovelace");
    let last_camera = format!("farsight/identities/{ada}/last_camera");
    assert_eq!(sub.next_on(&last_camera, Duration::from_secs(20)).payload, "door");
    assert_eq!(retained(port, &last_camera), "door");

    // A camera first seen in an event is announced before its state.
    sinks.publish(event("yard", 6));
    let (yard, _) = json_on(&sub, "homeassistant/event/box1/yard_face/config");
    assert_eq!(yard["state_topic"], "farsight/yard/face");
    let (fired, _) = json_on(&sub, "farsight/yard/face");
    assert_eq!(fired["event_type"], "unknown");

    // Home Assistant restarts: it says `online`, and every config is published again.
    let (ha, mut ha_connection) = Client::new(MqttOptions::new("farsight-test-ha-status", "127.0.0.1", port), 4);
    ha.try_publish("homeassistant/status", QoS::AtLeastOnce, false, "online").unwrap();
    std::thread::spawn(move || {
        for n in ha_connection.iter().take(20) {
            if n.is_err() {
                return;
            }
        }
    });
    let (again, _) = json_on(&sub, "homeassistant/event/box1/door_face/config");
    assert_eq!(again, door);
    let (yard_again, _) = json_on(&sub, "homeassistant/event/box1/yard_face/config");
    assert_eq!(yard_again, yard, "cameras learned from events are announced again too");
    drop(sinks.close(Duration::from_secs(5)));
}

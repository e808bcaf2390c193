//! The webhook sink: each event POSTed as JSON (`Content-Type: application/json`, optionally
//! `Authorization: Bearer <token>`) with a per-request timeout covering connect and answer. A 2xx
//! answer delivers the event; a 5xx, a 429, a timeout or a connection failure is transient (the
//! runner retries with backoff); any other status (a 4xx: the receiver refuses the event) is
//! permanent. ureq 3 would turn every 4xx/5xx into an error by itself; the agent is built with
//! `http_status_as_error(false)` so the status is classified here.

use super::{EventSink, SinkError};
use crate::config::WebhookSinkConfig;
use crate::event::TrackEvent;
use std::io::Read;
use std::time::Duration;
use ureq::Agent;

const NAME: &str = "webhook";

/// At most this much of an error answer's body is quoted in the log.
const QUOTED_BODY: u64 = 200;

/// POSTs events to an HTTP endpoint.
pub struct WebhookSink {
    agent: Agent,
    url: String,
    authorization: Option<String>,
}

impl WebhookSink {
    /// A sink for `config.url`. Only checks the URL's shape; nothing is sent until the first event.
    pub fn new(config: &WebhookSinkConfig) -> Result<Self, SinkError> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(SinkError::Config {
                sink: NAME,
                message: format!("url {:?} must start with http:// or https://", config.url),
            });
        }
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(config.timeout_ms.max(1))))
            .user_agent(concat!("farsight/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self {
            agent,
            url: config.url.clone(),
            authorization: config.bearer_token.as_ref().map(|t| format!("Bearer {t}")),
        })
    }
}

impl EventSink for WebhookSink {
    fn name(&self) -> &str {
        NAME
    }

    fn deliver(&mut self, event: &TrackEvent) -> Result<(), SinkError> {
        let body = serde_json::to_vec(event)
            .map_err(|e| SinkError::Permanent { sink: NAME, message: format!("cannot encode the event: {e}") })?;
        let mut request = self.agent.post(&self.url).header("Content-Type", "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let mut response = request.send(&body[..]).map_err(classify_error)?;
        let status = response.status().as_u16();
        // Read the body to the end (bounded) so the connection can be reused.
        let mut text = String::new();
        let _ = response.body_mut().as_reader().take(64 * 1024).read_to_string(&mut text);
        if (200..300).contains(&status) {
            return Ok(());
        }
        let quoted: String = text.chars().take(QUOTED_BODY as usize).collect();
        let message = format!("{} answered {status}: {}", self.url, quoted.trim());
        if status >= 500 || status == 429 || status == 408 {
            Err(SinkError::Transient { sink: NAME, message })
        } else {
            Err(SinkError::Permanent { sink: NAME, message })
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Network trouble passes; a malformed URL or a refused TLS certificate does not.
fn classify_error(e: ureq::Error) -> SinkError {
    let message = e.to_string();
    match e {
        ureq::Error::Timeout(_)
        | ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => SinkError::Transient { sink: NAME, message },
        _ => SinkError::Permanent { sink: NAME, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::tests::event;

    #[test]
    fn a_refused_connection_is_transient() {
        // Bind and drop a listener: nothing listens on that port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config =
            WebhookSinkConfig { url: format!("http://127.0.0.1:{port}/hook"), timeout_ms: 500, ..Default::default() };
        let mut sink = WebhookSink::new(&config).unwrap();
        let r = sink.deliver(&event("door", 1));
        assert!(matches!(r, Err(SinkError::Transient { .. })), "{r:?}");
    }

    #[test]
    fn a_url_without_http_is_a_config_error() {
        let config = WebhookSinkConfig { url: "ftp://x".into(), ..Default::default() };
        assert!(matches!(WebhookSink::new(&config), Err(SinkError::Config { .. })));
    }
}

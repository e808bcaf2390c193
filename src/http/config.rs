//! `[http]`: where the operator's HTTP server listens, who may talk to it and how much it accepts.
//! Pure checks only ([`HttpConfig::validate`]); the server binds in [`super::Server::start`].

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The default address: loopback only, so a fresh box exposes nothing to its network.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// The fewest characters an access token may have.
pub const MIN_TOKEN_CHARS: usize = 16;

/// `[http]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve HTTP beside the cameras in `farsight run` (`farsight serve` always serves).
    pub enabled: bool,
    /// Address and port to listen on (`ADDR:PORT`; port 0 takes any free port, logged at start).
    pub bind: String,
    /// Access token: when set, every request but `/healthz` must carry `Authorization: Bearer
    /// TOKEN`. Required when `bind` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The largest request body accepted, in bytes (uploads); larger ones get 413.
    pub max_body_bytes: u64,
    /// A request not answered within this many seconds gets 503 (the work it started still ends
    /// on its own, and holds its slot until then).
    pub request_timeout_s: f32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: DEFAULT_BIND.to_owned(),
            token: None,
            max_body_bytes: 16 << 20,
            request_timeout_s: 30.0,
        }
    }
}

impl HttpConfig {
    /// The address to listen on, when `bind` is one.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.bind.parse().ok()
    }

    /// Every problem with the values (for `Config::validate`). A server bound beyond loopback
    /// without a token is refused: it would show the gallery to the whole network.
    pub fn validate(&self, p: &mut Vec<String>) {
        match self.addr() {
            None => p.push(format!(
                "http.bind = {:?} must be an address and a port, such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
                self.bind
            )),
            Some(addr) if self.enabled && !addr.ip().is_loopback() && self.token.is_none() => p.push(format!(
                "http.bind = {:?} is reachable from other machines: set http.token (at least {MIN_TOKEN_CHARS} \
                 characters) so every request must carry it, or bind to 127.0.0.1",
                self.bind
            )),
            Some(_) => {}
        }
        if let Some(token) = &self.token {
            if token.chars().count() < MIN_TOKEN_CHARS || token.len() > 4096 {
                p.push(format!(
                    "http.token must have between {MIN_TOKEN_CHARS} and 4096 characters (it has {})",
                    token.chars().count()
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                p.push("http.token must be printable ASCII without spaces (it travels in an HTTP header)".to_owned());
            }
        }
        if !(1024..=1 << 30).contains(&self.max_body_bytes) {
            p.push(format!("http.max_body_bytes = {} must be between 1024 and 1073741824", self.max_body_bytes));
        }
        if !(self.request_timeout_s >= 1.0 && self.request_timeout_s <= 3600.0) {
            p.push(format!("http.request_timeout_s = {} must be between 1 and 3600", self.request_timeout_s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &HttpConfig) -> Vec<String> {
        let mut p = Vec::new();
        c.validate(&mut p);
        p
    }

    #[test]
    fn the_default_is_valid_and_loopback() {
        let c = HttpConfig::default();
        assert!(problems(&c).is_empty());
        assert!(c.addr().unwrap().ip().is_loopback());
    }

    #[test]
    fn binding_beyond_loopback_needs_a_token() {
        let open = HttpConfig { bind: "0.0.0.0:8080".into(), ..Default::default() };
        let p = problems(&open);
        assert!(p.len() == 1 && p[0].contains("http.token"), "{p:?}");
        // Disabled, it binds nothing: nothing to refuse.
        assert!(problems(&HttpConfig { enabled: false, ..open.clone() }).is_empty());
        let with_token = HttpConfig { token: Some("0123456789abcdef".into()), ..open };
        assert!(problems(&with_token).is_empty());
    }

    #[test]
    fn bad_values_are_each_reported() {
        let c = HttpConfig {
            bind: "localhost".into(),
            token: Some("short token".into()),
            max_body_bytes: 10,
            request_timeout_s: 0.0,
            ..Default::default()
        };
        assert_eq!(problems(&c).len(), 5, "{:?}", problems(&c));
    }
}

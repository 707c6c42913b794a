//! Reading the `with` block of `notify.email`, as written (at load time) and rendered (when an
//! attempt runs), into where to connect ([`Server`]) and what to send ([`Letter`]).

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use serde_json::Value;

use crate::ConfigError;
use crate::builtin::config::{Fields, Phase, Read, at_index, describe, number_between, text};
use crate::builtin::http_request::parse_timeout;

const KEYS: [&str; 15] = [
    "host", "port", "tls", "ca_file", "username", "password", "from", "to", "cc", "bcc",
    "reply_to", "subject", "text", "html", "timeout",
];

/// How long a delivery may take, from connecting to the server's last reply, when `timeout` is
/// absent. Mail servers may pause on purpose (greylisting, tarpits), so this is generous.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsMode {
    /// Connect in plain text, then upgrade with STARTTLS; fail if the server does not offer it.
    StartTls,
    /// TLS from the first byte ("implicit TLS", SMTPS).
    Tls,
    /// No encryption at all: only for a relay on loopback or in a test.
    None,
}

impl TlsMode {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        match text {
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown TLS mode `{other}`; expected starttls, tls or none"
            )),
        }
    }

    /// The port each mode is conventionally served on (RFC 8314 for 465, RFC 6409 for 587).
    pub(super) fn default_port(self) -> u16 {
        match self {
            Self::StartTls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// Where and how to connect.
#[derive(Debug)]
pub(super) struct Server {
    /// A host name or IP address; under TLS, the name the certificate must carry.
    pub(super) host: String,
    /// From `port`, else the conventional port of `tls`.
    pub(super) port: u16,
    pub(super) tls: TlsMode,
    /// A PEM file of CA certificates trusted besides the system's, read when an attempt runs;
    /// never set with [`TlsMode::None`].
    pub(super) ca_file: Option<PathBuf>,
    /// SMTP AUTH, when `username` and `password` are given.
    pub(super) login: Option<Login>,
    /// A limit on the whole delivery.
    pub(super) timeout: Duration,
}

/// A username and password, whose `Debug` hides the password.
pub(super) struct Login {
    pub(super) username: String,
    pub(super) password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What to send.
#[derive(Debug)]
pub(super) struct Letter {
    pub(super) from: Mailbox,
    /// At least one address.
    pub(super) to: Vec<Mailbox>,
    pub(super) cc: Vec<Mailbox>,
    /// Envelope recipients only: never written into the message's headers.
    pub(super) bcc: Vec<Mailbox>,
    pub(super) reply_to: Option<Mailbox>,
    pub(super) subject: String,
    /// At least one of `text` and `html`; both make a `multipart/alternative` message.
    pub(super) text: Option<String>,
    pub(super) html: Option<String>,
}

/// The whole block; `Ok(None)` at load time when a template leaves something to the run.
pub(super) fn read(phase: Phase, with: &Value) -> Read<(Server, Letter)> {
    if phase.is_pending(with) {
        return Ok(None);
    }
    let fields = Fields::read(with, "", "a map with at least host, from, to and subject")?;
    fields.only(&KEYS)?;
    let server = read_server(phase, &fields)?;
    let letter = read_letter(phase, &fields)?;
    Ok(server.zip(letter))
}

pub(super) fn read_server(phase: Phase, fields: &Fields<'_>) -> Read<Server> {
    let host = read_host(phase, fields.required("host")?)?;
    let tls = match fields.optional("tls") {
        Some(value) => match text(phase, value, "tls")? {
            Some(mode) => Some(TlsMode::parse(mode).map_err(|m| ConfigError::new("tls", m))?),
            None => None,
        },
        None => Some(TlsMode::StartTls),
    };
    let port = match fields.optional("port") {
        Some(value) => read_port(phase, value)?.map(Some),
        None => Some(None),
    };
    let ca_file = read_ca_file(phase, fields)?;
    if tls == Some(TlsMode::None) && matches!(ca_file, Some(Some(_))) {
        return Err(ConfigError::new(
            "ca_file",
            "`ca_file` is used only with `tls: starttls` or `tls: tls`, not with `tls: none`",
        ));
    }
    let login = read_login(phase, fields)?;
    let timeout = match fields.optional("timeout") {
        Some(value) => match text(phase, value, "timeout")? {
            Some(text) => Some(parse_timeout(text).map_err(|m| ConfigError::new("timeout", m))?),
            None => None,
        },
        None => Some(DEFAULT_TIMEOUT),
    };
    let (Some(host), Some(tls), Some(port), Some(ca_file), Some(login), Some(timeout)) =
        (host, tls, port, ca_file, login, timeout)
    else {
        return Ok(None);
    };
    let port = port.unwrap_or_else(|| tls.default_port());
    Ok(Some(Server {
        host,
        port,
        tls,
        ca_file,
        login,
        timeout,
    }))
}

pub(super) fn read_host(phase: Phase, value: &Value) -> Read<String> {
    let Some(host) = text(phase, value, "host")? else {
        return Ok(None);
    };
    let host = host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains(['/', ':']) {
        return Err(ConfigError::new(
            "host",
            format!("expected a host name such as smtp.example.com, found `{host}`"),
        ));
    }
    Ok(Some(host.to_owned()))
}

pub(super) fn read_port(phase: Phase, value: &Value) -> Read<u16> {
    let Some(port) = number_between(phase, value, "port", 1.0, 65535.0)? else {
        return Ok(None);
    };
    if port.fract() != 0.0 {
        return Err(ConfigError::new(
            "port",
            format!("expected a whole number, found {port}"),
        ));
    }
    // Exact: a whole number between 1 and 65535.
    Ok(Some(port as u16))
}

/// A path, or nothing. Null is absent, as for a login, so that a workflow can write
/// `"{{ secrets.SMTP_CA_FILE | default(none) }}"`. The file itself is read only when an attempt
/// runs: the worker that sends may not be the machine that loads the workflow.
pub(super) fn read_ca_file(phase: Phase, fields: &Fields<'_>) -> Read<Option<PathBuf>> {
    let Some(value) = fields.optional("ca_file").filter(|value| !value.is_null()) else {
        return Ok(Some(None));
    };
    let Some(path) = text(phase, value, "ca_file")? else {
        return Ok(None);
    };
    if path.trim().is_empty() {
        return Err(ConfigError::new(
            "ca_file",
            "expected the path of a PEM file of CA certificates, found an empty string",
        ));
    }
    Ok(Some(Some(PathBuf::from(path))))
}

/// `username` and `password` come together or not at all. Null is absent, so a workflow can
/// write `"{{ secrets.SMTP_USERNAME | default(none) }}"` for a server that may or may not need
/// a login.
pub(super) fn read_login(phase: Phase, fields: &Fields<'_>) -> Read<Option<Login>> {
    let given = |key: &str| fields.optional(key).filter(|value| !value.is_null());
    let (username, password) = match (given("username"), given("password")) {
        (None, None) => return Ok(Some(None)),
        (Some(_), None) => {
            return Err(ConfigError::new(
                "password",
                "`username` needs a `password`",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "username",
                "`password` needs a `username`",
            ));
        }
        (Some(username), Some(password)) => (username, password),
    };
    let username = text(phase, username, "username")?;
    // Not `text`, whose error would quote a password written as a number.
    let password = text(phase, password, "password")
        .map_err(|_| ConfigError::new("password", "expected a string (the value is not shown)"))?;
    let (Some(username), Some(password)) = (username, password) else {
        return Ok(None);
    };
    if username.is_empty() {
        return Err(ConfigError::new("username", "the username is empty"));
    }
    Ok(Some(Some(Login {
        username: username.to_owned(),
        password: password.to_owned(),
    })))
}

pub(super) fn read_letter(phase: Phase, fields: &Fields<'_>) -> Read<Letter> {
    let from = read_mailbox(phase, fields.required("from")?, "from")?;
    let to = read_mailboxes(phase, fields.required("to")?, "to")?;
    if to.as_ref().is_some_and(Vec::is_empty) {
        return Err(ConfigError::new("to", "expected at least one recipient"));
    }
    let optional_list = |key: &str| match fields.optional(key) {
        Some(value) => read_mailboxes(phase, value, key),
        None => Ok(Some(Vec::new())),
    };
    let cc = optional_list("cc")?;
    let bcc = optional_list("bcc")?;
    let reply_to = match fields.optional("reply_to") {
        Some(value) => read_mailbox(phase, value, "reply_to")?.map(Some),
        None => Some(None),
    };
    let subject = text(phase, fields.required("subject")?, "subject")?;
    let (text_body, html_body) = (fields.optional("text"), fields.optional("html"));
    if text_body.is_none() && html_body.is_none() {
        return Err(ConfigError::new(
            "text",
            "missing required key `text` (or `html`)",
        ));
    }
    let optional_text = |value: Option<&Value>, key: &str| match value {
        Some(value) => Ok(text(phase, value, key)?.map(|text| Some(text.to_owned()))),
        None => Ok(Some(None)),
    };
    let text_body = optional_text(text_body, "text")?;
    let html_body = optional_text(html_body, "html")?;
    let (Some(from), Some(to), Some(cc), Some(bcc), Some(reply_to), Some(subject)) =
        (from, to, cc, bcc, reply_to, subject)
    else {
        return Ok(None);
    };
    let (Some(text), Some(html)) = (text_body, html_body) else {
        return Ok(None);
    };
    Ok(Some(Letter {
        from,
        to,
        cc,
        bcc,
        reply_to,
        subject: subject.to_owned(),
        text,
        html,
    }))
}

/// One address, `ada@example.com` or `Ada Lovelace <ada@example.com>`.
pub(super) fn read_mailbox(phase: Phase, value: &Value, path: &str) -> Read<Mailbox> {
    let Some(text) = text(phase, value, path)? else {
        return Ok(None);
    };
    text.trim().parse::<Mailbox>().map(Some).map_err(|error| {
        ConfigError::new(path, format!("`{text}` is not an email address: {error}"))
    })
}

/// One address, or a list of them.
pub(super) fn read_mailboxes(phase: Phase, value: &Value, path: &str) -> Read<Vec<Mailbox>> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let Value::Array(items) = value else {
        if !value.is_string() {
            let found = describe(value);
            let message = format!("expected an address or a list of addresses, found {found}");
            return Err(ConfigError::new(path, message));
        }
        return Ok(read_mailbox(phase, value, path)?.map(|mailbox| vec![mailbox]));
    };
    let mut mailboxes = Vec::with_capacity(items.len());
    let mut pending = false;
    for (index, item) in items.iter().enumerate() {
        match read_mailbox(phase, item, &at_index(path, index))? {
            Some(mailbox) => mailboxes.push(mailbox),
            None => pending = true,
        }
    }
    Ok((!pending).then_some(mailboxes))
}

//! `notify.email`: sends one message over SMTP with lettre (STARTTLS, implicit TLS, or plain text
//! for a relay on loopback), with a text body, an HTML body or both. Under TLS the server's
//! certificate must chain to the system's roots or to a CA of `ca_file`.
//!
//! The Message-ID is derived from the attempt's idempotency key: when the engine delivers the
//! same attempt twice (a worker died after the server accepted the message, before the attempt
//! was recorded), both copies carry one Message-ID, which mail stores and receivers de-duplicate
//! on. SMTP offers nothing closer to "exactly once".

use std::net::SocketAddr;

use async_trait::async_trait;
use lettre::message::{MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::Tls;
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};

use super::config::{Phase, rendered};
use super::http_request::refused;
use crate::{ConfigError, ErrorKind, Node, NodeContext, NodeError, egress};
use with_block::{Letter, Server, read};

mod smtp_error;
mod tls;
mod with_block;

/// Sends an email over SMTP; its `with` block is described in `docs/nodes.md`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotifyEmail;

/// The right-hand side of every Message-ID: the key on the left is only unique per engine.
const MESSAGE_ID_DOMAIN: &str = "enrichflow";

#[async_trait]
impl Node for NotifyEmail {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        read(Phase::Load, with).map(drop)
    }

    async fn execute(&self, ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let (server, letter) = rendered(read(Phase::Run, &with))?;
        let message_id = message_id(&ctx.idempotency_key);
        let message = build_message(letter, &message_id)?;
        let accepted: Vec<String> = message
            .envelope()
            .to()
            .iter()
            .map(ToString::to_string)
            .collect();
        let reply = deliver(ctx, &server, message).await?;
        let reply: Vec<&str> = reply.message().collect();
        Ok(json!({"message_id": message_id, "accepted": accepted, "reply": reply.join(" ")}))
    }
}

/// Sends the message unless the run is cancelled first, within the server's `timeout`.
async fn deliver(
    ctx: &NodeContext,
    server: &Server,
    message: Message,
) -> Result<Response, NodeError> {
    let target = format!("the SMTP server {}:{}", server.host, server.port);
    let tls = tls::for_server(server, &target).await?;
    let send = tokio::time::timeout(server.timeout, async {
        let address = resolve(ctx, server, &target).await?;
        let sent = transport(server, address, tls).send(message).await;
        sent.map_err(|error| {
            let password = server.login.as_ref().map(|login| login.password.as_str());
            smtp_error::classify(&target, &error, password)
        })
    });
    let result = tokio::select! {
        // Biased, so that an already cancelled run sends nothing.
        biased;
        () = ctx.cancellation.cancelled() => {
            return Err(NodeError::permanent(
                ErrorKind::Cancelled,
                format!("sending to {target} was cancelled"),
            ));
        }
        result = send => result,
    };
    match result {
        Ok(sent) => sent,
        Err(_) => Err(smtp_error::timed_out(&target, server.timeout)),
    }
}

/// The address to connect to, checked by the egress policy. lettre is given this address, not
/// the name, so a second lookup cannot lead elsewhere; TLS still verifies the name.
async fn resolve(
    ctx: &NodeContext,
    server: &Server,
    target: &str,
) -> Result<SocketAddr, NodeError> {
    let found = ctx.egress.resolve(&server.host, server.port).await;
    match found.as_deref().map(<[SocketAddr]>::first) {
        Ok(Some(address)) => Ok(*address),
        Ok(None) => Err(NodeError::retryable(
            ErrorKind::Node,
            format!("sending to {target} failed: the name has no address"),
        )),
        Err(egress::Error::Refused(refusal)) => Err(refused(target, refusal)),
        Err(error @ egress::Error::Resolve { .. }) => Err(NodeError::retryable(
            ErrorKind::Node,
            format!("sending to {target} failed: {error}"),
        )),
    }
}

/// `<key@enrichflow>`, with the key written as a dot-atom (RFC 5322 section 3.6.4): its `:`
/// separators become dots, and any byte a dot-atom cannot hold becomes `=XX`, so distinct keys
/// keep distinct ids.
fn message_id(idempotency_key: &str) -> String {
    let atoms: Vec<String> = idempotency_key.split(':').map(atom).collect();
    format!("<{}@{MESSAGE_ID_DOMAIN}>", atoms.join("."))
}

/// One part of the key as an atom; `=` alone stands for an empty part, which an atom cannot be.
fn atom(part: &str) -> String {
    if part.is_empty() {
        return "=".to_owned();
    }
    let mut atom = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            atom.push(char::from(byte));
        } else {
            atom.push_str(&format!("={byte:02X}"));
        }
    }
    atom
}

fn build_message(letter: Letter, message_id: &str) -> Result<Message, NodeError> {
    let mut builder = Message::builder()
        .message_id(Some(message_id.to_owned()))
        .from(letter.from)
        .subject(letter.subject);
    for mailbox in letter.to {
        builder = builder.to(mailbox);
    }
    for mailbox in letter.cc {
        builder = builder.cc(mailbox);
    }
    for mailbox in letter.bcc {
        builder = builder.bcc(mailbox);
    }
    if let Some(mailbox) = letter.reply_to {
        builder = builder.reply_to(mailbox);
    }
    let built = match (letter.text, letter.html) {
        (Some(text), Some(html)) => {
            builder.multipart(MultiPart::alternative_plain_html(text, html))
        }
        (Some(text), None) => builder.singlepart(SinglePart::plain(text)),
        (None, Some(html)) => builder.singlepart(SinglePart::html(html)),
        (None, None) => {
            return Err(NodeError::permanent(
                ErrorKind::Config,
                "the message has no body",
            ));
        }
    };
    built.map_err(|error| {
        NodeError::permanent(
            ErrorKind::Config,
            format!("the message cannot be built: {error}"),
        )
    })
}

fn transport(server: &Server, address: SocketAddr, tls: Tls) -> AsyncSmtpTransport<Tokio1Executor> {
    let host = address.ip().to_string();
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(address.port())
        .tls(tls)
        .timeout(Some(server.timeout));
    if let Some(login) = &server.login {
        builder = builder.credentials(Credentials::new(
            login.username.clone(),
            login.password.clone(),
        ));
    }
    builder.build()
}

#[cfg(test)]
mod tests;

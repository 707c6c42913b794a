//! The built-in node types, one per file, and what several of them share: reading a `with`
//! block ([`config`]) and the scoring rule language ([`rules`]).

mod config;
mod enrich_company;
mod enrich_email;
mod enrich_person;
mod http_request;
mod leads_upsert;
mod notify_email;
mod notify_http;
mod notify_slack;
mod notify_webhook;
mod provider;
mod redirect;
mod rules;
mod score_rules;
mod score_weighted;
mod transform;

pub use enrich_company::EnrichCompany;
pub use enrich_email::EnrichEmail;
pub use enrich_person::EnrichPerson;
pub use http_request::HttpRequest;
pub use leads_upsert::LeadsUpsert;
pub use notify_email::NotifyEmail;
pub use notify_slack::NotifySlack;
pub use notify_webhook::NotifyWebhook;
pub use score_rules::ScoreRules;
pub use score_weighted::ScoreWeighted;
pub use transform::Transform;

/// `enrich.company` and `enrich.person` with one rate limiter and circuit breaker per provider
/// base URL between them: a provider's limits count every call made with its key, whichever
/// node makes it.
pub fn enrichment_nodes() -> (EnrichCompany, EnrichPerson) {
    let gates = std::sync::Arc::new(provider::Gates::default());
    (
        EnrichCompany::with_gates(gates.clone()),
        EnrichPerson::with_gates(gates),
    )
}

#[cfg(test)]
mod testing {
    use tokio_util::sync::CancellationToken;

    use crate::{NodeContext, Secrets};

    /// A context for nodes that use none of it.
    pub(super) fn context() -> NodeContext {
        // Building a client needs a crypto provider; another test may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        NodeContext {
            run_id: "run".into(),
            workflow_id: "workflow".into(),
            node_id: "node".into(),
            attempt: 1,
            idempotency_key: NodeContext::idempotency_key_for("run", "node", 1),
            cancellation: CancellationToken::new(),
            http: reqwest::Client::new(),
            egress: crate::egress::Policy::allow_private_networks(),
            secrets: Secrets::default(),
            services: crate::Services::local(),
        }
    }
}

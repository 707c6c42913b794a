//! The shipped `workflows/lead-enrichment.yaml` end to end through the real binary, with its
//! enrichment providers and Slack faked by a local HTTP server: a lead goes in on the webhook,
//! comes out enriched, scored and stored, and a hot one reaches Slack. Embedded on SQLite, and
//! distributed on Postgres and RabbitMQ (a `serve` replica and a worker).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::distributed::Deployment;
use crate::process::{ServeProcess, remove_database, sqlite_url, temp_database};
use crate::support::{fixtures, install_crypto};

const EMAIL: &str = "ada.lovelace@analytical-engines.com";

fn workflows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows")
}

fn fixture(name: &str) -> Value {
    let file = fixtures("lead-pipeline").join(name);
    let text = std::fs::read_to_string(&file).expect("a fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// The example lead of the README.
fn lead() -> Value {
    let file = fixtures("examples").join("lead-enrichment.json");
    serde_json::from_str(&std::fs::read_to_string(file).expect("the example")).expect("JSON")
}

/// The secrets file and the variables file pointing every provider and Slack at `mocks`;
/// deleted with the returned guard.
struct SettingsFiles {
    secrets: PathBuf,
    vars: PathBuf,
}

impl SettingsFiles {
    fn new(mocks: &MockServer) -> SettingsFiles {
        let stem = format!("enrichflow-lead-{}", uuid::Uuid::now_v7().simple());
        let secrets = std::env::temp_dir().join(format!("{stem}-secrets"));
        let vars = std::env::temp_dir().join(format!("{stem}-vars"));
        let uri = mocks.uri();
        let secrets_text = format!(
            "CLEARBIT_API_KEY=ck_test_key\nHUNTER_API_KEY=hk_test_key\n\
             SLACK_WEBHOOK={uri}/slack/T000/B000/secret\n"
        );
        std::fs::write(&secrets, secrets_text).expect("write the secrets file");
        // The base URLs are not secret: the workflow reads them as `vars`.
        let vars_text = format!("CLEARBIT_BASE_URL={uri}\nHUNTER_BASE_URL={uri}\n");
        std::fs::write(&vars, vars_text).expect("write the variables file");
        SettingsFiles { secrets, vars }
    }

    /// `--secrets-file … --vars-file …`.
    fn args(&self) -> [&str; 4] {
        [
            "--secrets-file",
            self.secrets.to_str().expect("a UTF-8 temp path"),
            "--vars-file",
            self.vars.to_str().expect("a UTF-8 temp path"),
        ]
    }
}

impl Drop for SettingsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.secrets);
        let _ = std::fs::remove_file(&self.vars);
    }
}

/// Each provider answers once: the second run of the same lead must come from the cache.
async fn mount_providers(mocks: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/v2/companies/find"))
        .and(query_param("domain", "analytical-engines.com"))
        .and(header("authorization", "Bearer ck_test_key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("clearbit_company.json")))
        .expect(1)
        .mount(mocks)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/email-verifier"))
        .and(query_param("email", EMAIL))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("hunter_email_verifier.json")),
        )
        .expect(1)
        .mount(mocks)
        .await;
    Mock::given(method("POST"))
        .and(path("/slack/T000/B000/secret"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(2)
        .mount(mocks)
        .await;
}

async fn post_lead(client: &reqwest::Client, base_url: &str) -> Value {
    let response = client
        .post(format!("{base_url}/hooks/leads"))
        .json(&lead())
        .send()
        .await
        .expect("POST /hooks/leads");
    assert_eq!(
        response.status(),
        200,
        "on_complete answers with the output"
    );
    response.json().await.expect("the run's output")
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(&url).send().await.expect("GET");
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.expect("JSON")
}

/// Two posts of the same lead: enriched once (then from the cache), scored twice, stored once,
/// announced on Slack each time it is hot.
async fn check_the_pipeline(base_url: &str, mocks: &MockServer) {
    let client = reqwest::Client::new();
    let first = post_lead(&client, base_url).await;
    assert_eq!(first["email"]["email"], EMAIL);
    // The provider's 1,200 employees and software industry lift firmographic to 100.
    assert_eq!(first["score"]["breakdown"]["firmographic"]["score"], 100.0);
    assert_eq!(first["score"]["tier"], "hot", "{first:#}");
    assert_eq!(first["stored"], true);
    assert_eq!(
        first["notified"],
        json!({"slack": "succeeded", "email": "skipped"})
    );
    let second = post_lead(&client, base_url).await;
    assert_eq!(second["stored"], false, "the same address updates its lead");
    assert_eq!(second["score"], first["score"]);

    let listed = get(&client, format!("{base_url}/api/v1/leads")).await;
    let leads = listed["leads"].as_array().expect("a list of leads");
    assert_eq!(leads.len(), 1, "{listed:#}");
    let lead_id = leads[0]["id"].as_str().expect("an id");
    let lead = get(&client, format!("{base_url}/api/v1/leads/{lead_id}")).await;
    assert_eq!(lead["tier"], "hot");
    assert_eq!(lead["contact"]["email"], EMAIL);
    assert_eq!(lead["contact"]["title"], "VP Engineering");
    assert_eq!(lead["organization"]["domain"], "analytical-engines.com");
    assert_eq!(lead["organization"]["name"], "Analytical Engines");
    assert_eq!(lead["organization"]["employees"], 1200);
    assert_eq!(lead["scores"].as_array().map(Vec::len), Some(2), "{lead:#}");

    let slack = mocks
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|request| request.url.path().starts_with("/slack/"))
        .expect("Slack was called");
    let message: Value = serde_json::from_slice(&slack.body).expect("a JSON payload");
    let text = message["text"].as_str().expect("a text");
    assert!(
        text.contains(EMAIL) && text.contains("VP Engineering"),
        "{text}"
    );
    // wiremock checks each provider's `expect(1)`: the second run was served from the cache.
    mocks.verify().await;
}

#[tokio::test]
async fn a_lead_is_enriched_scored_stored_and_announced_embedded() {
    install_crypto();
    let mocks = MockServer::start().await;
    mount_providers(&mocks).await;
    let settings = SettingsFiles::new(&mocks);
    let database = temp_database("lead-pipeline");
    let mut args = vec!["--workers", "4"];
    args.extend(settings.args());
    let server =
        ServeProcess::start_with(&workflows(), &sqlite_url(&database), &mocks.uri(), &args);
    check_the_pipeline(&server.base_url, &mocks).await;
    drop(server);
    remove_database(&database);
}

#[tokio::test]
async fn a_lead_is_enriched_scored_stored_and_announced_distributed() {
    let Some(deployment) = Deployment::new("lead_pipeline").await else {
        return;
    };
    mount_providers(&deployment.mocks).await;
    let settings = SettingsFiles::new(&deployment.mocks);
    let server = deployment.serve_workflows(&workflows(), &settings.args());
    let worker = deployment.worker(4, &settings.args());
    check_the_pipeline(&server.base_url, &deployment.mocks).await;
    drop(worker);
    drop(server);
}

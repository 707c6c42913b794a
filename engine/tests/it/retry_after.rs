//! An upstream's `Retry-After` is clamped: `Retry-After: 100000000000000` (three million years)
//! used to overflow `finished_at + delay` and panic the worker, leaving the attempt `running`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use enrichflow_nodes::Secrets;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::process::{finished_run, trigger};
use crate::support::{TestOptions, TestServer, fixtures};

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("a timestamp, got {value}"))
}

#[tokio::test]
async fn an_absurd_retry_after_is_clamped_to_an_hour() {
    let mocks = MockServer::start().await;
    for retry_after in ["100000000000000", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        mocks.reset().await;
        Mock::given(method("GET"))
            .and(path("/busy"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", retry_after))
            .mount(&mocks)
            .await;
        let mut options = TestOptions::default();
        options.engine.secrets = Secrets::new(BTreeMap::from([("BASE_URL".into(), mocks.uri())]));
        let server = TestServer::start_with(&fixtures("retry_after"), options).await;

        let run_id = trigger(&server.client, &server.base_url, "busy").await;
        let run = finished_run(&server.client, &server.base_url, &run_id).await;
        assert_eq!(run["status"], json!("failed"), "{run:#}");
        let attempt = &run["nodes"]["call"]["history"][0];
        assert_eq!(attempt["status"], json!("failed"), "{run:#}");
        assert_eq!(attempt["error"]["kind"], json!("http"), "{run:#}");
        let wait = time(&attempt["not_before"]) - time(&attempt["finished_at"]);
        assert!(
            wait > chrono::Duration::minutes(59) && wait <= chrono::Duration::hours(1),
            "Retry-After: {retry_after} gave a wait of {wait}"
        );
    }
}

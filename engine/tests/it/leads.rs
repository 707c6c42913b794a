//! Leads end to end: a webhook workflow (`enrich.email` → `score.weighted` → `leads.upsert`)
//! stores what is posted, and `GET /api/v1/leads` and `/api/v1/leads/{id}` read it back. The
//! same checks run on SQLite, and on Postgres when `ENRICHFLOW_TEST_DATABASE_URL` is set.

use std::sync::Arc;

use enrichflow::store::PostgresStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::postgres::database;
use crate::support::{TestOptions, TestServer, fixtures};

/// Posts `body` to the intake webhook; returns what `leads.upsert` output.
async fn post_lead(server: &TestServer, body: Value) -> Value {
    let response = server
        .client
        .post(server.url("/hooks/leads"))
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    let output: Value = response.json().await.expect("a JSON body");
    assert_eq!(status, StatusCode::OK, "{output:#}");
    output
}

/// `GET path`: the status and the JSON body.
async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let response = server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

async fn listed_ids(server: &TestServer, path: &str) -> (Vec<String>, Value) {
    let (status, body) = get(server, path).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let ids = body["leads"]
        .as_array()
        .expect("a list of leads")
        .iter()
        .map(|lead| lead["id"].as_str().expect("an id").to_owned())
        .collect();
    (ids, body["next_cursor"].clone())
}

/// Two posts of one address make one lead with two scores; a free-mail address has no
/// organisation; the list filters and pages; an unknown id is a JSON 404.
async fn leads_are_stored_and_read_back(server: &TestServer) {
    let first = post_lead(
        server,
        json!({
            "email": " Ada@Acme.COM ", "first_name": "Ada", "tags": ["webinar"],
            "company": {"name": "Acme", "employees": 120, "industry": null},
            "activity": {"pages_viewed": 12},
        }),
    )
    .await;
    assert_eq!(first["created"], true, "{first:#}");
    assert!(first["organization_id"].is_string(), "{first:#}");
    let ada = first["lead_id"].as_str().expect("a lead id").to_owned();
    let again = post_lead(
        server,
        json!({
            "email": "ada@acme.com", "title": "CTO", "tags": ["pricing", "webinar"],
            "activity": {"pages_viewed": 12, "demo_requested": true},
        }),
    )
    .await;
    assert_eq!(again["created"], false);
    assert_eq!(again["lead_id"], first["lead_id"]);
    assert_eq!(again["organization_id"], first["organization_id"]);
    let bob = post_lead(server, json!({"email": "bob@gmail.com"})).await;
    assert_eq!(bob["organization_id"], Value::Null);
    let bob = bob["lead_id"].as_str().expect("a lead id").to_owned();

    let (status, body) = get(server, &format!("/api/v1/leads/{ada}")).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["status"], "new");
    assert_eq!(body["source"], "webhook");
    assert_eq!(body["tags"], json!(["webinar", "pricing"]));
    assert_eq!(
        (&body["score"], &body["tier"]),
        (&json!(100.0), &json!("hot"))
    );
    assert_eq!(body["contact"]["email"], "ada@acme.com");
    assert_eq!(
        body["contact"]["first_name"], "Ada",
        "kept from the first post"
    );
    assert_eq!(body["contact"]["title"], "CTO");
    let organization = &body["organization"];
    assert_eq!(organization["domain"], "acme.com");
    assert_eq!(organization["name"], "Acme");
    assert_eq!(organization["employees"], 120);
    let scores: Vec<(&Value, &Value)> = body["scores"]
        .as_array()
        .expect("a score history")
        .iter()
        .map(|score| (&score["total"], &score["tier"]))
        .collect();
    assert_eq!(
        scores,
        [
            (&json!(100.0), &json!("hot")),
            (&json!(60.0), &json!("warm"))
        ]
    );
    assert_eq!(
        body["scores"][1]["breakdown"]["engagement"]["score"],
        json!(60.0)
    );

    assert_eq!(
        listed_ids(server, "/api/v1/leads").await,
        (vec![bob.clone(), ada.clone()], Value::Null)
    );
    assert_eq!(
        listed_ids(server, "/api/v1/leads?tier=hot").await.0,
        [ada.as_str()]
    );
    assert_eq!(
        listed_ids(server, "/api/v1/leads?q=ACME").await.0,
        [ada.as_str()]
    );
    let (page, next) = listed_ids(server, "/api/v1/leads?limit=1").await;
    // The cursor is the last lead of the page.
    assert_eq!((page, &next), (vec![bob.clone()], &json!(bob)));
    let next = next.as_str().expect("a cursor");
    let (page, next) = listed_ids(server, &format!("/api/v1/leads?limit=1&cursor={next}")).await;
    assert_eq!((page, next), (vec![ada], Value::Null));

    let (status, body) = get(server, "/api/v1/leads?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    let missing = "01950000-0000-7000-8000-000000000000";
    let (status, body) = get(server, &format!("/api/v1/leads/{missing}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn leads_are_stored_and_read_back_on_sqlite() {
    let server = TestServer::start(&fixtures("leads")).await;
    leads_are_stored_and_read_back(&server).await;
}

#[tokio::test]
async fn leads_are_stored_and_read_back_on_postgres() {
    let Some(database) = database("leads_are_stored_and_read_back_on_postgres").await else {
        return;
    };
    let store = PostgresStore::connect(&database.url)
        .await
        .expect("the test database opens");
    // The test server opens a SQLite file; the engine runs on the Postgres store instead.
    let server =
        TestServer::start_with_store(&fixtures("leads"), TestOptions::default(), move |_sqlite| {
            Arc::new(store)
        })
        .await;
    leads_are_stored_and_read_back(&server).await;
    // The server goes before its database.
    drop(server);
    drop(database);
}

//! Group commit under a write the database refuses, end to end: under concurrent load, the
//! database refuses some nodes' outcomes (a trigger the test installs), while those writes
//! share their transactions with other runs' writes. Each refused attempt fails alone, with the
//! database's reason, and its run fails per `on_error`; no other run notices: each succeeds
//! with every node run to success exactly once, and nothing is left open on disk.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};

use crate::support::{TaggedAnswer, TestServer, fixtures, post_tags};

const CLIENTS: usize = 16;
const RUNS_PER_CLIENT: usize = 12;

/// Every 5th run carries the tag the database refuses.
fn tag(client: usize, n: usize) -> String {
    if (client * RUNS_PER_CLIENT + n).is_multiple_of(5) {
        format!("poison-{client}-{n}")
    } else {
        format!("clean-{client}-{n}")
    }
}

#[tokio::test]
async fn a_refused_write_fails_its_attempt_alone_and_the_runs_sharing_its_commit_succeed() {
    let server = TestServer::start(&fixtures("poisoned_batch")).await;
    let url = format!("sqlite://{}", server.database.display());
    let mut sql = SqliteConnection::connect(&url).await.expect("connection");
    sqlx::query(
        "CREATE TRIGGER refuse_poison BEFORE UPDATE OF status ON node_attempts
         WHEN NEW.output LIKE '%poison%'
         BEGIN SELECT RAISE(ABORT, 'the test refuses this write'); END",
    )
    .execute(&mut sql)
    .await
    .expect("trigger");

    let answers = post_tags(&server, "/hooks/tagged", CLIENTS, RUNS_PER_CLIENT, tag).await;

    let mut refused = 0;
    for TaggedAnswer {
        tag, status, body, ..
    } in &answers
    {
        let body: Value = serde_json::from_str(body).expect("JSON");
        if tag.starts_with("clean") {
            assert_eq!(*status, StatusCode::OK, "{tag}: {body}");
            assert_eq!(body, json!(format!("{tag}-done")), "{tag}");
            continue;
        }
        refused += 1;
        assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR, "{tag}: {body}");
        let run_id = body["run_id"].as_str().expect("a run id");
        let run = server
            .engine
            .run_json(run_id)
            .await
            .expect("the store answers")
            .expect("the run");
        let first = &run["nodes"]["first"];
        assert_eq!(first["status"], json!("failed"), "{run:#}");
        assert_eq!(first["error"]["kind"], json!("engine"), "{run:#}");
        let message = first["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("the test refuses this write"), "{message}");
        assert_eq!(
            first["attempts"],
            json!(1),
            "failed once, not retried: {run:#}"
        );
    }
    assert_eq!(refused, CLIENTS * RUNS_PER_CLIENT / 5 + 1);

    // The disk agrees: nothing open, and no node succeeded twice.
    let open = count(
        &mut sql,
        "SELECT count(*) FROM node_attempts WHERE status IN ('pending', 'queued', 'running')",
    )
    .await;
    assert_eq!(open, 0);
    let twice = count(
        &mut sql,
        "SELECT count(*) FROM (SELECT run_id, node_id FROM node_attempts
         WHERE status = 'succeeded' GROUP BY run_id, node_id HAVING count(*) > 1)",
    )
    .await;
    assert_eq!(twice, 0);
    let succeeded = count(
        &mut sql,
        "SELECT count(*) FROM runs WHERE status = 'succeeded'",
    )
    .await;
    assert_eq!(succeeded as usize, answers.len() - refused);
}

async fn count(sql: &mut SqliteConnection, query: &'static str) -> i64 {
    sqlx::query_scalar(query)
        .fetch_one(sql)
        .await
        .expect("count")
}

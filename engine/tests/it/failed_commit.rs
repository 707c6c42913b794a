//! The poison rule end to end: under concurrent load, the SQLite writer's COMMIT fails for every
//! batch that holds a "poison" node outcome (a trigger the test installs violates a deferred
//! foreign key, which SQLite checks at COMMIT), so each such batch, and every other run's write
//! in it, is rolled back. Nothing answered is lost: a webhook whose run was rolled back gets 503,
//! and every run acknowledged otherwise finishes once the commits work again, each node
//! succeeding exactly once, with the engine's view (memory) and the disk agreeing.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};

use crate::support::{TaggedAnswer, TestServer, fixtures, post_tags};

const CLIENTS: usize = 16;
const RUNS_PER_CLIENT: usize = 10;

/// Every 4th run carries the tag whose outcome breaks its batch's commit.
fn tag(client: usize, n: usize) -> String {
    if (client * RUNS_PER_CLIENT + n).is_multiple_of(4) {
        format!("poison-{client}-{n}")
    } else {
        format!("clean-{client}-{n}")
    }
}

#[tokio::test]
async fn a_failed_commit_loses_nothing_acknowledged_and_the_runs_finish_once_it_works() {
    let server = TestServer::start(&fixtures("poisoned_batch")).await;
    let url = format!("sqlite://{}", server.database.display());
    let mut sql = SqliteConnection::connect(&url).await.expect("connection");
    for statement in [
        "CREATE TABLE commit_parent (id TEXT PRIMARY KEY)",
        "CREATE TABLE commit_fuse (parent TEXT
             REFERENCES commit_parent (id) DEFERRABLE INITIALLY DEFERRED)",
        "CREATE TRIGGER break_commit AFTER UPDATE OF status ON node_attempts
         WHEN NEW.output LIKE '%poison%'
         BEGIN INSERT INTO commit_fuse VALUES ('missing'); END",
    ] {
        sqlx::query(statement)
            .execute(&mut sql)
            .await
            .expect("the fuse");
    }

    // The commits fail for the first two seconds of the load; then the trigger goes.
    let fuse = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        sqlx::query("DROP TRIGGER break_commit")
            .execute(&mut sql)
            .await
            .expect("the fuse removed");
        chrono::Utc::now()
    };
    let load = post_tags(&server, "/hooks/tagged", CLIENTS, RUNS_PER_CLIENT, tag);
    let (answers, fixed_at) = tokio::join!(load, fuse);

    let mut acknowledged = Vec::new();
    for TaggedAnswer {
        tag,
        status,
        run_id,
        body,
    } in &answers
    {
        match *status {
            // Rolled back with its batch: not acknowledged, nothing promised.
            StatusCode::SERVICE_UNAVAILABLE => {}
            StatusCode::OK => {
                let output: Value = serde_json::from_str(body).expect("JSON");
                assert_eq!(output, json!(format!("{tag}-done")), "{tag}");
                acknowledged.push((tag.clone(), run_id.clone().expect("a run id")));
            }
            // Acknowledged, still running when the webhook stopped waiting.
            StatusCode::ACCEPTED | StatusCode::GATEWAY_TIMEOUT => {
                acknowledged.push((tag.clone(), run_id.clone().expect("a run id")));
            }
            other => panic!("{tag}: {other} {body}"),
        }
    }

    // Every acknowledged run finishes, as it should have, once commits work again.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut poisoned_late = 0;
    for (tag, run_id) in &acknowledged {
        let run = loop {
            let run = server
                .engine
                .run_json(run_id)
                .await
                .expect("the store answers")
                .expect("an acknowledged run exists");
            if run["status"] != json!("running") || Instant::now() > deadline {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(run["status"], json!("succeeded"), "{tag}: {run:#}");
        assert_eq!(
            run["output"],
            json!(format!("{tag}-done")),
            "{tag}: {run:#}"
        );
        let time = |value: &Value| {
            value
                .as_str()
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .expect("a time")
        };
        if tag.starts_with("poison") && time(&run["created_at"]) < fixed_at {
            // Its first outcome could not be committed while the trigger was there.
            let finished = time(&run["nodes"]["first"]["finished_at"]);
            assert!(finished >= fixed_at, "{tag}: {run:#}");
            poisoned_late += 1;
        }
    }
    assert!(poisoned_late > 0, "no poisoned run was acknowledged");

    // The disk agrees: nothing open, no node succeeded twice, and every acknowledged run is
    // there, succeeded.
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM node_attempts WHERE status IN ('pending', 'queued', 'running')",
    )
    .fetch_one(&mut sql)
    .await
    .expect("count");
    assert_eq!(open, 0);
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT run_id, node_id FROM node_attempts
         WHERE status = 'succeeded' GROUP BY run_id, node_id HAVING count(*) > 1)",
    )
    .fetch_one(&mut sql)
    .await
    .expect("count");
    assert_eq!(twice, 0);
    // A run whose creation was rolled back (503) is not there at all.
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE status <> 'succeeded'")
            .fetch_one(&mut sql)
            .await
            .expect("count");
    assert_eq!(unfinished, 0);
    for (tag, run_id) in &acknowledged {
        let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_one(&mut sql)
            .await
            .expect("an acknowledged run is on disk");
        assert_eq!(status, "succeeded", "{tag}");
    }
}

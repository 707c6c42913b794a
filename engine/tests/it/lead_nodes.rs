//! The lead nodes (`enrich.email`, `score.rules`, `score.weighted`) in a real run: their `with`
//! blocks are assembled by templates from the trigger and upstream outputs, and their outputs
//! drive `if:` conditions downstream. Load-time rejection of bad configuration is covered by
//! `tests/fixtures/workflows/invalid/lead_nodes.yaml` (see `validate.rs`).

use enrichflow::oneshot;
use enrichflow::store::RunStatus;
use enrichflow_nodes::Secrets;
use serde_json::{Value, json};

use crate::support::{fixtures, install_crypto};

/// Runs `lead-nodes/score.yaml` with `body`; returns the run's output after checking it
/// succeeded.
async fn score(body: Value) -> Value {
    install_crypto();
    let file = fixtures("lead-nodes").join("score.yaml");
    let (run, status) = oneshot::run_file(&file, body, Secrets::default())
        .await
        .expect("the run happens");
    assert_eq!(status, RunStatus::Succeeded, "{run:#}");
    run["output"].clone()
}

#[tokio::test]
async fn a_strong_lead_from_a_company_domain_is_hot() {
    let output = score(json!({
        "email": "  Ada.Lovelace@Analytical-Engines.DE ",
        "company": {"size": 500, "country": "DE"},
        "activity": {"pages_viewed": 12, "demo_requested": true, "propensity": 0.8},
    }))
    .await;
    assert_eq!(
        output["email"]["email"],
        "ada.lovelace@analytical-engines.de"
    );
    assert_eq!(output["email"]["valid"], true);
    assert_eq!(output["fit"]["score"], json!(100.0));
    // 100×0.5 + 100×0.4 + 80×0.1
    assert_eq!(output["score"]["total"], json!(98.0));
    assert_eq!(output["score"]["tier"], "hot");
    assert_eq!(output["score"]["breakdown"]["ml"]["score"], json!(80.0));
    assert_eq!(
        output["score"]["breakdown"]["firmographic"]["source"],
        "value"
    );
    assert_eq!(
        output["alert"],
        "Hot lead ada.lovelace@analytical-engines.de (98.0)"
    );
}

#[tokio::test]
async fn a_free_mail_role_address_scores_low_and_raises_no_alert() {
    let output = score(json!({
        "email": "info@gmail.com",
        "company": {"size": 500, "country": "FR"},
        "activity": {"pages_viewed": 10},
    }))
    .await;
    assert_eq!(output["email"]["free_mail"], true);
    assert_eq!(output["email"]["role"], true);
    // 60 − 40 − 20
    assert_eq!(output["fit"]["score"], json!(0.0));
    assert_eq!(output["fit"]["points"], json!(0.0));
    // 0×0.5 + 70×0.4 + 50 (the default)×0.1
    assert_eq!(output["score"]["total"], json!(33.0));
    assert_eq!(output["score"]["tier"], "cold");
    assert_eq!(output["alert"], Value::Null);
}

#[tokio::test]
async fn an_invalid_address_is_an_answer_not_a_failure() {
    let output = score(json!({"email": "ada at example.com"})).await;
    assert_eq!(output["email"]["valid"], false);
    assert_eq!(output["email"]["reason"], "missing_at");
    assert_eq!(
        output["fit"],
        json!({"score": 0.0, "points": 0.0, "matched": []})
    );
    assert_eq!(output["score"]["total"], json!(5.0));
    assert_eq!(output["score"]["tier"], "cold");
}

//! Hostile HTTP clients against a real server (issue 8): bodies nested too deep or holding too
//! many values, a huge announced `Content-Length`, bodies and headers sent slowly, more
//! connections than the cap. Each ends as a clear 4xx or a closed connection, and `/healthz`
//! keeps answering. Timeouts are configured short so that each test takes about a second.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestOptions, TestServer, fixtures};

/// Longest any answer here may take; the limits under test are far shorter.
const PROMPT: Duration = Duration::from_secs(10);

/// Long enough for any fixture run on a loaded CI machine; a healthy run takes milliseconds.
const FINISH: Duration = Duration::from_secs(20);

async fn start_with(options: TestOptions) -> TestServer {
    TestServer::start_with(&fixtures("api"), options).await
}

/// `depth` arrays nested in one another around `1`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

async fn post_raw(server: &TestServer, path: &str, body: String) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn healthz(server: &TestServer) -> StatusCode {
    // A client of its own, so the request opens a new connection.
    let client = reqwest::Client::builder()
        .timeout(PROMPT)
        .build()
        .expect("a client");
    client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("/healthz answers")
        .status()
}

async fn runs_list_status(server: &TestServer) -> StatusCode {
    let response = server.client.get(server.url("/api/v1/runs")).send().await;
    let response = response.expect("the list answers");
    let status = response.status();
    let body: Value = response.json().await.expect("the list is JSON");
    assert!(body["runs"].is_array(), "{body:#}");
    status
}

/// Reads what the server sends until it closes the connection, within [`PROMPT`].
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PROMPT, stream.read_to_end(&mut received)).await;
    assert!(
        read.is_ok(),
        "the server did not close the connection in time"
    );
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn bodies_nested_127_or_126_deep_are_refused_and_the_runs_list_still_works() {
    let server = start_with(TestOptions::default()).await;
    for depth in [127, 126, 65] {
        for path in ["/hooks/intake", "/api/v1/workflows/intake/runs"] {
            let (status, body) = post_raw(&server, path, nested(depth)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{depth} {path}: {body:#}");
            assert_eq!(body["error"]["code"], "json_too_deep", "{body:#}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("64"),
                "the message names the limit: {message}"
            );
        }
    }
    assert_eq!(runs_list_status(&server).await, StatusCode::OK);

    // The deepest body accepted is stored, run and read back whole.
    let (status, body) = post_raw(&server, "/hooks/intake", nested(64)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body:#}");
    let run_id = body["run_id"].as_str().expect("a run id").to_owned();
    let run = server
        .engine
        .wait(&run_id, FINISH)
        .await
        .expect("the store");
    assert!(run.is_some(), "the run finished");
    let shown = server
        .client
        .get(server.url(&format!("/api/v1/runs/{run_id}")))
        .send()
        .await
        .expect("the run answers");
    assert_eq!(shown.status(), StatusCode::OK);
    let shown: Value = shown.json().await.expect("the run is JSON");
    assert_eq!(shown["status"], "succeeded", "{shown:#}");
    let expected: Value = serde_json::from_str(&nested(64)).expect("JSON");
    assert_eq!(shown["trigger"]["body"], expected);
    assert_eq!(runs_list_status(&server).await, StatusCode::OK);
}

#[tokio::test]
async fn a_body_with_more_values_than_the_budget_is_413() {
    let mut options = TestOptions::default();
    options.api.json.max_values = 1000;
    let server = start_with(options).await;
    let many = format!("[{}0]", "0,".repeat(1000));
    let (status, body) = post_raw(&server, "/hooks/intake", many).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body:#}");
    assert_eq!(body["error"]["code"], "json_too_large", "{body:#}");
    let fewer = format!("[{}0]", "0,".repeat(900));
    let (status, body) = post_raw(&server, "/hooks/intake", fewer).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body:#}");
}

#[tokio::test]
async fn a_huge_announced_length_with_two_bytes_sent_is_answered_413_at_once() {
    let server = start_with(TestOptions::default()).await;
    for path in [
        "/hooks/intake",
        "/api/v1/workflows/intake/runs",
        "/hooks/nowhere",
    ] {
        let mut stream = TcpStream::connect(server.addr).await.expect("connects");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: 99999999999\r\n\r\n{{}}"
        );
        stream.write_all(request.as_bytes()).await.expect("sends");
        let answer = read_until_closed(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
    }
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_answered_408() {
    let mut options = TestOptions::default();
    options.api.body_read_timeout = Duration::from_millis(300);
    let server = start_with(options).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    let request = "POST /hooks/intake HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n{}";
    stream.write_all(request.as_bytes()).await.expect("sends");
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
}

#[tokio::test]
async fn request_headers_over_64_kib_are_431() {
    let server = start_with(TestOptions::default()).await;
    let answer = server
        .client
        .get(server.url("/healthz"))
        .header("x-padding", "p".repeat(70 * 1024))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(answer.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(healthz(&server).await, StatusCode::OK);
}

#[tokio::test]
async fn a_client_sending_headers_slowly_is_dropped_while_healthz_answers() {
    let mut options = TestOptions::default();
    options.api.server.header_read_timeout = Duration::from_millis(300);
    let server = start_with(options).await;
    let mut slow = TcpStream::connect(server.addr).await.expect("connects");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .expect("sends");
    assert_eq!(healthz(&server).await, StatusCode::OK);
    let answer = read_until_closed(&mut slow).await;
    assert!(!answer.contains("200 OK"), "never served: {answer}");
    assert_eq!(healthz(&server).await, StatusCode::OK);
}

#[tokio::test]
async fn connections_over_the_cap_are_served_once_the_slow_ones_time_out() {
    let mut options = TestOptions::default();
    // Long enough for the second request on the open connection to come before its idle
    // timeout even on a loaded machine.
    options.api.server.header_read_timeout = Duration::from_secs(1);
    options.api.server.max_connections = 3;
    let server = start_with(options).await;

    // One connection in use, kept alive.
    let mut open = TcpStream::connect(server.addr).await.expect("connects");
    let probe = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    open.write_all(probe).await.expect("sends");
    let mut received = Vec::new();
    read_answers(&mut open, &mut received, 1).await;

    // Two that send nothing fill the cap.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(server.addr).await.expect("connects"));
    }
    // The open connection is still served (its next request comes before its idle timeout).
    open.write_all(probe).await.expect("sends");
    read_answers(&mut open, &mut received, 2).await;

    // A new connection waits for a slot, which the silent ones free when they time out.
    assert_eq!(healthz(&server).await, StatusCode::OK);
    for mut stream in silent {
        let answer = read_until_closed(&mut stream).await;
        assert!(answer.is_empty(), "nothing was asked: {answer}");
    }
    // The kept-alive connection is closed once idle for the header timeout.
    let rest = read_until_closed(&mut open).await;
    assert!(!rest.contains("HTTP/1.1"), "no further answer: {rest}");
}

/// Reads from a kept-alive connection until `received` holds `n` answers of 200.
async fn read_answers(stream: &mut TcpStream, received: &mut Vec<u8>, n: usize) {
    let answers = |received: &[u8]| {
        let text = String::from_utf8_lossy(received);
        text.matches("HTTP/1.1 200 OK").count()
    };
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(PROMPT, async {
        while answers(received) < n {
            let count = stream.read(&mut buffer).await.expect("reads");
            assert!(
                count > 0,
                "closed early: {}",
                String::from_utf8_lossy(received)
            );
            received.extend_from_slice(buffer.get(..count).unwrap_or_default());
        }
    })
    .await;
    assert!(read.is_ok(), "no answer in time");
}

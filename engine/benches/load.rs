//! A closed-loop HTTP load generator, run out of process against a real `enrichflow serve`:
//! each client keeps one keep-alive connection and sends its next request when the previous
//! answer has arrived. It reports runs/s, p50/p90/p99/max latency, failures, its own CPU time
//! and, for the processes named with `--proc`, their CPU time over the same window, so that
//! "CPU µs per run" is measured over exactly the requests that are counted.
//!
//! ```text
//! cargo bench -p enrichflow --bench load -- --url http://127.0.0.1:8080/hooks/bench \
//!     --clients 16 --seconds 10 --warmup 2 --body '{"n":1}' [--proc serve=PID] [--json]
//! ```
//!
//! Without `--body` it sends GET (for `/healthz`, the HTTP floor). Requests that complete during
//! the warm-up or after the window are not counted in the rates, but are in `ok_total`, the
//! number to compare with the runs the database holds. CPU times come from `/proc/PID/stat`
//! (utime + stime, 10 ms ticks; the workspace forbids the `unsafe` a `getrusage` call needs).
//! `engine/benches/fastpath/run.sh` drives it; see docs/benchmarks.md.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hyper::body::Body;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Linux reports process CPU time in USER_HZ ticks, fixed at 100 on every architecture it
/// exports to user space the same way (`sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Parser)]
#[command(about = "Closed-loop HTTP load generator for enrichflow benchmarks")]
struct Options {
    /// The URL to load, `http://HOST:PORT/PATH`.
    #[arg(long)]
    url: String,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Length of the warm-up before it, not counted.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A JSON body to POST; without it, GET. `{n}` in it is replaced by a per-request counter.
    #[arg(long)]
    body: Option<String>,
    /// Runtime threads of the generator (1: a current-thread runtime, the cheapest).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// `NAME=SPEC` whose CPU time over the window to report; SPEC is a comma-separated list of
    /// pids, `user:NAME` (every process of that user), `comm:NAME` (every process so named) or
    /// `cmdline:TEXT` (every process whose command line contains TEXT); `&` joins conditions
    /// (`comm:postgres&cmdline:DB`: the Postgres backends of one database). Repeat the flag for
    /// several names.
    #[arg(long = "proc")]
    processes: Vec<String>,
    /// A label echoed in the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let runtime = if options.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(run(&options))?;
    if options.json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    Ok(())
}

/// What a client saw: the completion instant and latency of each 2xx answer, and the rest.
#[derive(Default)]
struct ClientLog {
    completions: Vec<(Instant, Duration)>,
    status_200: u64,
    non_2xx: u64,
    errors: u64,
}

/// Where to connect and what to send.
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    body: Option<String>,
}

async fn run(options: &Options) -> anyhow::Result<Value> {
    let target = Arc::new(parse_target(&options.url, options.body.clone()).await?);
    let processes = options
        .processes
        .iter()
        .map(|spec| ProcessGroup::parse(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let window_start = started + Duration::from_secs_f64(options.warmup);
    let window_end = window_start + Duration::from_secs_f64(options.seconds);

    // The CPU samples are taken by a plain thread at the window's edges, so that a busy runtime
    // cannot delay them; the instants it records bound the completions that count.
    let sampler = std::thread::spawn(move || sample_window(window_start, window_end, processes));
    let mut clients = Vec::new();
    for index in 0..options.clients {
        let target = target.clone();
        clients.push(tokio::spawn(client(target, index, window_end)));
    }
    let mut logs = Vec::new();
    for handle in clients {
        logs.push(handle.await??);
    }
    let samples = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the CPU sampler panicked"))??;
    Ok(summarise(options, &logs, &samples))
}

async fn parse_target(url: &str, body: Option<String>) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (host, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let addr = tokio::net::lookup_host(host)
        .await?
        .next()
        .with_context(|| format!("{host} does not resolve"))?;
    Ok(Target {
        addr,
        host: host.to_owned(),
        path: path.to_owned(),
        body,
    })
}

/// One closed-loop client: (re)connects, sends, reads the whole answer, repeats until `end`.
async fn client(target: Arc<Target>, index: usize, end: Instant) -> anyhow::Result<ClientLog> {
    let mut log = ClientLog::default();
    let mut sender = None;
    let mut n = index as u64;
    while Instant::now() < end {
        let mut connection = match sender.take() {
            Some(connection) => connection,
            None => match connect(&target).await {
                Ok(connection) => connection,
                Err(_) => {
                    log.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match exchange(&mut connection, &target, n).await {
            Ok(status) if (200..300).contains(&status) => {
                let done = Instant::now();
                log.completions.push((done, done - sent));
                if status == 200 {
                    log.status_200 += 1;
                }
                sender = Some(connection);
            }
            Ok(_) => {
                log.non_2xx += 1;
                sender = Some(connection);
            }
            Err(_) => log.errors += 1,
        }
        n += 1 << 20;
    }
    Ok(log)
}

async fn connect(target: &Target) -> anyhow::Result<http1::SendRequest<String>> {
    let stream = tokio::net::TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and drains the answer; returns its status.
async fn exchange(
    sender: &mut http1::SendRequest<String>,
    target: &Target,
    n: u64,
) -> anyhow::Result<u16> {
    sender.ready().await?;
    let builder = hyper::Request::builder()
        .uri(target.path.as_str())
        .header(hyper::header::HOST, target.host.as_str());
    let request = match &target.body {
        Some(body) => builder
            .method(hyper::Method::POST)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(body.replace("{n}", &n.to_string()))?,
        None => builder.method(hyper::Method::GET).body(String::new())?,
    };
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(frame) = poll_fn(|context| Pin::new(&mut body).poll_frame(context)).await {
        frame?;
    }
    Ok(status)
}

/// Processes whose CPU time is summed under one name.
struct ProcessGroup {
    name: String,
    members: Vec<Member>,
}

impl ProcessGroup {
    fn parse(spec: &str) -> anyhow::Result<ProcessGroup> {
        let Some((name, list)) = spec.split_once('=') else {
            bail!("--proc wants NAME=SPEC, got `{spec}`");
        };
        let members = list
            .split(',')
            .filter(|item| !item.is_empty())
            .map(Member::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ProcessGroup {
            name: name.to_owned(),
            members,
        })
    }

    /// CPU seconds of the group now: its processes' own time plus that of their reaped children,
    /// so that a child ending between two samples is still counted when its parent is a member.
    fn cpu_seconds(&self) -> f64 {
        let mut ticks = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if self.members.iter().any(|member| member.matches(pid)) {
                ticks += process_ticks(pid).unwrap_or(0);
            }
        }
        ticks as f64 / TICKS_PER_SECOND
    }
}

/// One item of a `--proc` list: processes that meet every condition joined by `&`.
struct Member {
    conditions: Vec<Condition>,
}

enum Condition {
    Pid(u32),
    User(u32),
    Command(String),
    CommandLine(String),
}

impl Member {
    fn parse(item: &str) -> anyhow::Result<Member> {
        let conditions = item
            .split('&')
            .map(Condition::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Member { conditions })
    }

    fn matches(&self, pid: u32) -> bool {
        self.conditions
            .iter()
            .all(|condition| condition.matches(pid))
    }
}

impl Condition {
    fn parse(item: &str) -> anyhow::Result<Condition> {
        if let Some(user) = item.strip_prefix("user:") {
            return Ok(Condition::User(user_id(user)?));
        }
        if let Some(command) = item.strip_prefix("comm:") {
            return Ok(Condition::Command(command.to_owned()));
        }
        if let Some(text) = item.strip_prefix("cmdline:") {
            return Ok(Condition::CommandLine(text.to_owned()));
        }
        Ok(Condition::Pid(item.parse().with_context(|| {
            format!("`{item}` is not a pid, user:NAME, comm:NAME or cmdline:TEXT")
        })?))
    }

    fn matches(&self, pid: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        match self {
            Condition::Pid(wanted) => pid == *wanted,
            Condition::User(uid) => std::fs::metadata(format!("/proc/{pid}"))
                .is_ok_and(|metadata| metadata.uid() == *uid),
            Condition::Command(command) => std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == command),
            Condition::CommandLine(text) => std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(text.as_str())),
        }
    }
}

fn user_id(user: &str) -> anyhow::Result<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&user))
        .and_then(|fields| fields.get(2)?.parse().ok())
        .with_context(|| format!("no user {user}"))
}

/// utime + stime + cutime + cstime of one process, in ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14–17 of stat(5), counted from 1 with pid and comm as 1 and 2.
    (11..15)
        .map(|index| fields.get(index)?.parse::<u64>().ok())
        .sum()
}

/// CPU readings at the two edges of the window.
struct WindowSamples {
    start: Instant,
    end: Instant,
    own_cpu: f64,
    processes: Vec<(String, f64)>,
}

fn sample_window(
    start: Instant,
    end: Instant,
    processes: Vec<ProcessGroup>,
) -> anyhow::Result<WindowSamples> {
    let read = |processes: &[ProcessGroup]| -> anyhow::Result<(Instant, f64, Vec<f64>)> {
        let own = process_ticks(std::process::id()).context("cannot read /proc/self/stat")?;
        let groups = processes.iter().map(ProcessGroup::cpu_seconds).collect();
        Ok((Instant::now(), own as f64 / TICKS_PER_SECOND, groups))
    };
    sleep_until(start);
    let (start, own_before, groups_before) = read(&processes)?;
    sleep_until(end);
    let (end, own_after, groups_after) = read(&processes)?;
    let processes = processes
        .iter()
        .zip(groups_before.iter().zip(&groups_after))
        .map(|(group, (before, after))| (group.name.clone(), after - before))
        .collect();
    Ok(WindowSamples {
        start,
        end,
        own_cpu: own_after - own_before,
        processes,
    })
}

/// The sampler is a plain thread, not a runtime task, so a blocking sleep is what it needs.
#[allow(clippy::disallowed_methods)]
fn sleep_until(instant: Instant) {
    std::thread::sleep(instant.saturating_duration_since(Instant::now()));
}

fn summarise(options: &Options, logs: &[ClientLog], samples: &WindowSamples) -> Value {
    let mut latencies: Vec<Duration> = logs
        .iter()
        .flat_map(|log| &log.completions)
        .filter(|(done, _)| (samples.start..samples.end).contains(done))
        .map(|(_, latency)| *latency)
        .collect();
    latencies.sort_unstable();
    let window = (samples.end - samples.start).as_secs_f64();
    let ok = latencies.len() as f64;
    let per_request_us = |seconds: f64| {
        if ok > 0.0 { seconds * 1e6 / ok } else { 0.0 }
    };
    let processes: serde_json::Map<String, Value> = samples
        .processes
        .iter()
        .map(|(name, seconds)| {
            let figures = json!({ "cpu_s": seconds, "cpu_us_per_req": per_request_us(*seconds) });
            (name.clone(), figures)
        })
        .collect();
    let total = |field: fn(&ClientLog) -> u64| logs.iter().map(field).sum::<u64>();
    json!({
        "label": options.label,
        "url": options.url,
        "clients": options.clients,
        "window_s": window,
        "ok": latencies.len(),
        "ok_total": total(|log| log.completions.len() as u64),
        "status_200_total": total(|log| log.status_200),
        "non_2xx_total": total(|log| log.non_2xx),
        "errors_total": total(|log| log.errors),
        "per_s": ok / window,
        "p50_ms": percentile_ms(&latencies, 0.50),
        "p90_ms": percentile_ms(&latencies, 0.90),
        "p99_ms": percentile_ms(&latencies, 0.99),
        "max_ms": latencies.last().map_or(0.0, |max| max.as_secs_f64() * 1e3),
        "generator_cpu_s": samples.own_cpu,
        "generator_cpu_us_per_req": per_request_us(samples.own_cpu),
        "processes": processes,
    })
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

fn print_text(report: &Value) {
    let number = |key: &str| report[key].as_f64().unwrap_or(0.0);
    println!(
        "{} {} clients: {:.0}/s over {:.1} s; p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         non-2xx {}, errors {}; generator CPU {:.0} µs/req",
        report["url"].as_str().unwrap_or(""),
        report["clients"],
        number("per_s"),
        number("window_s"),
        number("p50_ms"),
        number("p90_ms"),
        number("p99_ms"),
        number("max_ms"),
        report["non_2xx_total"],
        report["errors_total"],
        number("generator_cpu_us_per_req"),
    );
    if let Some(processes) = report["processes"].as_object() {
        for (name, figures) in processes {
            println!(
                "  {name}: {:.2} CPU-s, {:.0} µs/req",
                figures["cpu_s"].as_f64().unwrap_or(0.0),
                figures["cpu_us_per_req"].as_f64().unwrap_or(0.0)
            );
        }
    }
}

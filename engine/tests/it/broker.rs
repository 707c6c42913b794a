//! A private RabbitMQ node for tests that stop, kill and restart the broker while tasks are on
//! it. The shared broker at `ENRICHFLOW_TEST_AMQP_URL` serves other tests in parallel and is never
//! touched; the variable only says that RabbitMQ is installed and wanted, as `.ci/run` sets it.
//!
//! A [`PrivateBroker`] runs the installed `rabbitmq-server` (the Debian package's
//! `/usr/lib/rabbitmq` unless `ENRICHFLOW_TEST_RABBITMQ_HOME` names another installation) as a
//! child process under a node name of its own, on free ports, with its configuration, cookie,
//! data and logs in one temporary folder, so a restart keeps durable queues and persistent
//! messages. For a fast boot (2 to 3 s on two idle cores) it loads only the Erlang applications the
//! `rabbit` application needs, no plugin, and a classic `.config` file (no cuttlefish schemas).
//! Dropping it kills the node and deletes the folder, also when the test panics.
//!
//! To look inside a running node, with its folder `D` (printed at start):
//! `HOME=D /usr/lib/rabbitmq/bin/rabbitmqctl -n <node> list_queues` (not `/usr/sbin/rabbitmqctl`,
//! which switches to the `rabbitmq` user and so to that user's cookie).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use enrichflow::queue::{AmqpOptions, AmqpQueue, Queue};
use enrichflow::store::AttemptKey;
use lapin::{Connection, ConnectionProperties};

const URL_VARIABLE: &str = "ENRICHFLOW_TEST_AMQP_URL";
const INSTALLATION_VARIABLE: &str = "ENRICHFLOW_TEST_RABBITMQ_HOME";
const DEFAULT_INSTALLATION: &str = "/usr/lib/rabbitmq";
/// Time allowed for a boot, on a loaded two-core machine.
const BOOT_PATIENCE: Duration = Duration::from_secs(60);
/// Time allowed for a graceful shutdown (about 1 s).
const STOP_PATIENCE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(25);
/// Ports are drawn below Linux's ephemeral range (32768 and up), so that no outgoing connection
/// takes a port while its node is down between a stop and a start.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Ports handed out by this process, never handed out twice: a port of a stopped node looks
/// free but is not.
static TAKEN_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A RabbitMQ node of one test, at [`PrivateBroker::url`]; see the module documentation.
pub struct PrivateBroker {
    /// Everything of the node: configuration, cookie, data, logs.
    folder: PathBuf,
    /// `enrichflow_it_<uuid>@localhost`.
    node: String,
    port: u16,
    dist_port: u16,
    /// The node's VM (`rabbitmq-server` replaces itself with it) while it runs.
    process: Mutex<Option<Child>>,
}

impl PrivateBroker {
    /// A fresh node accepting AMQP, or `None` (after saying so) when `ENRICHFLOW_TEST_AMQP_URL`
    /// is unset. Panics when RabbitMQ is wanted but not installed or does not boot.
    pub async fn start() -> Option<PrivateBroker> {
        if std::env::var_os(URL_VARIABLE).is_none() {
            println!("skipped: {URL_VARIABLE} is not set");
            return None;
        }
        let installation = Installation::find();
        let id = uuid::Uuid::now_v7().simple();
        let folder = std::env::temp_dir().join(format!("enrichflow-rabbitmq-{id}"));
        let broker = PrivateBroker {
            node: format!("enrichflow_it_{id}@localhost"),
            port: free_port(),
            dist_port: free_port(),
            process: Mutex::new(None),
            folder,
        };
        // From here on, a panic drops `broker`, which removes the folder.
        broker.prepare(&installation);
        println!(
            "private RabbitMQ {} on port {} in {}",
            broker.node,
            broker.port,
            broker.folder.display()
        );
        broker.start_again().await;
        Some(broker)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` (`guest` may log in from localhost only).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the node gracefully (SIGTERM, as a service manager does) and waits until it has
    /// exited. Its data stays for [`PrivateBroker::start_again`].
    pub async fn stop(&self) {
        let began = Instant::now();
        let mut child = self.take_running("stop");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        let exited = loop {
            if let Some(status) = child.try_wait().expect("the node's status") {
                break status;
            }
            if began.elapsed() > STOP_PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "RabbitMQ did not stop within {STOP_PATIENCE:?}; killed it\n{}",
                    self.diagnostics()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        assert!(
            exited.success(),
            "RabbitMQ stopped with {exited}\n{}",
            self.diagnostics()
        );
        println!("private RabbitMQ stopped in {:?}", began.elapsed());
    }

    /// Kills the node (SIGKILL): no shutdown at all, as in a crash or an out-of-memory kill.
    /// What RabbitMQ confirmed is on disk and stays for [`PrivateBroker::start_again`].
    pub async fn kill(&self) {
        let mut child = self.take_running("kill");
        child.kill().expect("SIGKILL the node");
        while child.try_wait().expect("the node's status").is_none() {
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts the stopped (or killed) node again, same port, same data, and waits until it
    /// accepts AMQP connections.
    pub async fn start_again(&self) {
        let began = Instant::now();
        let child = self.spawn();
        {
            let mut process = self.process();
            assert!(process.is_none(), "the private RabbitMQ is already running");
            *process = Some(child);
        }
        self.await_amqp(began).await;
        println!("private RabbitMQ up in {:?}", began.elapsed());
    }

    /// [`PrivateBroker::stop`] then [`PrivateBroker::start_again`].
    pub async fn restart(&self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Writes the folder: configuration, cookie, and an installation reduced to what the
    /// `rabbit` application needs.
    fn prepare(&self, installation: &Installation) {
        let sbin = self.folder.join("home/sbin");
        let plugins = self.folder.join("home/plugins");
        for folder in [&sbin, &plugins, &self.folder.join("data")] {
            std::fs::create_dir_all(folder).expect("create the broker's folders");
        }
        // The scripts find the rest of the installation next to themselves (`../plugins`).
        for script in ["rabbitmq-server", "rabbitmq-env", "rabbitmq-defaults"] {
            symlink(installation.scripts.join(script), sbin.join(script))
                .expect("link a RabbitMQ script");
        }
        for application in installation.rabbit_closure() {
            let name = application.file_name().expect("a folder name");
            symlink(&application, plugins.join(name)).expect("link an Erlang application");
        }
        // Classic Erlang-term configuration: no cuttlefish schema translation at boot.
        let config = format!(
            "[{{rabbit, [{{tcp_listeners, [{{\"127.0.0.1\", {}}}]}}]}}].\n",
            self.port
        );
        std::fs::write(self.folder.join("rabbitmq.config"), config).expect("write the config");
        std::fs::write(self.folder.join("enabled_plugins"), "[].\n")
            .expect("write the enabled plugins");
        // The node and any `rabbitmqctl` run with HOME set to the folder share this cookie.
        let mut cookie = File::options()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(self.folder.join(".erlang.cookie"))
            .expect("create the Erlang cookie");
        cookie
            .write_all(format!("{:032x}", rand::random::<u128>()).as_bytes())
            .expect("write the Erlang cookie");
    }

    /// Starts `rabbitmq-server` in the folder, in the foreground, its output in `server.out`.
    fn spawn(&self) -> Child {
        let folder = &self.folder;
        let output = File::options()
            .create(true)
            .append(true)
            .open(folder.join("server.out"))
            .expect("open the server output");
        let mut command = Command::new(folder.join("home/sbin/rabbitmq-server"));
        // Nothing of the caller's RabbitMQ or Erlang settings.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("RABBITMQ_") || name.starts_with("ERL_") {
                command.env_remove(name.as_ref());
            }
        }
        let at = |path: &str| -> OsString { folder.join(path).into_os_string() };
        command
            .current_dir(folder)
            .env("HOME", folder)
            .env("RABBITMQ_SCRIPTS_DIR", at("home/sbin"))
            .env("RABBITMQ_PLUGINS_DIR", at("home/plugins"))
            // Not /etc/rabbitmq/rabbitmq-env.conf, which names the shared node and its port.
            .env("RABBITMQ_CONF_ENV_FILE", at("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", at("rabbitmq.config"))
            .env("RABBITMQ_CONFIG_FILES", at("conf.d"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", at("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", at("enabled_plugins"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", at("data"))
            .env("RABBITMQ_LOG_BASE", at("log"))
            .env("RABBITMQ_LOGS", at("log/rabbit.log"))
            .env("RABBITMQ_PID_FILE", at("rabbit.pid"))
            // The script then replaces itself with the VM instead of waiting on it, so the child
            // is the node; `-noinput` keeps the VM off stdin anyway, `+B` lets Ctrl-C end it.
            .env("RABBITMQ_ALLOW_INPUT", "true")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-noinput +B -kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("a second handle"))
            .stderr(output);
        command.spawn().expect("rabbitmq-server starts")
    }

    /// Waits until an AMQP connection opens, failing early if the node exits.
    async fn await_amqp(&self, began: Instant) {
        let url = self.url();
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "RabbitMQ exited with {status} while booting\n{}",
                    self.diagnostics()
                );
            }
            let attempt = Connection::connect(&url, ConnectionProperties::default());
            if let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(5), attempt).await
            {
                let _ = connection.close(200, "ready".into()).await;
                return;
            }
            assert!(
                began.elapsed() < BOOT_PATIENCE,
                "RabbitMQ did not accept AMQP within {BOOT_PATIENCE:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The exit status of a node that was running and has exited (and is then forgotten).
    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut process = self.process();
        let status = process
            .as_mut()
            .and_then(|child| child.try_wait().expect("the node's status"));
        if status.is_some() {
            *process = None;
        }
        status
    }

    fn process(&self) -> MutexGuard<'_, Option<Child>> {
        self.process
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_running(&self, what: &str) -> Child {
        self.process()
            .take()
            .unwrap_or_else(|| panic!("cannot {what} the private RabbitMQ: it is not running"))
    }

    /// The ends of the server output and of the node's log, for a failure message.
    fn diagnostics(&self) -> String {
        let mut text = String::new();
        for file in ["server.out", "log/rabbit.log"] {
            let content = std::fs::read_to_string(self.folder.join(file)).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            text.push_str(&format!("--- {file}:\n{tail}\n"));
        }
        text
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // A kill, not a shutdown: the data goes anyway. The VM's helpers (erl_child_setup,
        // inet_gethost) exit when it does.
        if let Some(mut child) = self.process().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Twice, in case the dying node wrote a file while the first pass ran.
        if std::fs::remove_dir_all(&self.folder).is_err() {
            let _ = std::fs::remove_dir_all(&self.folder);
        }
    }
}

/// Where the RabbitMQ scripts and Erlang applications are installed.
struct Installation {
    /// `rabbitmq-server`, `rabbitmq-env` and `rabbitmq-defaults`.
    scripts: PathBuf,
    /// One folder per Erlang application, `<name>-<version>`.
    plugins: PathBuf,
}

impl Installation {
    /// The Debian layout (`bin`, `lib/rabbitmq_server-*/plugins`) or the generic one (`sbin`,
    /// `plugins`) under `ENRICHFLOW_TEST_RABBITMQ_HOME`, by default `/usr/lib/rabbitmq`.
    fn find() -> Installation {
        let root = std::env::var_os(INSTALLATION_VARIABLE)
            .map_or_else(|| PathBuf::from(DEFAULT_INSTALLATION), PathBuf::from);
        let scripts = ["bin", "sbin"]
            .map(|folder| root.join(folder))
            .into_iter()
            .find(|folder| folder.join("rabbitmq-server").is_file());
        let releases = std::fs::read_dir(root.join("lib"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("plugins"));
        let plugins = std::iter::once(root.join("plugins"))
            .chain(releases)
            .find(|folder| folder.is_dir());
        match (scripts, plugins) {
            (Some(scripts), Some(plugins)) => Installation { scripts, plugins },
            _ => panic!(
                "{URL_VARIABLE} is set but RabbitMQ is not installed under {} (the Debian \
                 package rabbitmq-server); set {INSTALLATION_VARIABLE} to its folder",
                root.display()
            ),
        }
    }

    /// The folders of `rabbit` and of every application it needs, directly or not, that the
    /// installation ships (the others are Erlang/OTP's).
    fn rabbit_closure(&self) -> Vec<PathBuf> {
        let mut folders = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(&self.plugins).expect("list the RabbitMQ plugins") {
            let path = entry.expect("a plugins entry").path();
            let name = path.file_name().and_then(|name| name.to_str());
            if let Some((application, _version)) = name.and_then(|name| name.rsplit_once('-'))
                && path.is_dir()
            {
                folders.insert(application.to_owned(), path.clone());
            }
        }
        let mut needed = BTreeSet::new();
        let mut pending = vec!["rabbit".to_owned()];
        while let Some(application) = pending.pop() {
            let Some(folder) = folders.get(&application) else {
                continue;
            };
            if !needed.insert(application.clone()) {
                continue;
            }
            let app_file = folder.join(format!("ebin/{application}.app"));
            let text = std::fs::read_to_string(&app_file)
                .unwrap_or_else(|error| panic!("read {}: {error}", app_file.display()));
            for key in [
                "applications",
                "included_applications",
                "optional_applications",
            ] {
                pending.extend(listed(&text, key));
            }
        }
        assert!(
            needed.contains("rabbit"),
            "no rabbit application in {}",
            self.plugins.display()
        );
        needed.iter().map(|name| folders[name].clone()).collect()
    }
}

/// The atoms of the list `{key, [a, b]}` in an application resource file.
fn listed(app_file: &str, key: &str) -> Vec<String> {
    let mut atoms = Vec::new();
    let mut rest = app_file;
    while let Some(at) = rest.find(key) {
        let before = rest[..at].trim_end();
        rest = &rest[at + key.len()..];
        let Some(list) = rest.trim_start().strip_prefix(',') else {
            continue;
        };
        if !before.ends_with('{') {
            continue;
        }
        if let Some(list) = list.trim_start().strip_prefix('[')
            && let Some(end) = list.find(']')
        {
            atoms.extend(
                list[..end]
                    .split(',')
                    .map(|atom| atom.trim().trim_matches('\'').to_owned())
                    .filter(|atom| !atom.is_empty()),
            );
        }
    }
    atoms
}

/// A port on 127.0.0.1 that nothing listens on and this process has not handed out before.
pub fn free_port() -> u16 {
    let mut taken = TAKEN_PORTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let port = rand::random_range(PORTS);
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}

#[test]
fn application_lists_are_read_from_app_files() {
    let app = "{application, rabbit, [\n\t{applications, [kernel,stdlib,\n  ra , 'rabbit_common']},\n\
               {included_applications,[]},{env, [{applications, x}]}]}.";
    assert_eq!(
        listed(app, "applications"),
        ["kernel", "stdlib", "ra", "rabbit_common"]
    );
    assert!(listed(app, "included_applications").is_empty());
    assert!(listed(app, "optional_applications").is_empty());
}

fn options(url: &str) -> AmqpOptions {
    AmqpOptions {
        connect_timeout: Duration::from_secs(10),
        ..AmqpOptions::new(url)
    }
}

async fn connect(broker: &PrivateBroker) -> AmqpQueue {
    AmqpQueue::connect(options(&broker.url()))
        .await
        .expect("connect to the private RabbitMQ")
}

async fn received(queue: &AmqpQueue) -> AttemptKey {
    let delivery = tokio::time::timeout(Duration::from_secs(10), queue.receive())
        .await
        .expect("a task within 10 s")
        .expect("the queue is open");
    let attempt = delivery.attempt().clone();
    delivery.ack().await;
    attempt
}

#[tokio::test]
async fn persistent_tasks_survive_a_broker_restart_and_a_broker_crash() {
    let Some(broker) = PrivateBroker::start().await else {
        return;
    };
    let before_restart = AttemptKey {
        run_id: "run-before-restart".to_owned(),
        node_id: "fetch_company".to_owned(),
        attempt: 1,
    };
    let queue = connect(&broker).await;
    queue
        .enqueue(before_restart.clone())
        .await
        .expect("enqueue");
    queue.close().await.expect("close");

    broker.restart().await;
    let queue = connect(&broker).await;
    assert_eq!(queue.depth(), 1, "the quorum queue kept the task");
    assert_eq!(received(&queue).await, before_restart);

    // Killed with the connection open: what the broker confirmed is on disk.
    let before_crash = AttemptKey {
        attempt: 2,
        ..before_restart.clone()
    };
    queue.enqueue(before_crash.clone()).await.expect("enqueue");
    broker.kill().await;
    drop(queue);
    broker.start_again().await;
    let queue = connect(&broker).await;
    assert_eq!(received(&queue).await, before_crash);
    queue.close().await.expect("close");
}

//! A private PostgreSQL server for tests that stop and restart the database while runs are in
//! flight. The shared server at `ENRICHFLOW_TEST_DATABASE_URL` serves other tests in parallel and
//! is never touched; the variable only says that PostgreSQL is installed and wanted.
//!
//! A [`PrivatePostgres`] is a cluster made by the installed `initdb` (the newest under
//! `/usr/lib/postgresql`, unless `ENRICHFLOW_TEST_PG_BIN` names a `bin` folder) in a temporary
//! folder, trust authentication, listening on a free loopback port with its socket in that folder.
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user.
//! Dropping it stops the server and deletes the folder, also when the test panics.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::broker::free_port;

const URL_VARIABLE: &str = "ENRICHFLOW_TEST_DATABASE_URL";
const BIN_VARIABLE: &str = "ENRICHFLOW_TEST_PG_BIN";

/// A PostgreSQL server of one test, at [`PrivatePostgres::url`].
pub struct PrivatePostgres {
    bin: PathBuf,
    folder: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// A fresh running server, or `None` (after saying so) when `ENRICHFLOW_TEST_DATABASE_URL`
    /// is not set.
    pub fn start() -> Option<PrivatePostgres> {
        if std::env::var_os(URL_VARIABLE).is_none() {
            println!("skipped: {URL_VARIABLE} is not set");
            return None;
        }
        let folder = std::env::temp_dir().join(format!(
            "enrichflow_it_pg_{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&folder).expect("create the cluster folder");
        let server = PrivatePostgres {
            bin: bin_folder(),
            folder,
            port: free_port(),
        };
        server.own_folder();
        server.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
            true,
        );
        server.start_again();
        Some(server)
    }

    /// The URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server, disconnecting every client (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        self.run("pg_ctl", &["stop", "-m", "fast", "-w", "-D"], true);
    }

    /// Starts the stopped server again on the same port and data; returns once it accepts
    /// connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.folder.display()
        );
        let log = self.folder.join("server.log");
        let log = log.to_string_lossy();
        self.run(
            "pg_ctl",
            &["start", "-w", "-t", "60", "-l", &log, "-o", &options, "-D"],
            true,
        );
    }

    /// `data` is the last argument of every command.
    fn run(&self, program: &str, args: &[&str], check: bool) -> Output {
        let data = self.folder.join("data");
        let program = self.bin.join(program);
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .arg(&data)
            .current_dir(&self.folder)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
        if check && !output.status.success() {
            panic!(
                "{} {args:?} failed: {}\n{}\n{}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(self.folder.join("server.log")).unwrap_or_default()
            );
        }
        output
    }

    fn own_folder(&self) {
        if running_as_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&self.folder)
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown the cluster folder to postgres");
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["stop", "-m", "immediate", "-w", "-D"], false);
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| output.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// The `bin` folder of the newest installed PostgreSQL.
fn bin_folder() -> PathBuf {
    if let Some(bin) = std::env::var_os(BIN_VARIABLE) {
        return PathBuf::from(bin);
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (or set ENRICHFLOW_TEST_PG_BIN)")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let newest = versions.last().expect("a PostgreSQL version folder");
    PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin"))
}

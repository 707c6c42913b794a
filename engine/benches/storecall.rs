//! Micro-benchmark: the cost of one store read and one store write on a SQLite file, which
//! bounds the engine (a 5-node run makes ~25 reads and ~18 writes). Run with
//! `cargo bench -p enrichflow --bench storecall`.

use std::time::Instant;

use enrichflow::store::{Revisions, Runs, SqliteStore};

const CALLS: u32 = 2000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let database =
        std::env::temp_dir().join(format!("enrichflow-storecall-{}.db", uuid::Uuid::now_v7()));
    let store = SqliteStore::connect(&format!("sqlite://{}", database.display())).await?;
    let started = Instant::now();
    for _ in 0..CALLS {
        store.run("missing").await?;
    }
    println!(
        "read  (run by id): {:?} per call",
        started.elapsed() / CALLS
    );
    let started = Instant::now();
    for index in 0..CALLS {
        store
            .save_revision("bench", &format!("hash-{index}"), "id: bench")
            .await?;
    }
    println!(
        "write (one insert, one transaction): {:?} per call",
        started.elapsed() / CALLS
    );
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    Ok(())
}

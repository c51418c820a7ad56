//! The durable store (`ors::store`) against both of its backends, through
//! the kit's store matrix (`common::stores`): a fresh SQLite file per test,
//! and a fresh PostgreSQL database per test when `ORS_TEST_POSTGRES_URL`
//! names a server.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::stores::{each_store, test_databases};
use futures_util::future::BoxFuture;
use ors::gms::records::{CallbackQuery, CallbackRow, KeyFilter, Operand};
use ors::interpreter::{Event, Host, Session, SessionOptions, SessionSnapshot};
use ors::store::{
    CommitHandle, Committer, DocumentRow, RootSummary, SessionRow, Store, StoreError, WriteBatch,
    document_hash,
};
use ors::{LoadOptions, parse_document};

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/// A running session row with every optional field empty.
fn row(id: &str, root: &str, parent: Option<&str>, seq: i64) -> SessionRow {
    SessionRow {
        id: id.into(),
        root: root.into(),
        parent: parent.map(Into::into),
        invokeid: parent.map(|_| format!("inv-{id}")),
        src: format!("file:///docs/{root}.scxml"),
        doc_hash: None,
        status: "running".into(),
        seq,
        started_at: 1_700_000_000_000 + seq,
        ended_at: None,
        idealtime: None,
        events: 0,
        wake_at: None,
        snapshot: format!("{{\"id\":\"{id}\"}}"),
    }
}

/// A session that halted with `status` at `ended_at`.
fn halted(id: &str, seq: i64, status: &str, ended_at: i64) -> SessionRow {
    SessionRow {
        status: status.into(),
        ended_at: Some(ended_at),
        ..row(id, id, None, seq)
    }
}

fn document(text: &str, location: Option<&str>) -> DocumentRow {
    DocumentRow {
        hash: document_hash(text),
        location: location.map(Into::into),
        text: text.into(),
    }
}

fn upserts(rows: Vec<SessionRow>) -> WriteBatch {
    WriteBatch {
        upserts: rows,
        ..WriteBatch::default()
    }
}

async fn write(store: &Arc<dyn Store>, label: &str, batch: WriteBatch) {
    store
        .write(batch)
        .await
        .unwrap_or_else(|e| panic!("{label}: write succeeds: {e}"));
}

async fn load(store: &Arc<dyn Store>, label: &str, id: &str) -> SessionRow {
    store
        .load_session(id)
        .await
        .unwrap_or_else(|e| panic!("{label}: session {id} loads: {e}"))
}

fn assert_session_not_found(result: Result<SessionRow, StoreError>, id: &str, label: &str) {
    match result {
        Err(StoreError::NotFound(key)) => assert_eq!(key, id, "{label}: NotFound names the id"),
        other => panic!("{label}: expected NotFound for session {id}, got {other:?}"),
    }
}

fn assert_document_not_found(result: Result<DocumentRow, StoreError>, hash: &str, label: &str) {
    match result {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("{label}: expected NotFound for document {hash}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_session_and_document_load_back_with_every_field() {
    each_store(async |db, store| {
        let label = db.label;
        assert_eq!(store.backend(), label, "the store names its backend");

        let doc = document("<scxml name=\"ünï\"/>", Some("https://example.org/a.scxml"));
        let doc_without_location = document("<scxml/>", None);
        let full = SessionRow {
            id: "child-1".into(),
            root: "root-1".into(),
            parent: Some("root-1".into()),
            invokeid: Some("inv.1".into()),
            src: "https://example.org/a.scxml".into(),
            doc_hash: Some(doc.hash.clone()),
            status: "completed".into(),
            seq: 42,
            started_at: 1_700_000_000_123,
            ended_at: Some(1_700_000_009_999),
            idealtime: Some(-5),
            events: i64::from(i32::MAX) + 7,
            wake_at: Some(1_700_000_001_000),
            snapshot:
                "{\"data\":\"it's \\\"quoted\\\" — ünïcødé ✓ 🚀, 'single' \\\\ back\\nslash\"}"
                    .into(),
        };
        let empty = SessionRow {
            snapshot: String::new(),
            ..row("root-1", "root-1", None, 1)
        };
        assert_eq!(empty.parent, None);
        assert_eq!(empty.invokeid, None);
        assert_eq!(empty.doc_hash, None);
        assert_eq!(empty.ended_at, None);
        assert_eq!(empty.idealtime, None);
        assert_eq!(empty.wake_at, None);

        write(
            &store,
            label,
            WriteBatch {
                documents: vec![doc.clone(), doc_without_location.clone()],
                upserts: vec![empty.clone(), full.clone()],
                deletes: vec![],
                statements: vec![],
            },
        )
        .await;

        assert_eq!(load(&store, label, "child-1").await, full, "{label}");
        assert_eq!(load(&store, label, "root-1").await, empty, "{label}");
        assert_eq!(
            store.load_document(&doc.hash).await.unwrap(),
            doc,
            "{label}"
        );
        assert_eq!(
            store
                .load_document(&doc_without_location.hash)
                .await
                .unwrap(),
            doc_without_location,
            "{label}"
        );
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_and_document_are_not_found() {
    each_store(async |db, store| {
        let label = db.label;
        write(&store, label, upserts(vec![row("known", "known", None, 1)])).await;

        assert_session_not_found(store.load_session("unknown").await, "unknown", label);
        let hash = document_hash("never stored");
        assert_document_not_found(store.load_document(&hash).await, &hash, label);
        assert!(
            store.load_tree("unknown").await.unwrap().is_empty(),
            "{label}: an unknown tree is empty"
        );
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_write_of_a_session_replaces_the_first() {
    each_store(async |db, store| {
        let label = db.label;
        let first = SessionRow {
            events: 3,
            wake_at: Some(5_000),
            idealtime: Some(7),
            ..row("s", "s", None, 1)
        };
        write(&store, label, upserts(vec![first])).await;

        let second = SessionRow {
            status: "terminated".into(),
            events: 9,
            ended_at: Some(6_000),
            wake_at: None,
            idealtime: None,
            snapshot: "{\"state\":\"final\",\"note\":\"réécrit\"}".into(),
            ..row("s", "s", None, 1)
        };
        write(&store, label, upserts(vec![second.clone()])).await;

        assert_eq!(load(&store, label, "s").await, second, "{label}");
        assert_eq!(
            store.load_tree("s").await.unwrap(),
            vec![second],
            "{label}: the upsert left one row"
        );
        assert!(
            store.running_roots().await.unwrap().is_empty(),
            "{label}: the replaced status counts"
        );
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_sessions_are_gone_and_others_stay() {
    each_store(async |db, store| {
        let label = db.label;
        write(
            &store,
            label,
            upserts(vec![
                row("r", "r", None, 1),
                row("c1", "r", Some("r"), 2),
                row("c2", "r", Some("r"), 3),
            ]),
        )
        .await;

        write(
            &store,
            label,
            WriteBatch {
                upserts: vec![row("other", "other", None, 4)],
                deletes: vec!["c1".into(), "never-existed".into()],
                statements: vec![],
                ..WriteBatch::default()
            },
        )
        .await;

        assert_session_not_found(store.load_session("c1").await, "c1", label);
        let tree: Vec<String> = store
            .load_tree("r")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(tree, ["r", "c2"], "{label}");
        assert_eq!(load(&store, label, "other").await.id, "other", "{label}");

        write(
            &store,
            label,
            WriteBatch {
                deletes: vec!["r".into(), "c2".into()],
                statements: vec![],
                ..WriteBatch::default()
            },
        )
        .await;
        assert!(store.load_tree("r").await.unwrap().is_empty(), "{label}");
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tree_returns_parents_before_children_even_when_written_in_reverse() {
    each_store(async |db, store| {
        let label = db.label;
        // Grandchildren first, root last, each in its own transaction.
        let written = [
            row("g2", "t", Some("c2"), 7),
            row("g1", "t", Some("c1"), 6),
            row("g0", "t", Some("c1"), 5),
            row("c2", "t", Some("t"), 4),
            row("c1", "t", Some("t"), 3),
            row("t", "t", None, 2),
        ];
        for r in &written {
            write(&store, label, upserts(vec![r.clone()])).await;
        }
        // Another tree is not part of it.
        write(
            &store,
            label,
            upserts(vec![row("u", "u", None, 1), row("uc", "u", Some("u"), 8)]),
        )
        .await;

        let tree = store.load_tree("t").await.unwrap();
        let depth = |id: &str| match id {
            "t" => 0,
            "c1" | "c2" => 1,
            _ => 2,
        };
        let depths: Vec<i32> = tree.iter().map(|r| depth(&r.id)).collect();
        assert_eq!(
            depths,
            [0, 1, 1, 2, 2, 2],
            "{label}: root, then children, then grandchildren: {:?}",
            tree.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
        for (i, r) in tree.iter().enumerate() {
            if let Some(parent) = &r.parent {
                assert!(
                    tree[..i].iter().any(|p| &p.id == parent),
                    "{label}: {} comes after its parent {parent}",
                    r.id
                );
            }
            let original = written.iter().find(|w| w.id == r.id).unwrap();
            assert_eq!(r, original, "{label}: tree rows are the rows written");
        }
        // Any member's id finds the same tree in one call.
        for member in ["t", "c2"] {
            assert_eq!(store.load_tree_of(member).await.unwrap(), tree, "{label}");
        }
        let grandchild = tree.last().unwrap().id.clone();
        assert_eq!(
            store.load_tree_of(&grandchild).await.unwrap(),
            tree,
            "{label}"
        );
        assert!(
            store.load_tree_of("nobody").await.unwrap().is_empty(),
            "{label}"
        );
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_roots_lists_running_top_level_sessions_by_seq_with_tree_minimum_wake_at() {
    each_store(async |db, store| {
        let label = db.label;
        let a = SessionRow {
            wake_at: Some(500),
            idealtime: Some(11),
            events: 4,
            ..row("a", "a", None, 3)
        };
        write(
            &store,
            label,
            upserts(vec![
                // Written out of seq order.
                SessionRow {
                    wake_at: Some(1_000),
                    ..row("d", "d", None, 5)
                },
                row("d-child", "d", Some("d"), 15),
                a.clone(),
                SessionRow {
                    wake_at: Some(200),
                    ..row("a-child", "a", Some("a"), 13)
                },
                SessionRow {
                    wake_at: Some(300),
                    ..row("a-grandchild", "a", Some("a-child"), 23)
                },
                // Halted rows of a running tree do not count for wake_at.
                SessionRow {
                    root: "a".into(),
                    parent: Some("a".into()),
                    wake_at: Some(50),
                    ..halted("a-done", 33, "completed", 40)
                },
                row("b", "b", None, 1),
                row("b-child", "b", Some("b"), 11),
                SessionRow {
                    wake_at: Some(10),
                    ..halted("c", 2, "completed", 90)
                },
                SessionRow {
                    wake_at: Some(10),
                    ..halted("e", 4, "failed", 90)
                },
            ]),
        )
        .await;

        let roots = store.running_roots().await.unwrap();
        let summary: Vec<(&str, i64, Option<i64>)> = roots
            .iter()
            .map(|r| (r.id.as_str(), r.seq, r.wake_at))
            .collect();
        assert_eq!(
            summary,
            [("b", 1, None), ("a", 3, Some(200)), ("d", 5, Some(1_000))],
            "{label}"
        );
        assert_eq!(
            roots[1],
            RootSummary {
                id: "a".into(),
                src: a.src.clone(),
                seq: 3,
                started_at: a.started_at,
                idealtime: Some(11),
                events: 4,
                wake_at: Some(200),
            },
            "{label}"
        );
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_halted_deletes_only_halted_sessions_ended_before_the_cutoff_and_unused_documents() {
    each_store(async |db, store| {
        let label = db.label;
        let only_purged = document("<scxml name='only purged'/>", Some("a.scxml"));
        let shared = document("<scxml name='shared'/>", Some("b.scxml"));
        let running = document("<scxml name='running'/>", None);
        let unused = document("<scxml name='unused'/>", None);
        let with_doc = |mut r: SessionRow, d: &DocumentRow| {
            r.doc_hash = Some(d.hash.clone());
            r
        };
        let cutoff = 200;
        write(
            &store,
            label,
            WriteBatch {
                documents: vec![
                    only_purged.clone(),
                    shared.clone(),
                    running.clone(),
                    unused.clone(),
                ],
                upserts: vec![
                    with_doc(halted("old-completed", 1, "completed", 100), &only_purged),
                    with_doc(halted("old-terminated", 2, "terminated", 150), &shared),
                    halted("old-failed", 3, "failed", cutoff - 1),
                    halted("at-cutoff", 4, "completed", cutoff),
                    with_doc(halted("recent", 5, "completed", 300), &shared),
                    with_doc(row("running", "running", None, 6), &running),
                    // Running despite an old end time: never purged.
                    SessionRow {
                        ended_at: Some(10),
                        ..row("running-old", "running-old", None, 7)
                    },
                ],
                deletes: vec![],
                statements: vec![],
            },
        )
        .await;

        assert_eq!(store.purge_halted(cutoff).await.unwrap(), 3, "{label}");

        for id in ["old-completed", "old-terminated", "old-failed"] {
            assert_session_not_found(store.load_session(id).await, id, label);
        }
        for id in ["at-cutoff", "recent", "running", "running-old"] {
            assert_eq!(load(&store, label, id).await.id, id, "{label}");
        }
        // Documents written moments ago stay: a write may be about to use
        // them (each write refreshes the documents its sessions use).
        for d in [&only_purged, &shared, &running, &unused] {
            assert_eq!(store.load_document(&d.hash).await.unwrap(), *d, "{label}");
        }
        assert_eq!(
            store.purge_halted(cutoff).await.unwrap(),
            0,
            "{label}: nothing left to purge"
        );

        // A cut-off after the writes: the remaining halted sessions go, and
        // with them every document no running session uses.
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 60_000;
        assert_eq!(store.purge_halted(later).await.unwrap(), 2, "{label}");
        for d in [&only_purged, &shared, &unused] {
            assert_document_not_found(store.load_document(&d.hash).await, &d.hash, label);
        }
        assert_eq!(
            store.load_document(&running.hash).await.unwrap(),
            running,
            "{label}: a running session's document is kept"
        );
        for id in ["running", "running-old"] {
            assert_eq!(load(&store, label, id).await.id, id, "{label}");
        }
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_is_stored_once_and_its_first_text_is_kept() {
    each_store(async |db, store| {
        let label = db.label;
        let first = DocumentRow {
            hash: "fixed-hash".into(),
            location: Some("first.scxml".into()),
            text: "<scxml name='first'/>".into(),
        };
        let second = DocumentRow {
            location: Some("second.scxml".into()),
            text: "<scxml name='second'/>".into(),
            ..first.clone()
        };
        let third = DocumentRow {
            location: None,
            text: "<scxml name='third'/>".into(),
            ..first.clone()
        };
        write(
            &store,
            label,
            WriteBatch {
                documents: vec![first.clone()],
                ..WriteBatch::default()
            },
        )
        .await;
        // A later transaction, and a repeat inside one transaction.
        write(
            &store,
            label,
            WriteBatch {
                documents: vec![second, third],
                ..WriteBatch::default()
            },
        )
        .await;

        assert_eq!(
            store.load_document("fixed-hash").await.unwrap(),
            first,
            "{label}"
        );
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_a_database_keeps_its_data_and_runs_migrations_once() {
    for db in test_databases().await {
        let label = db.label;
        let doc = document("<scxml name='kept'/>", Some("kept.scxml"));
        let kept = SessionRow {
            doc_hash: Some(doc.hash.clone()),
            ..row("kept", "kept", None, 1)
        };
        let first = db.open().await;
        write(
            &first,
            label,
            WriteBatch {
                documents: vec![doc.clone()],
                upserts: vec![kept.clone()],
                deletes: vec![],
                statements: vec![],
            },
        )
        .await;

        // A second store while the first is still open, then a third alone.
        let second = db.open().await;
        assert_eq!(load(&second, label, "kept").await, kept, "{label}");
        drop(second);
        drop(first);
        let third = db.open().await;
        assert_eq!(load(&third, label, "kept").await, kept, "{label}");
        assert_eq!(
            third.load_document(&doc.hash).await.unwrap(),
            doc,
            "{label}"
        );
        write(&third, label, upserts(vec![row("later", "later", None, 2)])).await;
        assert_eq!(load(&third, label, "later").await.id, "later", "{label}");
        drop(third);

        assert_eq!(
            db.applied_migrations().await,
            [
                "core:1", "core:2", "core:3", "core:4", "gms:1", "gms:2", "gms:3", "gms:4",
                "gms:5", "gms:6", "gms:7", "gms:8", "gms:9"
            ],
            "{label}: each migration is recorded once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_one_statement_lands_completely() {
    each_store(async |db, store| {
        let label = db.label;
        // 1000 rows: five multi-row statements of 200 each, every field
        // distinct per row so a parameter bound to the wrong row shows.
        let rows: Vec<SessionRow> = (0..1000)
            .map(|i| {
                let id = format!("big-{i:04}");
                let mut r = if i == 0 {
                    row("big-0000", "big-0000", None, 0)
                } else {
                    row(&id, "big-0000", Some("big-0000"), i)
                };
                r.events = i * 3;
                r.wake_at = (i % 2 == 0).then_some(10_000 + i);
                r.idealtime = (i % 3 == 0).then_some(i);
                r.snapshot = format!("{{\"n\":{i},\"s\":\"é{i}\"}}");
                r
            })
            .collect();
        write(&store, label, upserts(rows.clone())).await;

        let mut tree: HashMap<String, SessionRow> = store
            .load_tree("big-0000")
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        assert_eq!(tree.len(), 1000, "{label}: every row landed");
        for r in &rows {
            assert_eq!(tree.remove(&r.id).as_ref(), Some(r), "{label}");
        }

        // More than 200 deletes in one batch.
        let deleted: Vec<String> = rows[1..=450].iter().map(|r| r.id.clone()).collect();
        write(
            &store,
            label,
            WriteBatch {
                deletes: deleted.clone(),
                statements: vec![],
                ..WriteBatch::default()
            },
        )
        .await;
        let left = store.load_tree("big-0000").await.unwrap();
        assert_eq!(left.len(), 550, "{label}: every delete landed");
        assert!(
            left.iter().all(|r| !deleted.contains(&r.id)),
            "{label}: only the deleted rows went"
        );
        drop(store);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Committer
// ---------------------------------------------------------------------------

/// What one `write` call received.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    documents: usize,
    upserts: usize,
    deletes: usize,
}

/// A store that records the batches it is given and can refuse one.
struct Recording {
    inner: Arc<dyn Store>,
    writes: Mutex<Vec<Shape>>,
    fail_next: AtomicBool,
}

impl Recording {
    fn new(inner: Arc<dyn Store>) -> Arc<Recording> {
        Arc::new(Recording {
            inner,
            writes: Mutex::new(Vec::new()),
            fail_next: AtomicBool::new(false),
        })
    }

    fn writes(&self) -> Vec<Shape> {
        self.writes.lock().unwrap().clone()
    }
}

impl Store for Recording {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn write(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        self.writes.lock().unwrap().push(Shape {
            documents: batch.documents.len(),
            upserts: batch.upserts.len(),
            deletes: batch.deletes.len(),
        });
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Config("refused by the test".into())) });
        }
        self.inner.write(batch)
    }
    fn load_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SessionRow, StoreError>> {
        self.inner.load_session(id)
    }
    fn load_tree<'a>(
        &'a self,
        root: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionRow>, StoreError>> {
        self.inner.load_tree(root)
    }
    fn load_tree_of<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionRow>, StoreError>> {
        self.inner.load_tree_of(id)
    }
    fn load_document<'a>(
        &'a self,
        hash: &'a str,
    ) -> BoxFuture<'a, Result<DocumentRow, StoreError>> {
        self.inner.load_document(hash)
    }
    fn running_roots(&self) -> BoxFuture<'_, Result<Vec<RootSummary>, StoreError>> {
        self.inner.running_roots()
    }
    fn purge_halted(&self, ended_before: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.purge_halted(ended_before)
    }
    fn query<'a>(
        &'a self,
        statement: &'a ors::store::Statement,
    ) -> BoxFuture<'a, Result<Vec<Vec<ors::store::SqlValue>>, StoreError>> {
        self.inner.query(statement)
    }
    fn execute<'a>(
        &'a self,
        statement: &'a ors::store::Statement,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.execute(statement)
    }
}

/// Drops the last handle and waits for the committer's `run()` to end.
async fn stop_committer(handle: CommitHandle, task: tokio::task::JoinHandle<()>) {
    drop(handle);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("run() ends")
        .unwrap();
}

async fn committed(
    label: &str,
    answer: tokio::sync::oneshot::Receiver<Result<(), ors::store::CommitError>>,
) -> Result<(), ors::store::CommitError> {
    tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .unwrap_or_else(|_| panic!("{label}: the committer answers"))
        .unwrap_or_else(|_| panic!("{label}: the committer keeps its answer channel"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committer_merges_queued_submissions_into_one_write_where_later_rows_win() {
    each_store(async |db, store| {
        let label = db.label;
        write(&store, label, upserts(vec![row("back", "back", None, 0)])).await;
        let recording = Recording::new(store.clone());
        let (committer, handle) = Committer::new(recording.clone());

        // Everything is queued before the committer runs, so it is one group.
        let doc = document("<scxml name='committed'/>", Some("c.scxml"));
        let mut answers = Vec::new();
        for k in 1..=20 {
            let mut shared = row("shared", "shared", None, 1);
            shared.events = k;
            shared.doc_hash = Some(doc.hash.clone());
            shared.snapshot = format!("{{\"k\":{k}}}");
            answers.push(handle.submit(WriteBatch {
                documents: vec![doc.clone()],
                upserts: vec![shared, row(&format!("own-{k}"), "own", None, 100 + k)],
                deletes: vec![],
                statements: vec![],
            }));
        }
        answers.push(handle.submit(upserts(vec![row("gone", "gone", None, 2)])));
        answers.push(handle.submit(WriteBatch {
            deletes: vec!["gone".into(), "back".into()],
            statements: vec![],
            ..WriteBatch::default()
        }));
        answers.push(handle.submit(upserts(vec![SessionRow {
            events: 77,
            ..row("back", "back", None, 0)
        }])));
        let task = tokio::spawn(committer.run());
        for answer in answers {
            assert_eq!(committed(label, answer).await, Ok(()), "{label}");
        }

        assert_eq!(
            recording.writes(),
            [Shape {
                documents: 1,
                // shared, own-1..own-20, back
                upserts: 22,
                deletes: 1,
            }],
            "{label}: one merged write, each session and document once"
        );
        let shared = load(&store, label, "shared").await;
        assert_eq!(shared.events, 20, "{label}: the last submission wins");
        assert_eq!(shared.snapshot, "{\"k\":20}", "{label}");
        for k in 1..=20 {
            load(&store, label, &format!("own-{k}")).await;
        }
        assert_session_not_found(store.load_session("gone").await, "gone", label);
        assert_eq!(load(&store, label, "back").await.events, 77, "{label}");
        assert_eq!(
            store.load_document(&doc.hash).await.unwrap(),
            doc,
            "{label}"
        );

        // Concurrent submitters: every batch lands, in fewer or equal writes,
        // each carrying the document its sessions use exactly once.
        let writes_before = recording.writes().len();
        let mut workers = Vec::new();
        for w in 0..8 {
            let handle: CommitHandle = handle.clone();
            let doc = doc.clone();
            workers.push(tokio::spawn(async move {
                for k in 0..10 {
                    let r = SessionRow {
                        doc_hash: Some(doc.hash.clone()),
                        ..row(&format!("w{w}-{k}"), "workers", None, 1_000 + w * 10 + k)
                    };
                    let answer = handle.submit(WriteBatch {
                        documents: vec![doc.clone()],
                        upserts: vec![r],
                        deletes: vec![],
                        statements: vec![],
                    });
                    answer.await.expect("answered")?;
                }
                Ok::<(), ors::store::CommitError>(())
            }));
        }
        for worker in workers {
            assert_eq!(worker.await.unwrap(), Ok(()), "{label}");
        }
        let later = &recording.writes()[writes_before..];
        assert!(
            !later.is_empty() && later.len() <= 80,
            "{label}: {} writes",
            later.len()
        );
        assert_eq!(
            later.iter().map(|s| s.upserts).sum::<usize>(),
            80,
            "{label}"
        );
        assert!(
            later.iter().all(|s| s.documents == 1),
            "{label}: each write carries the document its sessions use, once: {later:?}"
        );
        for w in 0..8 {
            for k in 0..10 {
                load(&store, label, &format!("w{w}-{k}")).await;
            }
        }

        stop_committer(handle, task).await;
        drop(recording);
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committer_reports_a_failed_write_to_every_sender_and_resends_its_documents() {
    each_store(async |db, store| {
        let label = db.label;
        let recording = Recording::new(store.clone());
        let (committer, handle) = Committer::new(recording.clone());
        let doc = document("<scxml name='retried'/>", None);
        let batch = |id: &str| WriteBatch {
            documents: vec![doc.clone()],
            upserts: vec![SessionRow {
                doc_hash: Some(doc.hash.clone()),
                ..row(id, id, None, 1)
            }],
            deletes: vec![],
            statements: vec![],
        };

        recording.fail_next.store(true, Ordering::SeqCst);
        let first = handle.submit(batch("x"));
        let second = handle.submit(batch("y"));
        let task = tokio::spawn(committer.run());
        for answer in [first, second] {
            let result = committed(label, answer).await;
            assert!(
                result
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("refused by the test")),
                "{label}: {result:?}"
            );
        }
        assert_session_not_found(store.load_session("x").await, "x", label);

        assert_eq!(committed(label, handle.submit(batch("z"))).await, Ok(()));
        assert_eq!(
            recording.writes().last().map(|s| s.documents),
            Some(1),
            "{label}: the document of the failed write is sent again"
        );
        assert_eq!(
            store.load_document(&doc.hash).await.unwrap(),
            doc,
            "{label}"
        );
        assert_eq!(load(&store, label, "z").await.id, "z", "{label}");

        stop_committer(handle, task).await;
        drop(recording);
        drop(store);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committer_run_finishes_after_every_handle_is_dropped_and_commits_what_was_queued() {
    each_store(async |db, store| {
        let label = db.label;
        let (committer, handle) = Committer::new(store.clone());
        let task = tokio::spawn(committer.run());
        let clone = handle.clone();

        assert_eq!(
            committed(label, handle.submit(upserts(vec![row("a", "a", None, 1)]))).await,
            Ok(())
        );
        let queued = clone.submit(upserts(vec![row("b", "b", None, 2)]));
        drop(handle);
        drop(clone);

        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("{label}: run() ends once no handle is left"))
            .unwrap();
        assert_eq!(committed(label, queued).await, Ok(()), "{label}");
        assert_eq!(load(&store, label, "a").await.id, "a");
        assert_eq!(load(&store, label, "b").await.id, "b");
        drop(store);
    })
    .await;
}

fn callback(id: &str, number: &str, state: &str, created_at: i64, expires_at: i64) -> CallbackRow {
    CallbackRow {
        id: id.into(),
        service: "chat-immediate".into(),
        customer_number: number.into(),
        state: state.into(),
        session_id: format!("session-of-{id}"),
        created_at,
        updated_at: created_at,
        expires_at,
        record: format!(r#"{{"_id":"{id}","_callback_state":"{state}"}}"#),
        gms_user: format!("device-{number}"),
    }
}

/// Callback records are the GMS extension's own table, written through the
/// group committer and read with the store's generic statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_records_round_trip_are_queried_replaced_and_purged() {
    use ors::gms::records::Records;
    each_store(async |db, store| {
        let label = db.label;
        let (committer, commits) = Committer::new(store.clone());
        let task = tokio::spawn(committer.run());
        let records = Records::new(
            Some(store.clone()),
            Some(commits.clone()),
            ors::gms::clock::Clock::system(),
        );
        // Expiry times in the future (reads leave out expired records):
        // `a` expires first, and the purge runs at a time between.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let (soon, later) = (now + 1_000_000, now + 5_000_000);
        for row in [
            callback("a", "111", "QUEUED", 1, soon),
            callback("b", "111", "QUEUED", 2, later),
            callback("c", "222", "QUEUED", 3, later),
        ] {
            records.save(row).await.unwrap();
        }
        let a = records.get("a").await.unwrap();
        assert_eq!(a, Some(callback("a", "111", "QUEUED", 1, soon)), "{label}");
        assert_eq!(records.get("zz").await.unwrap(), None, "{label}");
        records
            .save(callback("b", "111", "COMPLETED", 2, later))
            .await
            .unwrap();
        let ids =
            |rows: Vec<CallbackRow>| -> Vec<String> { rows.into_iter().map(|r| r.id).collect() };
        let condition = |key: &str, value: &str, negated: bool| KeyFilter {
            key: key.into(),
            value: value.into(),
            negated,
        };
        let by_number = CallbackQuery {
            filters: vec![condition("_customer_number", "111", false)],
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids(records.query(&by_number).await.unwrap()),
            ["b", "a"],
            "{label}"
        );
        let queued = CallbackQuery {
            service: Some("chat-immediate".into()),
            states: vec!["QUEUED".into()],
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids(records.query(&queued).await.unwrap()),
            ["c", "a"],
            "{label}"
        );
        // Conditions the SQL does not answer are checked on the records:
        // a negation, and two conditions either of which will do.
        let not_queued = CallbackQuery {
            filters: vec![condition("_callback_state", "queued", true)],
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids(records.query(&not_queued).await.unwrap()),
            ["b"],
            "{label}"
        );
        let either = CallbackQuery {
            filters: vec![
                condition("_customer_number", "222", false),
                condition("_callback_state", "COMPLETED", false),
            ],
            operand: Operand::Or,
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids(records.query(&either).await.unwrap()),
            ["c", "b"],
            "{label}"
        );
        let first_only = CallbackQuery {
            limit: 1,
            ..either.clone()
        };
        assert_eq!(
            ids(records.query(&first_only).await.unwrap()),
            ["c"],
            "{label}"
        );
        let owned = CallbackQuery {
            gms_user: Some("device-222".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(ids(records.query(&owned).await.unwrap()), ["c"], "{label}");
        assert_eq!(
            records.purge_before(now + 2_000_000).await.unwrap(),
            1,
            "{label}"
        );
        assert_eq!(records.get("a").await.unwrap(), None, "{label}");
        assert_eq!(
            records.get("b").await.unwrap().unwrap().state,
            "COMPLETED",
            "{label}"
        );
        drop(records);
        stop_committer(commits, task).await;
        drop(store);
    })
    .await;
}

/// The row of callback `id` as the store holds it.
async fn stored_callback(store: &Arc<dyn Store>, id: &str) -> Option<CallbackRow> {
    let select = ors::store::Statement::new(
        format!(
            "SELECT {} FROM ors_callbacks WHERE id = $1",
            ors::gms::records::COLUMNS
        ),
        vec![id.into()],
    );
    let rows = store.query(&select).await.unwrap();
    rows.into_iter()
        .next()
        .map(|values| CallbackRow::from_values(values).unwrap())
}

/// A record this server wrote is read back from memory, as the commit
/// left it: many changes of one record at once leave memory and the
/// store with the same last row, and a row the server did not write
/// (here, put in by hand) is still read from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_records_read_back_what_was_last_committed() {
    use ors::gms::records::Records;
    each_store(async |db, store| {
        let label = db.label;
        let (committer, commits) = Committer::new(store.clone());
        let task = tokio::spawn(committer.run());
        let records = Arc::new(Records::new(
            Some(store.clone()),
            Some(commits.clone()),
            ors::gms::clock::Clock::system(),
        ));
        let later = i64::MAX / 2;
        records
            .save(callback("a", "111", "QUEUED", 1, later))
            .await
            .unwrap();
        let changes: Vec<_> = (0..24)
            .map(|i| {
                let records = records.clone();
                tokio::spawn(async move {
                    let mut extra = serde_json::Map::new();
                    extra.insert("step".into(), i.into());
                    let state = if i % 2 == 0 { "ROUTING" } else { "QUEUED" };
                    records.update("a", state, None, extra).await.unwrap();
                })
            })
            .collect();
        for change in changes {
            change.await.unwrap();
        }
        let remembered = records.get("a").await.unwrap().expect("a is read");
        let stored = stored_callback(&store, "a").await.expect("a is stored");
        assert_eq!(remembered, stored, "{label}: memory and store disagree");
        let record: serde_json::Value = serde_json::from_str(&stored.record).unwrap();
        assert!(record["step"].is_u64(), "{label}: {record}");

        // The server is the table's only writer, so a row it wrote is
        // answered without reading the store: a change made behind its
        // back is not seen, while a row it never wrote is.
        store
            .execute(&ors::store::Statement::new(
                "UPDATE ors_callbacks SET state = 'PAUSED' WHERE id = $1",
                vec!["a".into()],
            ))
            .await
            .unwrap();
        assert_eq!(
            records.get("a").await.unwrap().unwrap().state,
            stored.state,
            "{label}"
        );
        let mut by_hand = callback("z", "999", "QUEUED", 5, later);
        by_hand.record = r#"{"_id":"z","_callback_state":"QUEUED"}"#.into();
        store
            .execute(&ors::store::Statement::new(
                "INSERT INTO ors_callbacks (id, service, customer_number, state, session_id, \
                 created_at, updated_at, expires_at, record, gms_user) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                vec![
                    "z".into(),
                    "chat-immediate".into(),
                    "999".into(),
                    "QUEUED".into(),
                    "session-of-z".into(),
                    5i64.into(),
                    5i64.into(),
                    later.into(),
                    by_hand.record.as_str().into(),
                    "device-999".into(),
                ],
            ))
            .await
            .unwrap();
        assert_eq!(records.get("z").await.unwrap(), Some(by_hand), "{label}");
        drop(records);
        stop_committer(commits, task).await;
        drop(store);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Documents keyed by the old hash
// ---------------------------------------------------------------------------

/// `value` as an SQL string literal.
fn sql_text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// An `INSERT` of `row` into `ors_sessions`, as an older `ors` wrote it.
fn insert_session_sql(row: &SessionRow) -> String {
    let text = |v: &Option<String>| v.as_deref().map_or("NULL".to_string(), sql_text);
    let int = |v: Option<i64>| v.map_or("NULL".to_string(), |n| n.to_string());
    format!(
        "INSERT INTO ors_sessions (id, root, parent, invokeid, src, doc_hash, status, seq, \
         started_at, ended_at, idealtime, events, wake_at, updated_at, snapshot) VALUES \
         ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
        sql_text(&row.id),
        sql_text(&row.root),
        text(&row.parent),
        text(&row.invokeid),
        sql_text(&row.src),
        text(&row.doc_hash),
        sql_text(&row.status),
        row.seq,
        row.started_at,
        int(row.ended_at),
        int(row.idealtime),
        row.events,
        int(row.wake_at),
        row.started_at,
        sql_text(&row.snapshot),
    )
}

/// A host for running a session in the test: a fixed clock, no I/O.
struct StillHost;

impl Host for StillHost {
    fn now_ms(&mut self) -> u64 {
        1_700_000_000_000
    }
    fn log(&mut self, _session: &str, _label: Option<&str>, _message: &str) {}
}

const COUNTER_DOC: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0"
       datamodel="ecmascript" initial="idle" name="counter">
  <datamodel><data id="count" expr="0"/></datamodel>
  <script>function next(n) { return n + 1; }</script>
  <state id="idle">
    <transition event="bump"><assign location="count" expr="next(count)"/></transition>
    <transition event="stop" target="done"/>
  </state>
  <final id="done"><donedata><param name="count" expr="count"/></donedata></final>
</scxml>"#;

/// Delivers `names` to `session` as external events, one macrostep each.
fn deliver(session: &mut Session, names: &[&str]) {
    for name in names {
        session.enqueue_external(Event::external(*name, None));
        while session.process_next_external(&mut StillHost).is_some() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_under_the_old_hash_are_rekeyed_on_open_and_their_sessions_recover() {
    for db in test_databases().await {
        let label = db.label;
        // The schema as the current migrations leave it, then rows as a
        // store keyed by the old hash held them.
        drop(db.open().await);

        let doc = parse_document(COUNTER_DOC, None, &LoadOptions::default()).expect("parses");
        let options = SessionOptions {
            session_id: Some("migrated-root".into()),
            ..SessionOptions::default()
        };
        let mut session = Session::new(Arc::new(doc), options.clone());
        session.start(&mut StillHost);
        deliver(&mut session, &["bump", "bump"]);
        let snapshot =
            serde_json::to_string(&session.snapshot().expect("snapshot")).expect("serializes");
        drop(session);

        let other_text = "<scxml xmlns='http://www.w3.org/2005/07/scxml' name='other'/>";
        let old_counter = common::legacy_document_hash(COUNTER_DOC);
        let old_other = common::legacy_document_hash(other_text);
        let root = SessionRow {
            doc_hash: Some(old_counter.clone()),
            events: 2,
            snapshot,
            ..row("migrated-root", "migrated-root", None, 1)
        };
        let child = row("migrated-child", "migrated-root", Some("migrated-root"), 2);
        let finished = SessionRow {
            doc_hash: Some(old_other.clone()),
            ..halted("finished", 3, "completed", 1_700_000_000_500)
        };
        let mut statements = vec![
            format!(
                "INSERT INTO ors_documents (hash, location, text, stored_at) VALUES \
                 ({}, 'counter.scxml', {}, 1700000000000)",
                sql_text(&old_counter),
                sql_text(COUNTER_DOC)
            ),
            format!(
                "INSERT INTO ors_documents (hash, location, text, stored_at) VALUES \
                 ({}, NULL, {}, 1700000000000)",
                sql_text(&old_other),
                sql_text(other_text)
            ),
        ];
        statements.extend([&root, &child, &finished].map(insert_session_sql));
        db.execute_raw(&statements).await;

        // Opening re-keys: only SHA-256 keys are left, and each session
        // points at the key of its own document's text.
        let store = db.open().await;
        let new_counter = document_hash(COUNTER_DOC);
        let new_other = document_hash(other_text);
        let mut expected_keys = vec![new_counter.clone(), new_other.clone()];
        expected_keys.sort();
        assert_eq!(db.document_keys().await, expected_keys, "{label}");
        assert_eq!(
            load(&store, label, "migrated-root").await,
            SessionRow {
                doc_hash: Some(new_counter.clone()),
                ..root.clone()
            },
            "{label}"
        );
        assert_eq!(
            load(&store, label, "migrated-child").await,
            child,
            "{label}"
        );
        assert_eq!(
            load(&store, label, "finished").await.doc_hash,
            Some(new_other.clone()),
            "{label}"
        );
        assert_document_not_found(store.load_document(&old_counter).await, &old_counter, label);
        assert_eq!(
            store
                .load_document(&new_other)
                .await
                .expect("re-keyed document"),
            DocumentRow {
                hash: new_other.clone(),
                location: None,
                text: other_text.into(),
            },
            "{label}"
        );

        // The session recovers the way the server wakes one: its row, the
        // document under its doc_hash, then the snapshot restored into it.
        let roots = store.running_roots().await.expect("running roots");
        assert_eq!(
            roots.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["migrated-root"],
            "{label}"
        );
        let tree = store.load_tree("migrated-root").await.expect("tree loads");
        let stored = store
            .load_document(tree[0].doc_hash.as_deref().expect("a stored document"))
            .await
            .expect("its document loads");
        assert_eq!(stored.location.as_deref(), Some("counter.scxml"), "{label}");
        let doc = parse_document(&stored.text, None, &LoadOptions::default()).expect("parses");
        let snapshot: SessionSnapshot =
            serde_json::from_str(&tree[0].snapshot).expect("snapshot reads");
        let mut session =
            Session::restore(Arc::new(doc), &snapshot, options.clone()).expect("restores");
        deliver(&mut session, &["bump", "stop"]);
        assert!(!session.is_running(), "{label}: stop halts the session");
        assert_eq!(
            session.done_data(),
            Some(&serde_json::json!({ "count": 3 })),
            "{label}: two bumps before the migration, one after"
        );

        // A second open finds nothing left to re-key.
        drop(store);
        let again = db.open().await;
        assert_eq!(db.document_keys().await, expected_keys, "{label}");
        assert_eq!(
            load(&again, label, "migrated-root").await.doc_hash,
            Some(new_counter),
            "{label}"
        );
    }
}

//! `pause`, `unpause`, and what `status`, `start`, `stop`, `delete` and `node add` do with a
//! paused cluster, against the fake driver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use timonel_driver::{Driver, MachineState, StopMode};

use super::tests::{m, opts, world};
use super::*;
use crate::cluster::{pause, unpause, PauseOutcome};

/// A cancel flag already set: `unpause` does not wait for the (absent) API server.
fn no_wait() -> Cancel {
    let c = Cancel::default();
    c.cancel();
    c
}

/// A cluster of `nodes` nodes (one server), started.
async fn started(nodes: u32) -> super::tests::World {
    let w = world();
    start(&w.ctx, opts(&w, nodes, 1), &Cancel::default())
        .await
        .unwrap();
    w
}

async fn states(w: &super::tests::World) -> Vec<MachineState> {
    let mut out = Vec::new();
    for n in ["dev", "dev-m02", "dev-m03"] {
        out.push(w.fake.state(&m(n)).await.unwrap());
    }
    out
}

fn calls_of(w: &super::tests::World, op: &str) -> Vec<String> {
    w.fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with(&format!("{op} ")))
        .collect()
}

#[tokio::test]
async fn pause_freezes_agents_then_servers_and_status_says_paused() {
    let w = started(3).await;
    let outcome = pause(&w.ctx).await.unwrap();
    assert_eq!(
        outcome,
        PauseOutcome::Changed(vec![m("dev"), m("dev-m02"), m("dev-m03")])
    );
    assert_eq!(states(&w).await, vec![MachineState::Paused; 3]);
    let paused = calls_of(&w, "pause");
    assert_eq!(paused.len(), 3);
    assert_eq!(
        paused[2], "pause dev",
        "the server freezes last: {paused:?}"
    );

    let report = crate::cluster::status(&w.ctx).await.unwrap();
    assert_eq!(report.state, "paused");
    assert_eq!(report.api, "paused", "a paused API server is not asked");
    assert!(report
        .nodes
        .iter()
        .all(|n| n.host == "paused" && n.k3s == "paused"));
    assert_eq!(report.exit_code(), 2);

    // Again: nothing to do, nothing done.
    assert_eq!(pause(&w.ctx).await.unwrap(), PauseOutcome::Already);
    assert_eq!(calls_of(&w, "pause").len(), 3);
}

#[tokio::test]
async fn unpause_thaws_servers_first_and_is_idempotent() {
    let w = started(3).await;
    pause(&w.ctx).await.unwrap();
    let outcome = unpause(&w.ctx, &no_wait()).await.unwrap();
    assert!(matches!(outcome, PauseOutcome::Changed(ref n) if n.len() == 3));
    assert_eq!(states(&w).await, vec![MachineState::Running; 3]);
    assert_eq!(calls_of(&w, "unpause")[0], "unpause dev");
    assert_eq!(
        unpause(&w.ctx, &no_wait()).await.unwrap(),
        PauseOutcome::Already
    );
    assert_eq!(calls_of(&w, "unpause").len(), 3);
    // Nothing was restarted: one start per node, from the first `start`.
    assert_eq!(calls_of(&w, "start").len(), 3);
}

#[tokio::test]
async fn a_stopped_or_partly_stopped_cluster_is_refused_untouched() {
    let w = started(3).await;
    w.fake.stop(&m("dev-m03"), StopMode::Force).await.unwrap();
    let err = pause(&w.ctx).await.unwrap_err().to_string();
    assert!(err.contains("`dev-m03` is stopped"), "{err}");
    assert!(calls_of(&w, "pause").is_empty());

    crate::cluster::stop(&w.ctx, Duration::from_secs(1))
        .await
        .unwrap();
    for err in [
        pause(&w.ctx).await.unwrap_err(),
        unpause(&w.ctx, &no_wait()).await.unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(text.contains("it is stopped"), "{text}");
        let hint = err
            .downcast_ref::<crate::cluster::Error>()
            .and_then(timonel_driver::Hint::hint)
            .unwrap_or_default();
        assert!(hint.contains("timonel start -p dev"), "{hint}");
    }
    assert!(calls_of(&w, "pause").is_empty() && calls_of(&w, "unpause").is_empty());
}

#[tokio::test]
async fn start_unpauses_a_paused_cluster_instead_of_restarting_it() {
    let w = started(2).await;
    pause(&w.ctx).await.unwrap();
    let starts = calls_of(&w, "start").len();
    start(&w.ctx, opts(&w, 2, 1), &Cancel::default())
        .await
        .unwrap();
    assert_eq!(calls_of(&w, "unpause").len(), 2);
    assert_eq!(calls_of(&w, "start").len(), starts, "nothing restarted");
    for n in ["dev", "dev-m02"] {
        assert_eq!(w.fake.state(&m(n)).await.unwrap(), MachineState::Running);
    }
}

#[tokio::test]
async fn a_paused_cluster_stops_and_deletes_and_refuses_node_changes() {
    let w = started(2).await;
    pause(&w.ctx).await.unwrap();
    let profile = w.ctx.store.load(&w.ctx.profile).unwrap();
    let err = crate::cluster::pause::refuse_when_paused(&w.fake, &profile, "add a node")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("profile `dev` is paused"), "{err}");
    let err = crate::cluster::node_delete(&w.ctx, "dev-m02")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot delete a node"), "{err}");

    crate::cluster::stop(&w.ctx, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(w.fake.nodes().values().all(|running| !running));
    start(&w.ctx, opts(&w, 2, 1), &Cancel::default())
        .await
        .unwrap();
    pause(&w.ctx).await.unwrap();
    crate::cluster::delete(&w.ctx, None).await.unwrap();
    assert!(w.fake.nodes().is_empty());
}

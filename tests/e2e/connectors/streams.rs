//! One agent with two streams to one server (`mailplane-agent --connections 2` behind one
//! address): both live and take jobs, the API shows the agent once, a reconnection replaces
//! only its own stream, and revocation closes both.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_of_one_agent_live_together_and_revocation_closes_both() {
    let server = server().await;
    let (dc, acct) = connector_account(&server, "Streams").await;
    let who = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    let mut s0 = FakeAgent::connect_stream(&server, &who, 0).await.unwrap();
    let mut s1 = FakeAgent::connect_stream(&server, &who, 1).await.unwrap();
    let get = || async {
        server
            .connectors()
            .get_connector(pb::GetConnectorRequest {
                name: dc.name.clone(),
            })
            .await
            .unwrap()
            .into_inner()
    };
    one_job_on_each(&server, &acct.name, &who, &mut s0, &mut s1, || async {
        // The API shows the agent once, with the jobs of both streams.
        let got = get().await;
        assert_eq!(got.agents.len(), 1, "{:?}", got.agents);
        assert_eq!(got.agents[0].status, i32::from(pb::AgentStatus::Online));
        assert_eq!(got.agents[0].jobs_in_flight, 2);
    })
    .await;

    // Stream 0 again (a reconnection): it replaces the old stream 0, and stream 1 stays.
    let mut s0_again = FakeAgent::connect_stream(&server, &who, 0).await.unwrap();
    let replaced = tokio::time::timeout(Duration::from_secs(3), closed(&mut s0)).await;
    assert!(replaced.is_ok(), "the replaced stream closes");
    one_job_on_each(
        &server,
        &acct.name,
        &who,
        &mut s0_again,
        &mut s1,
        || async {},
    )
    .await;
    assert_eq!(get().await.agents.len(), 1);

    // Revocation closes both live streams.
    server
        .connectors()
        .revoke_agent(pb::RevokeAgentRequest {
            name: who.name.clone(),
        })
        .await
        .unwrap();
    let both = async {
        closed(&mut s0_again).await;
        closed(&mut s1).await;
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(3), both)
            .await
            .is_ok(),
        "both streams close within 3 s of revocation"
    );
    server.stop().await.unwrap();
}

/// Starts two tests: one job lands on each stream (the other is the less loaded); `during`
/// runs while both are in flight; then both succeed.
async fn one_job_on_each<F: std::future::Future<Output = ()>>(
    server: &TestServer,
    account: &str,
    who: &Enrolled,
    a: &mut FakeAgent,
    b: &mut FakeAgent,
    during: impl FnOnce() -> F,
) {
    let t1 = start_test(server, account).await;
    let first = tokio::select! { j = a.next_job() => (0, j), j = b.next_job() => (1, j) };
    let t2 = start_test(server, account).await;
    let second = if first.0 == 0 {
        (1, b.next_job().await)
    } else {
        (0, a.next_job().await)
    };
    assert_ne!(first.0, second.0, "each stream runs one job");
    during().await;
    for (stream, job) in [first, second] {
        let agent = if stream == 0 { &*a } else { &*b };
        agent.finish_ok(&job.job_id).await;
    }
    for name in [t1, t2] {
        let done = finished(server, &name).await;
        assert_eq!(done.state, i32::from(pb::TestState::Succeeded));
        assert_eq!(done.executed_by, who.name);
    }
}

/// Waits until the server ends the stream.
async fn closed(agent: &mut FakeAgent) {
    loop {
        match agent.down.message().await {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        }
    }
}

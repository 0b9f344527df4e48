//! Tests of the registry: several streams of one agent.

use super::*;

const CONNECTOR: ConnectorId = ConnectorId(3);

struct Stream {
    live: Arc<LiveAgent>,
    closed: watch::Receiver<bool>,
    jobs: mpsc::Receiver<Box<Result<pb::ConnectResponse, Status>>>,
}

impl Stream {
    fn new(agent: i64, stream: u32) -> Self {
        let (tx, jobs) = mpsc::channel(8);
        let (close, closed) = watch::channel(false);
        let hello = pb::AgentHello {
            hostname: format!("host-{agent}-{stream}"),
            version: "test".into(),
            max_concurrent_jobs: 4,
            stream,
        };
        let name = AgentName {
            connector: CONNECTOR,
            id: agent,
        };
        Stream {
            live: Arc::new(LiveAgent::new(name, &hello, tx, close)),
            closed,
            jobs,
        }
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn job_id(&mut self) -> Option<String> {
        match self.jobs.try_recv().ok().map(|b| *b) {
            Some(Ok(pb::ConnectResponse {
                event: Some(pb::connect_response::Event::Job(job)),
            })) => Some(job.job_id),
            _ => None,
        }
    }
}

fn job(id: &str) -> pb::SmtpJob {
    pb::SmtpJob {
        job_id: id.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_agent_holds_several_streams_and_revocation_closes_them_all() {
    let registry = Arc::new(Registry::default());
    let mut a0 = Stream::new(7, 0);
    let mut a1 = Stream::new(7, 1);
    let other = Stream::new(8, 0);
    registry.register(Arc::clone(&a0.live));
    registry.register(Arc::clone(&a1.live));
    registry.register(Arc::clone(&other.live));
    assert_eq!(registry.live(CONNECTOR).len(), 3);
    assert_eq!(registry.streams(7).len(), 2);
    assert!(!a0.is_closed() && !a1.is_closed(), "both streams stay open");

    // Agent 8 is idle, agent 7 busy after its first job: the load counts the agent.
    let wait = Duration::from_millis(1);
    let first = registry.dispatch(CONNECTOR, job("j1"), wait).await.unwrap();
    let second = registry.dispatch(CONNECTOR, job("j2"), wait).await.unwrap();
    assert_ne!(first.agent.name, second.agent.name, "one job per agent");
    // The next job of agent 7 goes to its other, idle stream.
    let third = registry.dispatch(CONNECTOR, job("j3"), wait).await.unwrap();
    assert_eq!(third.agent.name.id, 7);
    let got: Vec<Option<String>> = vec![a0.job_id(), a0.job_id(), a1.job_id(), a1.job_id()];
    assert_eq!(
        got.iter().flatten().count(),
        2,
        "agent 7 got two jobs: {got:?}"
    );
    assert!(
        got[..2].iter().flatten().count() == 1 && got[2..].iter().flatten().count() == 1,
        "one on each of its streams: {got:?}"
    );
    drop((first, second, third));

    // A new stream 0 of agent 7 replaces the old stream 0 (a reconnection), not stream 1.
    let a0_again = Stream::new(7, 0);
    registry.register(Arc::clone(&a0_again.live));
    assert!(a0.is_closed());
    assert!(!a1.is_closed());
    assert_eq!(registry.streams(7).len(), 2);
    registry.unregister(&a0.live);
    assert_eq!(
        registry.streams(7).len(),
        2,
        "the old stream was already gone"
    );

    // Revocation closes every stream of the agent, and no other agent's.
    registry.close(7);
    assert!(a1.is_closed() && a0_again.is_closed());
    assert!(!other.is_closed());
    registry.unregister(&a1.live);
    registry.unregister(&a0_again.live);
    assert!(registry.streams(7).is_empty());
    assert_eq!(registry.live(CONNECTOR).len(), 1);
}

#[tokio::test]
async fn a_flooding_agent_gets_its_job_closed_not_a_growing_backlog() {
    let registry = Arc::new(Registry::default());
    let mut agent = Stream::new(9, 0);
    registry.register(Arc::clone(&agent.live));
    let wait = Duration::from_millis(1);
    let mut dispatched = registry
        .dispatch(CONNECTOR, job("flood"), wait)
        .await
        .unwrap();
    assert_eq!(agent.job_id().as_deref(), Some("flood"));
    let update = || pb::job_update::Update::PhaseStarted(pb::Phase::Ehlo.into());
    let routed = (0..10 * MAX_PENDING_UPDATES)
        .filter(|_| agent.live.route("flood", update()))
        .count();
    assert_eq!(
        routed, MAX_PENDING_UPDATES,
        "no more than the bound is queued"
    );
    assert!(
        !agent.live.route("flood", update()),
        "the job is closed: later updates are dropped"
    );
    let mut seen = 0;
    let end = dispatched.follow(|_| seen += 1).await;
    assert!(
        matches!(
            end,
            JobEnd::Lost {
                data_started: false
            }
        ),
        "the runner sees the job lost"
    );
    assert_eq!(seen, MAX_PENDING_UPDATES);
}

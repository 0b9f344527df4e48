//! `SmtpTestService`: the gRPC edge of test e-mails.

use super::convert;
use super::paging;
use crate::domain::{Locale, Role, TestName, TestRequest, validate};
use crate::error::{Error, Result};
use crate::smtp_tests::TestRunner;
use futures::{Stream, StreamExt as _};
use mailplane_proto::v1 as pb;
use pb::smtp_test_service_server::SmtpTestService;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The longest subject.
const MAX_SUBJECT: usize = 998;
/// The largest body.
const MAX_BODY: usize = 64 * 1024;

/// Parses `accounts/{a}/tests/{t}`.
pub fn test_name(field: &str, name: &str) -> Result<TestName> {
    let (account, id) = convert::parse_child(field, name, "accounts", "tests")?;
    Ok(TestName {
        account: crate::domain::AccountId(account),
        id,
    })
}

/// The test to run, validated, with the seeds' defaults filled in.
impl TryFrom<pb::SmtpTest> for TestRequest {
    type Error = Error;

    fn try_from(msg: pb::SmtpTest) -> Result<Self> {
        let to = validate::email("test.to", &msg.to, false)?;
        let locale = Locale::parse(&msg.locale).ok_or_else(|| {
            Error::invalid(
                "test.locale",
                format!("{:?} is not supported; use en or pt-BR", msg.locale),
            )
        })?;
        validate::no_crlf("test.subject", &msg.subject)?;
        if msg.subject.chars().count() > MAX_SUBJECT {
            return Err(Error::invalid(
                "test.subject",
                format!("must be at most {MAX_SUBJECT} characters"),
            ));
        }
        if msg.body.len() > MAX_BODY {
            return Err(Error::invalid(
                "test.body",
                format!("must be at most {MAX_BODY} bytes"),
            ));
        }
        let stop_after =
            mailplane_smtp::proto::stop_after_from_pb(msg.stop_after).map_err(|_| {
                Error::invalid(
                    "test.stop_after",
                    format!("unknown value {}", msg.stop_after),
                )
            })?;
        let subject = if msg.subject.trim().is_empty() {
            locale.default_subject().to_owned()
        } else {
            msg.subject
        };
        let body = if msg.body.trim().is_empty() {
            locale.default_body().to_owned()
        } else {
            msg.body
        };
        Ok(Self {
            to,
            subject,
            body,
            locale,
            stop_after,
        })
    }
}

/// The test service.
#[derive(Clone)]
pub struct Tests {
    runner: Arc<TestRunner>,
}

impl Tests {
    /// A service running tests with `runner`.
    pub fn new(runner: Arc<TestRunner>) -> Self {
        Self { runner }
    }
}

/// The stream of a watch.
/// What the caller may see of a transcript. A viewer does not see what the client sent after
/// `AUTH` (the LOGIN user name, base64-encoded; the secrets are redacted for everyone).
#[derive(Debug, Clone, Copy)]
struct View {
    viewer: bool,
}

impl View {
    fn of<T>(request: &Request<T>) -> Self {
        Self {
            viewer: super::caller_role(request) == Some(Role::Viewer),
        }
    }

    fn phase(self, mut phase: pb::PhaseResult) -> pb::PhaseResult {
        if self.viewer && phase.phase == pb::Phase::Auth as i32 {
            for command in phase.commands.iter_mut().skip(1) {
                *command = crate::audit::REDACTED.to_owned();
            }
        }
        phase
    }

    fn test(self, mut test: pb::SmtpTest) -> pb::SmtpTest {
        test.transcript = test.transcript.into_iter().map(|p| self.phase(p)).collect();
        test
    }

    fn event(self, mut event: pb::WatchTestResponse) -> pb::WatchTestResponse {
        use pb::watch_test_response::Event;
        event.event = event.event.map(|e| match e {
            Event::PhaseFinished(p) => Event::PhaseFinished(self.phase(p)),
            Event::Finished(t) => Event::Finished(self.test(t)),
            started @ Event::PhaseStarted(_) => started,
        });
        event
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchTestResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SmtpTestService for Tests {
    async fn create_test(
        &self,
        request: Request<pb::CreateTestRequest>,
    ) -> Result<Response<pb::SmtpTest>, Status> {
        let ctx = crate::audit::context(&request);
        let req = request.into_inner();
        let account = convert::account_id("parent", &req.parent)?;
        let test = req
            .test
            .ok_or_else(|| Error::invalid("test", "is required; give at least test.to"))?;
        let request = TestRequest::try_from(test)?;
        let test = self.runner.create(&ctx, account, request).await?;
        Ok(Response::new(pb::SmtpTest::from(&test)))
    }

    async fn get_test(
        &self,
        request: Request<pb::GetTestRequest>,
    ) -> Result<Response<pb::SmtpTest>, Status> {
        let view = View::of(&request);
        let name = test_name("name", &request.into_inner().name)?;
        let test = self.runner.get(name).await?;
        Ok(Response::new(view.test(pb::SmtpTest::from(&test))))
    }

    async fn list_tests(
        &self,
        request: Request<pb::ListTestsRequest>,
    ) -> Result<Response<pb::ListTestsResponse>, Status> {
        let view = View::of(&request);
        let req = request.into_inner();
        let account = convert::account_id("parent", &req.parent)?;
        let size = paging::page_size(req.page_size)?;
        let context = account.to_string();
        let before = paging::decode(&req.page_token, &context)?;
        let rows = self.runner.list(account, before, size + 1).await?;
        let (tests, next_page_token) = paging::finish(rows, size, &context, |t| t.name.id);
        Ok(Response::new(pb::ListTestsResponse {
            tests: tests
                .iter()
                .map(|t| view.test(pb::SmtpTest::from(t)))
                .collect(),
            next_page_token,
        }))
    }

    type WatchTestStream = WatchStream;

    async fn watch_test(
        &self,
        request: Request<pb::WatchTestRequest>,
    ) -> Result<Response<Self::WatchTestStream>, Status> {
        let view = View::of(&request);
        let name = test_name("name", &request.into_inner().name)?;
        let rx = self.runner.watch(name).await?;
        let events =
            tokio_stream::wrappers::ReceiverStream::new(rx).map(move |event| match event {
                Ok(event) => Ok(view.event(pb::WatchTestResponse::from(&event))),
                Err(e) => Err(Status::from(e)),
            });
        Ok(Response::new(Box::pin(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_does_not_see_what_follows_auth() {
        let auth = pb::PhaseResult {
            phase: pb::Phase::Auth.into(),
            commands: vec![
                "AUTH LOGIN".into(),
                "b3BzQGV4YW1wbGUuY29t".into(),
                "<redacted>".into(),
            ],
            ..Default::default()
        };
        let ehlo = pb::PhaseResult {
            phase: pb::Phase::Ehlo.into(),
            commands: vec!["EHLO client".into()],
            ..Default::default()
        };
        let test = pb::SmtpTest {
            transcript: vec![ehlo.clone(), auth.clone()],
            ..Default::default()
        };
        let seen = View { viewer: true }.test(test.clone());
        assert_eq!(seen.transcript[0], ehlo);
        assert_eq!(
            seen.transcript[1].commands,
            ["AUTH LOGIN", "<redacted>", "<redacted>"]
        );
        assert_eq!(View { viewer: false }.test(test.clone()), test);
        let event = pb::WatchTestResponse {
            event: Some(pb::watch_test_response::Event::PhaseFinished(auth)),
        };
        let Some(pb::watch_test_response::Event::PhaseFinished(p)) =
            View { viewer: true }.event(event).event
        else {
            panic!("a phase");
        };
        assert_eq!(p.commands[1], "<redacted>");
    }
    use crate::domain::StopAfter;

    #[test]
    fn names() {
        let n = test_name("n", "accounts/3/tests/9").unwrap();
        assert_eq!((n.account.0, n.id), (3, 9));
        assert_eq!(n.to_string(), "accounts/3/tests/9");
        assert!(test_name("n", "accounts/3/tests/x").is_err());
        assert!(test_name("n", "tests/9").is_err());
    }

    #[test]
    fn defaults_follow_the_locale() {
        let r = TestRequest::try_from(pb::SmtpTest {
            to: "a@example.com".into(),
            locale: "pt-BR".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.subject, "MENSAGEM DE TESTE!");
        assert_eq!(r.body, "ATENÇÃO: ESTA É UMA MENSAGEM DE TESTE!");
        assert_eq!(r.stop_after, StopAfter::Delivery);
        let r = TestRequest::try_from(pb::SmtpTest {
            to: "a@example.com".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.subject, "TEST MESSAGE!");
        assert!(
            TestRequest::try_from(pb::SmtpTest {
                to: "nope".into(),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            TestRequest::try_from(pb::SmtpTest {
                to: "a@example.com".into(),
                subject: "x\r\nBcc: y".into(),
                ..Default::default()
            })
            .is_err()
        );
    }
}

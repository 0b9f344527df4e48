//! Hostile input through every RPC of the public API, over real gRPC: requests built from the
//! descriptor set with proptest's generators (oversized strings, control characters, CR/LF,
//! bad and foreign resource names, unknown enum numbers, bad field masks, out-of-range
//! timestamps, huge page sizes, long lists), and bad tokens at the end. Every answer must be a
//! status a person can act on (never `INTERNAL`, `UNKNOWN` or a broken connection, which is
//! what a panic looks like from outside), and a refused call must leave the database as it was.

use bytes::{Buf as _, BufMut as _};
use mailplane_proto::v1 as pb;
use mailplane_tests::{TestServer, account, both_backends, create_account, with_token};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestRunner};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};
use sqlx::Connection as _;
use std::time::Duration;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

both_backends!(every_rpc_refuses_hostile_input_cleanly);

/// Requests in all (the issue asks for at least 500).
const CASES: usize = 640;
/// Of which the last ones carry a bad token instead of the admin's.
const BAD_TOKENS: usize = 40;

/// Sends and receives encoded protobuf as it is.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Hostile strings, and the names of things that exist (so that some calls get past parsing).
fn strings(known: Vec<String>) -> BoxedStrategy<String> {
    let fixed = prop_oneof![
        Just(String::new()),
        Just("a".repeat(70_000)),
        Just("x\r\nRCPT TO:<evil@example.com>\r\n".to_owned()),
        Just("\0\u{1}\u{7f}\u{202e}".to_owned()),
        Just("accounts/-1".to_owned()),
        Just("accounts/99999999999999999999999".to_owned()),
        Just("accounts/1/../2".to_owned()),
        Just("connectors/1/agents/x".to_owned()),
        Just("messages/1 OR 1=1".to_owned()),
        Just("'; DROP TABLE accounts; --".to_owned()),
        Just("ops@example.com\r\nBcc: all@example.com".to_owned()),
        Just("*".to_owned()),
        Just("%00".to_owned()),
    ];
    let mut options = vec![
        fixed.boxed(),
        any::<String>().boxed(),
        "[ -~]{0,40}".boxed(),
    ];
    if !known.is_empty() {
        options.push(proptest::sample::select(known).boxed());
    }
    proptest::strategy::Union::new(options).boxed()
}

/// Builds hostile values of each kind from one deterministic runner.
struct Maker {
    runner: TestRunner,
    strings: BoxedStrategy<String>,
}

impl Maker {
    fn pick<T: std::fmt::Debug>(&mut self, s: impl Strategy<Value = T>) -> T {
        s.new_tree(&mut self.runner).unwrap().current()
    }

    fn string(&mut self) -> String {
        let s = self.strings.clone();
        self.pick(s)
    }

    fn scalar(&mut self, field: &FieldDescriptor, kind: &Kind) -> Value {
        match kind {
            Kind::String => {
                if field.name() == "paths" {
                    let path = self.pick(prop_oneof![
                        Just("*".to_owned()),
                        Just("name".to_owned()),
                        Just("nope".to_owned()),
                        Just("a.b.c".to_owned()),
                        Just(String::new()),
                        "[a-z_]{1,20}",
                    ]);
                    return Value::String(path);
                }
                Value::String(self.string())
            }
            Kind::Bytes => Value::Bytes(
                self.pick(prop_oneof![
                    Just(Vec::new()),
                    Just(vec![0xff; 200_000]),
                    proptest::collection::vec(any::<u8>(), 0..64),
                ])
                .into(),
            ),
            Kind::Bool => Value::Bool(self.pick(any::<bool>())),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(self.pick(prop_oneof![
                Just(0),
                Just(-1),
                Just(i32::MAX),
                Just(i32::MIN),
                any::<i32>(),
            ])),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(self.pick(prop_oneof![
                Just(0),
                Just(-1),
                Just(i64::MAX),
                Just(i64::MIN),
                any::<i64>(),
            ])),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(self.pick(prop_oneof![
                Just(0),
                Just(u32::MAX),
                Just(100_000),
                any::<u32>(),
            ])),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(self.pick(any::<u64>())),
            Kind::Float => Value::F32(self.pick(any::<f32>())),
            Kind::Double => Value::F64(self.pick(any::<f64>())),
            Kind::Enum(e) => {
                let known: Vec<i32> = e.values().map(|v| v.number()).collect();
                Value::EnumNumber(self.pick(prop_oneof![
                    proptest::sample::select(known),
                    Just(999),
                    Just(-7),
                ]))
            }
            Kind::Message(m) => Value::Message(self.message(m, 1)),
        }
    }

    /// A message with some of its fields set to hostile values, `depth` levels deep.
    fn message(&mut self, desc: &MessageDescriptor, depth: u32) -> DynamicMessage {
        let mut msg = DynamicMessage::new(desc.clone());
        if depth > 3 {
            return msg;
        }
        for field in desc.fields() {
            if !self.pick(proptest::bool::weighted(0.7)) {
                continue;
            }
            let kind = field.kind();
            let value = if field.is_map() {
                Value::Map(Default::default())
            } else if field.is_list() {
                let n = self.pick(prop_oneof![Just(0_usize), 1_usize..4, Just(150)]);
                let item_kind = kind.clone();
                let items = (0..n)
                    .map(|_| match &item_kind {
                        Kind::Message(m) => Value::Message(self.message(m, depth + 1)),
                        k => self.scalar(&field, k),
                    })
                    .collect();
                Value::List(items)
            } else {
                match &kind {
                    Kind::Message(m) => Value::Message(self.message(m, depth + 1)),
                    k => self.scalar(&field, k),
                }
            };
            msg.set_field(&field, value);
        }
        msg
    }
}

/// A fingerprint of what a refused call must not change: every table's rows, without the
/// columns that background work (deliveries, running tests, heartbeats, token use) updates.
async fn fingerprint(server: &TestServer) -> Vec<(String, Vec<String>)> {
    const SKIP_TABLES: [&str; 8] = [
        "_sqlx_migrations",
        "replicas",
        "agent_streams",
        "audit_events",
        "message_attempts",
        "connector_jobs",
        "connector_job_updates",
        "sqlite_sequence",
    ];
    const VOLATILE: [&str; 14] = [
        "state",
        "payload",
        "update_time",
        "next_attempt_time",
        "attempt_count",
        "last_error",
        "claimed_by",
        "data_agent",
        "last_use_time",
        "last_heartbeat_time",
        "last_reply",
        "hostname",
        "version",
        "body_purge_time",
    ];
    // The columns a refused call must leave alone, each as `show` reads it.
    let stable = |cols: Vec<String>, show: fn(&str) -> String| -> Vec<String> {
        cols.iter()
            .filter(|c| !VOLATILE.contains(&c.as_str()))
            .map(|c| show(c))
            .collect()
    };
    let mut out = Vec::new();
    match &server.pg {
        Some(pg) => {
            let mut db = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' ORDER BY 1",
            )
            .fetch_all(&mut db)
            .await
            .unwrap();
            for t in tables
                .into_iter()
                .filter(|t| !SKIP_TABLES.contains(&t.as_str()))
            {
                let cols: Vec<String> = sqlx::query_scalar(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                )
                .bind(&t)
                .fetch_all(&mut db)
                .await
                .unwrap();
                let cols = stable(cols, |c| format!("coalesce(md5(\"{c}\"::text), '-')"));
                let rows: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT concat_ws('|', {}) AS r FROM \"{t}\" ORDER BY r",
                    cols.join(", ")
                ))
                .fetch_all(&mut db)
                .await
                .unwrap();
                out.push((t, rows));
            }
        }
        None => {
            let url = format!("sqlite://{}?mode=ro", server.sqlite_path().display());
            let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1",
            )
            .fetch_all(&mut db)
            .await
            .unwrap();
            for t in tables
                .into_iter()
                .filter(|t| !SKIP_TABLES.contains(&t.as_str()))
            {
                let cols: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{t}')"))
                        .fetch_all(&mut db)
                        .await
                        .unwrap();
                let cols = stable(cols, |c| format!("quote(\"{c}\")"));
                let rows: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT {} AS r FROM \"{t}\" ORDER BY r",
                    cols.join(" || '|' || ")
                ))
                .fetch_all(&mut db)
                .await
                .unwrap();
                out.push((t, rows));
            }
        }
    }
    out
}

/// Calls `method` with `body` as `token`: the status code (OK when it succeeded; for a
/// stream, when its first message or its end came, or it is still going after a while).
async fn call(server: &TestServer, token: &str, method: &MethodDescriptor, body: Vec<u8>) -> Code {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path).unwrap();
    let mut grpc = tonic::client::Grpc::new(with_token(&server.raw, Some(token)));
    if let Err(e) = grpc.ready().await {
        panic!("the server stopped answering before {path}: {e}");
    }
    if method.is_server_streaming() {
        let answer = grpc
            .server_streaming(tonic::Request::new(body), path, Raw)
            .await;
        match answer {
            Err(status) => status.code(),
            Ok(response) => {
                let mut stream = response.into_inner();
                match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                    Ok(Err(status)) => status.code(),
                    Ok(Ok(_)) | Err(_) => Code::Ok,
                }
            }
        }
    } else {
        match grpc.unary(tonic::Request::new(body), path, Raw).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    }
}

async fn every_rpc_refuses_hostile_input_cleanly(server: &TestServer) {
    // Things to find: an account (its deliveries paused), a credential, a connector, a
    // message, a test.
    let acct = create_account(&mut server.accounts(), account("Hostile")).await;
    pb::message_service_client::MessageServiceClient::new(server.channel.clone())
        .pause_account_delivery(pb::PauseAccountDeliveryRequest {
            account: acct.name.clone(),
        })
        .await
        .unwrap();
    let connector = server.create_connector("Hostile").await;
    let message = pb::message_service_client::MessageServiceClient::new(server.channel.clone())
        .send_message(pb::SendMessageRequest {
            message: Some(pb::Message {
                account: acct.name.clone(),
                to: vec!["ops@example.com".into()],
                subject: "s".into(),
                text_body: "b".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let known = vec![
        acct.name.clone(),
        connector.name.clone(),
        format!("{}/agents/1", connector.name),
        message.name.clone(),
        format!("{}/tests/1", acct.name),
        "credentials/1".to_owned(),
        "tokens/1".to_owned(),
        "presets/microsoft365".to_owned(),
        "presets/amazon-ses".to_owned(),
        "tenant".to_owned(),
        "region".to_owned(),
    ];

    let pool = DescriptorPool::decode(mailplane_proto::FILE_DESCRIPTOR_SET).unwrap();
    let methods: Vec<MethodDescriptor> = pool
        .services()
        .filter(|s| s.package_name() == "mailplane.v1" && s.name() != "AgentService")
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect();
    assert!(
        methods.len() >= 36,
        "every service is here: {}",
        methods.len()
    );
    let mut maker = Maker {
        runner: TestRunner::new_with_rng(
            Config::default(),
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        ),
        strings: strings(known),
    };

    let mut before = fingerprint(server).await;
    let mut refused = 0;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..CASES {
        let method = &methods[case % methods.len()];
        let body = maker.message(&method.input(), 0).encode_to_vec();
        let token = if case >= CASES - BAD_TOKENS {
            maker.pick(prop_oneof![
                Just(String::new()),
                Just("mp_1_".to_owned()),
                Just("x".repeat(9_000)),
                "[!-~]{1,60}",
            ])
        } else {
            server.admin_token.clone()
        };
        let code = call(server, &token, method, body).await;
        assert!(
            !matches!(
                code,
                Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss
            ),
            "case {case}: {} answered {code:?}",
            method.full_name()
        );
        *codes.entry(format!("{code:?}")).or_default() += 1;
        let after = fingerprint(server).await;
        if code == Code::Ok {
            before = after;
        } else {
            refused += 1;
            assert!(
                after == before,
                "case {case}: a refused {} ({code:?}) changed the database",
                method.full_name()
            );
        }
    }
    println!("answers: {codes:?}");
    assert!(
        refused > CASES / 2,
        "most hostile calls are refused: {refused}"
    );
}

//! The JSON-lines sink carries each sealed event's `seq`, `prev_hash` and `hash`, and what
//! they cover, so that a SIEM can check the chain without the database: recomputed here.

use super::verify_until;
use mailplane_tests::{TestServer, account, both_backends, create_account};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

both_backends!(owned |c: &mut mailplane_server::ServerConfig| {
    c.audit_log = Some(c.data_dir.join("audit.jsonl"));
} => sink_lines_carry_links_a_siem_can_check);

/// The hash of a line, from its fields, as the README describes it.
fn recompute(line: &Value) -> String {
    let text = |k: &str| line[k].as_str().unwrap().to_owned();
    let int = |k: &str| line[k].as_i64().unwrap().to_string();
    let fields = [
        "mailplane-audit-v1".to_owned(),
        int("seq"),
        text("prev_hash"),
        int("id"),
        int("time_micros"),
        text("actor"),
        text("peer"),
        text("rpc"),
        text("resource"),
        text("outcome"),
        text("diff_text"),
    ];
    let mut h = Sha256::new();
    for f in fields {
        h.update(format!("{}:", f.len()));
        h.update(&f);
        h.update(";");
    }
    hex::encode(h.finalize())
}

async fn sink_lines_carry_links_a_siem_can_check(server: TestServer) {
    let sink = server.config.audit_log.clone().unwrap();
    let mut a = server.accounts();
    let mut names = Vec::new();
    for i in 0..4 {
        names.push(
            create_account(&mut a, account(&format!("Sunk {i}")))
                .await
                .name,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&sink).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if names
            .iter()
            .all(|n| lines.iter().any(|l| l["resource"] == n.as_str()))
        {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "the events reached the sink: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for pair in lines.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_i64(),
            pair[0]["seq"].as_i64().map(|s| s + 1)
        );
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "{pair:?}");
    }
    for line in &lines {
        assert_eq!(line["hash"].as_str().unwrap(), recompute(line), "{line}");
        let diff: Value = serde_json::from_str(line["diff_text"].as_str().unwrap()).unwrap();
        assert_eq!(diff, line["diff"]);
    }
    let last = lines.last().unwrap();
    assert_eq!(last["resource"], names[3].as_str());
    let r = verify_until(&server, "all sealed", |r| r.unsealed_count == 0).await;
    assert_eq!(
        r.head_hash,
        last["hash"].as_str().unwrap(),
        "the sink ends at the head"
    );
    server.stop().await.unwrap();
}

//! The audit log's hash chain: how an event is sealed, and how a chain is checked.
//!
//! Sealing gives each event the next sequence number `seq` (from 1, no gaps), the hash of the
//! event sealed before it as `prev_hash` ([`GENESIS`] for the first), and `hash`: the SHA-256,
//! in lower-case hex, of its [`canonical`] encoding, which covers `seq`, `prev_hash` and every
//! column of the event. Changing any of them, or removing an event from the middle, breaks
//! the chain at that event; [`Verifier`] finds the first such link.

use sha2::{Digest, Sha256};

/// What an event's hash covers besides its link: every column of its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainEvent<'a> {
    /// Its id.
    pub id: i64,
    /// When, in microseconds since the epoch.
    pub time: i64,
    /// Who.
    pub actor: &'a str,
    /// From where.
    pub peer: &'a str,
    /// Which RPC.
    pub rpc: &'a str,
    /// Which resource.
    pub resource: &'a str,
    /// `ok` or `denied`.
    pub outcome: &'a str,
    /// The diff or details, as the JSON text stored.
    pub diff: &'a str,
}

/// An event's place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its sequence number, from 1.
    pub seq: i64,
    /// The hash of the event sealed before it ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// Its own hash: SHA-256, hex.
    pub hash: String,
}

/// The `prev_hash` of the first event: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The tag every canonical encoding starts with (its version).
const TAG: &str = "mailplane-audit-v1";

/// How long a refusal event is left unsealed, in microseconds: it stands for every refusal of
/// its peer in a minute ([`crate::auth::refusals`]) and its count changes until that minute
/// is over. 75 s leaves 15 s for clocks and slow writes; a refusal that finds its event
/// sealed starts a new one instead of changing it.
pub const REFUSAL_SETTLE_MICROS: i64 = 75_000_000;

/// Events sealed per transaction at most.
pub const SEAL_BATCH: u32 = 1000;

/// The bytes an event's hash is taken over: each field as its length in bytes (decimal),
/// `:`, its UTF-8 bytes and `;`, in this order: the tag `mailplane-audit-v1`, `seq`,
/// `prev_hash`, the event's `id`, `time` (microseconds since the epoch; integers in decimal),
/// `actor`, `peer`, `rpc`, `resource`, `outcome` and `diff` (the JSON text as stored, which
/// is the compact form with keys as written).
pub fn canonical(seq: i64, prev_hash: &str, e: &ChainEvent<'_>) -> Vec<u8> {
    let fields: [&str; 11] = [
        TAG,
        &seq.to_string(),
        prev_hash,
        &e.id.to_string(),
        &e.time.to_string(),
        e.actor,
        e.peer,
        e.rpc,
        e.resource,
        e.outcome,
        e.diff,
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 8).sum());
    for f in fields {
        out.extend_from_slice(f.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(f.as_bytes());
        out.push(b';');
    }
    out
}

/// The hash of `e` sealed as number `seq` after the event whose hash is `prev_hash`.
pub fn hash(seq: i64, prev_hash: &str, e: &ChainEvent<'_>) -> String {
    hex::encode(Sha256::digest(canonical(seq, prev_hash, e)))
}

/// The links of `events` (in the order given), sealed after `head` (the last sealed event's
/// seq and hash; `None` for an empty chain).
pub fn seal(head: Option<(i64, String)>, events: &[ChainEvent<'_>]) -> Vec<Link> {
    let (mut seq, mut prev) = head.unwrap_or((0, GENESIS.to_owned()));
    events
        .iter()
        .map(|e| {
            seq += 1;
            let h = hash(seq, &prev, e);
            Link {
                seq,
                prev_hash: std::mem::replace(&mut prev, h.clone()),
                hash: h,
            }
        })
        .collect()
}

/// What is wrong with a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The event's hash is not the hash of what it holds: it (or its hash) was changed.
    HashMismatch,
    /// Its `prev_hash` is not the hash of the event before it.
    PrevHashMismatch,
    /// Sequence numbers are missing before it: events were deleted (or unsealed).
    Gap,
}

/// The first broken link of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The sequence number where the chain breaks (for a gap, the first one missing).
    pub seq: i64,
    /// The event there (for a gap, the first event after it).
    pub event_id: i64,
    /// What is wrong.
    pub problem: Problem,
    /// The same, in words.
    pub detail: String,
}

/// Checks a chain's sealed events, fed in `seq` order, and keeps the first break.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// Events checked so far.
    pub checked: u64,
    /// The last sequence number seen.
    pub head_seq: i64,
    /// The hash of the last event seen.
    pub head_hash: String,
    /// The first broken link, once found.
    pub broken: Option<Break>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            checked: 0,
            head_seq: 0,
            head_hash: GENESIS.to_owned(),
            broken: None,
        }
    }
}

impl Verifier {
    /// Checks the next sealed event `e` with its stored `link`.
    pub fn check(&mut self, e: &ChainEvent<'_>, link: &Link) {
        self.checked += 1;
        if self.broken.is_none() {
            self.broken = self.problem(e, link);
        }
        self.head_seq = link.seq;
        self.head_hash.clone_from(&link.hash);
    }

    fn problem(&self, e: &ChainEvent<'_>, link: &Link) -> Option<Break> {
        let expected = self.head_seq + 1;
        let broken = |seq, problem, detail: String| {
            Some(Break {
                seq,
                event_id: e.id,
                problem,
                detail,
            })
        };
        if link.seq != expected {
            let detail = format!(
                "seq {expected} is missing: the event after seq {} is seq {} (event {})",
                self.head_seq, link.seq, e.id
            );
            return broken(expected, Problem::Gap, detail);
        }
        if link.prev_hash != self.head_hash {
            let detail = format!(
                "event {} (seq {}) names {} as the hash before it, but seq {} has {}",
                e.id, link.seq, link.prev_hash, self.head_seq, self.head_hash
            );
            return broken(link.seq, Problem::PrevHashMismatch, detail);
        }
        let actual = hash(link.seq, &link.prev_hash, e);
        if link.hash != actual {
            let detail = format!(
                "event {} (seq {}) holds hash {} but its contents hash to {actual}: it was changed",
                e.id, link.seq, link.hash
            );
            return broken(link.seq, Problem::HashMismatch, detail);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;

    fn event(id: i64, diff: &str) -> AuditEvent {
        AuditEvent {
            id,
            time: 1_700_000_000_000_000 + id,
            actor: "tokens/1 (admin)".into(),
            peer: "127.0.0.1:5000".into(),
            rpc: "/mailplane.v1.SmtpAccountService/CreateAccount".into(),
            resource: format!("accounts/{id}"),
            outcome: "ok".into(),
            diff: diff.into(),
            link: None,
        }
    }

    fn chain(n: i64) -> (Vec<AuditEvent>, Vec<Link>) {
        let events: Vec<_> = (1..=n).map(|i| event(i, "{}")).collect();
        let view: Vec<_> = events.iter().map(AuditEvent::chain_event).collect();
        let links = seal(None, &view);
        (events, links)
    }

    fn verify(events: &[AuditEvent], links: &[Link]) -> Verifier {
        let mut v = Verifier::default();
        for (e, l) in events.iter().zip(links) {
            v.check(&e.chain_event(), l);
        }
        v
    }

    #[test]
    fn the_encoding_is_length_prefixed() {
        let e = event(7, "{\"a\":1}");
        let text = String::from_utf8(canonical(3, GENESIS, &e.chain_event())).unwrap();
        assert!(
            text.starts_with("18:mailplane-audit-v1;1:3;64:0000"),
            "{text}"
        );
        assert!(text.ends_with(";2:ok;7:{\"a\":1};"), "{text}");
        // Moving a byte from one field to the next changes the encoding.
        let mut moved = e.clone();
        moved.actor.push('x');
        moved.peer = moved.peer[1..].to_owned();
        assert_ne!(
            hash(3, GENESIS, &e.chain_event()),
            hash(3, GENESIS, &moved.chain_event())
        );
    }

    #[test]
    fn a_sealed_chain_verifies_and_continues_from_its_head() {
        let (events, links) = chain(5);
        assert_eq!(links[0].prev_hash, GENESIS);
        assert_eq!(links[4].seq, 5);
        let v = verify(&events, &links);
        assert_eq!((v.checked, v.head_seq, v.broken), (5, 5, None));
        let more = seal(
            Some((5, links[4].hash.clone())),
            &[event(9, "{}").chain_event()],
        );
        assert_eq!(more[0].seq, 6);
        assert_eq!(more[0].prev_hash, links[4].hash);
    }

    #[test]
    fn the_first_break_is_named() {
        let (mut events, links) = chain(5);
        events[2].diff = "{\"x\":1}".into();
        events[3].actor = "someone".into();
        let b = verify(&events, &links).broken.unwrap();
        assert_eq!(
            (b.seq, b.event_id, b.problem),
            (3, 3, Problem::HashMismatch)
        );

        let (events, mut links) = chain(5);
        links[1].prev_hash = links[2].hash.clone();
        let b = verify(&events, &links).broken.unwrap();
        assert_eq!((b.seq, b.problem), (2, Problem::PrevHashMismatch));

        let (mut events, mut links) = chain(5);
        events.remove(2);
        links.remove(2);
        let b = verify(&events, &links).broken.unwrap();
        assert_eq!((b.seq, b.event_id, b.problem), (3, 4, Problem::Gap));
    }
}

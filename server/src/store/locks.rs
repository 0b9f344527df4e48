//! The locks a write takes on PostgreSQL, where every replica writes at once.
//!
//! There is no lock that every write waits on. A write that reads a row and then changes it
//! locks that row ([`Write::lock_row`]); a write that relies on a row staying as it read it
//! (an account's credential keeps its kind) takes a share lock on it; foreign keys and unique
//! indexes refuse the rest. Only a rule that truly spans rows takes a narrow advisory lock
//! ([`Write::lock_rule`]): the one-default-account rule (all accounts), and the per-account
//! caps on tests and on deliveries at once (one account's tests, or its claims), and the one
//! sealer of the audit log's hash chain. SQLite needs none of this: its writers run one at a time
//! (`BEGIN IMMEDIATE`, and one replica), so both calls do nothing there.

use super::db::query;
use super::{Tx, Write};
use crate::domain::{AccountId, CredentialId};
use crate::error::Result;

/// A rule whose check spans rows, kept by a transaction-scoped advisory lock.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rule {
    /// One default account, the first account becomes it, the default goes last: every
    /// account write (they are few; message intake and deliveries never take it).
    Accounts,
    /// An account's cap on tests at once: the count and the new test.
    AccountTests(AccountId),
    /// An account's cap on deliveries at once: the count of its `SENDING` messages and the
    /// new claims.
    AccountClaims(AccountId),
    /// A credential's OAuth2 token fetch: one replica at a time asks the endpoint.
    CredentialToken(CredentialId),
    /// Sealing the audit log's hash chain: one sealer at a time, of any replica. Writers of
    /// events never take it.
    AuditSeal,
}

impl Rule {
    /// The advisory lock's key: "mp" in the top 16 bits, the rule in the next 8, then the
    /// account id's low 40 bits. Two accounts sharing a key only wait for each other.
    fn key(self) -> i64 {
        const BASE: i64 = 0x6d70 << 48;
        match self {
            Rule::Accounts => BASE | (1 << 40),
            Rule::AccountTests(id) => BASE | (2 << 40) | (id.0 & ((1 << 40) - 1)),
            Rule::AccountClaims(id) => BASE | (3 << 40) | (id.0 & ((1 << 40) - 1)),
            Rule::CredentialToken(id) => BASE | (4 << 40) | (id.0 & ((1 << 40) - 1)),
            Rule::AuditSeal => BASE | (5 << 40),
        }
    }
}

/// How a row is locked.
#[derive(Debug, Clone, Copy)]
pub(super) enum RowLock {
    /// The write changes the row but not its key: other writers of it wait, and rows that
    /// point at it (a new message of an account) do not.
    Update,
    /// The write deletes the row: its writers wait, and so do rows about to point at it.
    Delete,
    /// The write relies on the row as it is: writers of it wait, other sharers do not.
    Share,
}

impl Write<'_> {
    /// Takes `rule`'s advisory lock until the transaction ends (PostgreSQL).
    pub(super) async fn lock_rule(&mut self, rule: Rule) -> Result<()> {
        if matches!(self.tx, Tx::Postgres(_)) {
            let q = query("SELECT pg_advisory_xact_lock($1)").bind(rule.key());
            self.conn().execute(&q).await?;
        }
        Ok(())
    }

    /// Takes `rule`'s advisory lock until the transaction ends if no one else holds it
    /// (PostgreSQL; always on SQLite, whose writers run one at a time): whether it did.
    pub(super) async fn try_lock_rule(&mut self, rule: Rule) -> Result<bool> {
        if matches!(self.tx, Tx::Postgres(_)) {
            let q = query("SELECT pg_try_advisory_xact_lock($1)").bind(rule.key());
            let (got,): (bool,) = self.conn().one(&q).await?;
            return Ok(got);
        }
        Ok(true)
    }

    /// Locks row `id` of `table` until the transaction ends (PostgreSQL); a row that does not
    /// exist locks nothing, and the read that follows says so.
    pub(super) async fn lock_row(
        &mut self,
        table: &'static str,
        id: i64,
        lock: RowLock,
    ) -> Result<()> {
        let clause = self.row_lock(lock);
        if !clause.is_empty() {
            let q = query(format!("SELECT id FROM {table} WHERE id = $1{clause}")).bind(id);
            self.conn().execute(&q).await?;
        }
        Ok(())
    }

    /// The clause that ends a `SELECT` of rows this write will change (PostgreSQL), or
    /// nothing (SQLite).
    pub(super) fn row_lock(&self, lock: RowLock) -> &'static str {
        match (&self.tx, lock) {
            (Tx::Sqlite(_), _) => "",
            (Tx::Postgres(_), RowLock::Update) => " FOR NO KEY UPDATE",
            (Tx::Postgres(_), RowLock::Delete) => " FOR UPDATE",
            (Tx::Postgres(_), RowLock::Share) => " FOR SHARE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_keys_are_distinct_and_tagged() {
        let a = Rule::Accounts.key();
        let t1 = Rule::AccountTests(AccountId(1)).key();
        let t2 = Rule::AccountTests(AccountId(2)).key();
        let c1 = Rule::AccountClaims(AccountId(1)).key();
        let s = Rule::AuditSeal.key();
        let keys = [a, t1, t2, c1, s];
        for (i, k) in keys.iter().enumerate() {
            assert!(!keys[..i].contains(k), "{k:#x} twice");
        }
        for k in keys {
            assert_eq!(k >> 48, 0x6d70);
        }
    }
}

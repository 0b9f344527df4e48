//! SMTP tests: their state and payload (the stored test record, encoded by `smtp_tests::record`), per account.

use super::Store;
use super::audit::record;
use super::db::query;
use super::locks::Rule;
use super::rows::{TEST_COLUMNS, TestRow, convert};
use crate::audit::{AuditContext, diff};
use crate::domain::{
    AccountId, Micros, StoredTest, TestName, TestRequest, TestState, now_micros, rules,
};
use crate::error::{Error, Result};

/// The cap on a new test: at most `limit` tests of its account queued or running, counting
/// those created since `since` (older ones are past any deadline, left by a server that
/// stopped).
#[derive(Debug, Clone, Copy)]
pub struct TestCap {
    /// Tests at once per account.
    pub limit: usize,
    /// The oldest creation time still counted.
    pub since: Micros,
}

impl Store {
    /// Stores a new test for `account` (the audit event shows what `request` sends where, never
    /// the body), if the account has fewer than `cap.limit` tests queued or running on all
    /// replicas; `NotFound` if the account is gone.
    pub async fn create_test(
        &self,
        ctx: &AuditContext,
        account: AccountId,
        request: &TestRequest,
        cap: TestCap,
        payload: &[u8],
    ) -> Result<TestName> {
        let now = now_micros();
        let mut w = self.begin_write().await?;
        // The count and the new test go together: other replicas' new tests of this account
        // wait here (a test that stayed unfinished past any deadline is not counted; the
        // sweep closes it).
        w.lock_rule(Rule::AccountTests(account)).await?;
        let q = query(
            "SELECT COUNT(*) FROM smtp_tests \
             WHERE account_id = $1 AND state IN ('queued', 'running') AND create_time >= $2",
        )
        .bind(account.0)
        .bind(cap.since);
        let (unfinished,): (i64,) = w.conn().one(&q).await?;
        rules::test_cap(account, unfinished, cap.limit)?;
        let q = query(
            "INSERT INTO smtp_tests (account_id, state, payload, create_time, update_time) \
             SELECT id, $2, $3, $4, $4 FROM accounts WHERE id = $1 RETURNING id",
        )
        .bind(account.0)
        .bind(TestState::Queued.as_str())
        .bind(payload)
        .bind(now);
        let Some((id,)): Option<(i64,)> = w.conn().optional(&q).await? else {
            return Err(Error::NotFound(account.to_string()));
        };
        let name = TestName { account, id };
        let change = diff(None, Some(&request.audit_json(account)));
        record(&mut w, ctx, &name.to_string(), change).await?;
        w.commit().await?;
        Ok(name)
    }

    /// Replaces a test's state and payload (progress, not a change anyone asked for: no audit
    /// event), and announces it to the watchers of every replica (PostgreSQL).
    pub async fn update_test(
        &self,
        name: TestName,
        state: TestState,
        payload: &[u8],
    ) -> Result<()> {
        let q = query(
            "UPDATE smtp_tests SET state = $1, payload = $2, update_time = $3 \
             WHERE id = $4 AND account_id = $5",
        )
        .bind(state.as_str())
        .bind(payload)
        .bind(now_micros())
        .bind(name.id)
        .bind(name.account.0);
        self.execute(&q).await?;
        // Watchers on every replica read it again.
        self.announce(super::notify::TESTS_CHANNEL, name.id).await
    }

    /// Stores a running test's progress (its payload) and announces it to the watchers of
    /// every replica, as a progress write (see `begin_progress_write`).
    pub async fn record_test_progress(&self, name: TestName, payload: &[u8]) -> Result<()> {
        let mut w = self.begin_progress_write().await?;
        let q = query(
            "UPDATE smtp_tests SET payload = $1, update_time = $2 \
             WHERE id = $3 AND account_id = $4 AND state = 'running'",
        )
        .bind(payload)
        .bind(now_micros())
        .bind(name.id)
        .bind(name.account.0);
        w.conn().execute(&q).await?;
        if let Some(q) = self.announcement(super::notify::TESTS_CHANNEL, name.id) {
            w.conn().execute(&q).await?;
        }
        w.commit().await
    }

    /// Reads one test.
    pub async fn get_test(&self, name: TestName) -> Result<StoredTest> {
        let q = query(format!(
            "SELECT {TEST_COLUMNS} FROM smtp_tests WHERE id = $1 AND account_id = $2"
        ))
        .bind(name.id)
        .bind(name.account.0);
        match self.optional::<TestRow>(&q).await? {
            Some(row) => row.try_into(),
            None => Err(Error::NotFound(name.to_string())),
        }
    }

    /// Lists up to `limit` of an account's tests with ids below `before` (0: from the newest),
    /// newest first.
    pub async fn list_tests(
        &self,
        account: AccountId,
        before: i64,
        limit: u32,
    ) -> Result<Vec<StoredTest>> {
        let q = query(format!(
            "SELECT {TEST_COLUMNS} FROM smtp_tests \
             WHERE account_id = $1 AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(account.0)
        .bind(before)
        .bind(i64::from(limit));
        convert(self.all::<TestRow>(&q).await?)
    }

    /// Tests still queued or running that were created before `before`: left over by a server
    /// that stopped without finishing them.
    pub async fn stale_tests(&self, before: Micros) -> Result<Vec<StoredTest>> {
        let q = query(format!(
            "SELECT {TEST_COLUMNS} FROM smtp_tests \
             WHERE state IN ('queued', 'running') AND create_time < $1 ORDER BY id"
        ))
        .bind(before);
        convert(self.all::<TestRow>(&q).await?)
    }

    /// Deletes finished tests (with their transcripts) last changed before `before`. Returns
    /// how many.
    pub async fn purge_tests(&self, before: Micros) -> Result<u64> {
        let q = query(
            "DELETE FROM smtp_tests WHERE state NOT IN ('queued', 'running') AND update_time < $1",
        )
        .bind(before);
        self.execute(&q).await
    }
}

#[cfg(test)]
mod retention_tests {
    use crate::audit::AuditContext;
    use crate::domain::{Locale, StopAfter, TestRequest, TestState, now_micros};
    use crate::store::messages_tests::store_with_account;
    use crate::store::tests::TestCap;

    #[tokio::test]
    async fn only_finished_tests_past_retention_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let (store, account) = store_with_account(dir.path()).await;
        let request = TestRequest {
            to: "ops@example.com".into(),
            subject: "s".into(),
            body: "b".into(),
            locale: Locale::En,
            stop_after: StopAfter::Delivery,
        };
        let cap = TestCap {
            limit: 10,
            since: 0,
        };
        let ctx = AuditContext::system();
        let finished = store
            .create_test(&ctx, account, &request, cap, b"{}")
            .await
            .unwrap();
        store
            .update_test(finished, TestState::Succeeded, b"{}")
            .await
            .unwrap();
        let running = store
            .create_test(&ctx, account, &request, cap, b"{}")
            .await
            .unwrap();
        // Nothing is old enough yet.
        assert_eq!(store.purge_tests(0).await.unwrap(), 0);
        assert_eq!(store.purge_tests(now_micros() + 1).await.unwrap(), 1);
        let left = store.list_tests(account, 0, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, running, "an unfinished test is kept");
    }
}

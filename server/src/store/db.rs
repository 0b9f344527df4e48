//! Running one query text on either backend.
//!
//! A [`Query`] is SQL text (`$N` placeholders, which both databases accept) and its arguments
//! as plain values. [`Conn`] runs it on a SQLite or PostgreSQL connection and decodes rows into
//! any [`Record`] (a `#[derive(sqlx::FromRow)]` struct or a tuple). This is the only place that
//! matches on the backend to execute SQL, so the store's functions are ordinary code.

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Arguments as _, Database, Encode, FromRow, Postgres, Sqlite, Type};
use std::borrow::Cow;

/// A row type both backends can decode.
pub(super) trait Record:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Record for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// A value bound to a placeholder. Integers and texts may be NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Arg {
    /// A 64-bit integer.
    Int(Option<i64>),
    /// A text.
    Text(Option<String>),
    /// A boolean.
    Bool(bool),
    /// A byte string.
    Bytes(Vec<u8>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_owned))
    }
}

impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Self::Text(v.clone())
    }
}

impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}

impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}

/// A `LIKE` pattern (with `ESCAPE '\\'`) matching `needle` as a substring, case and all, with
/// the pattern characters in `needle` escaped so that a search for "50%" means just that.
pub(super) fn like_contains_exact_case(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A `LIKE` pattern matching `needle` as a case-insensitive substring of a lower-cased column.
pub(super) fn like_contains(needle: &str) -> String {
    like_contains_exact_case(&needle.to_lowercase())
}

/// SQL text and its arguments, in placeholder order.
#[derive(Debug, Clone)]
pub(super) struct Query {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
}

/// A query of `sql`, with no arguments yet.
pub(super) fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

impl Query {
    /// Binds the next placeholder.
    pub(super) fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Binds the next placeholders, in order.
    pub(super) fn bind_all(mut self, values: impl IntoIterator<Item = Arg>) -> Self {
        self.args.extend(values);
        self
    }

    /// Appends `clause`, whose `$?` stands for `value`'s placeholder (the next number): for
    /// filters that are present or not.
    pub(super) fn and(mut self, clause: &str, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        let placeholder = format!("${}", self.args.len());
        self.sql
            .to_mut()
            .push_str(&clause.replace("$?", &placeholder));
        self
    }

    /// Appends `clause`, which has no placeholder.
    pub(super) fn and_sql(mut self, clause: &str) -> Self {
        self.sql.to_mut().push_str(clause);
        self
    }

    /// Appends one parenthesised tuple of placeholders per row (`($1, $2), ($3, $4)`, numbered
    /// on from the arguments already bound) and binds the rows' values: a multi-row `VALUES`.
    pub(super) fn rows(mut self, rows: impl IntoIterator<Item = Vec<Arg>>) -> Self {
        let mut sql = String::new();
        for (i, row) in rows.into_iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for (j, value) in row.into_iter().enumerate() {
                self.args.push(value);
                if j > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", self.args.len()));
            }
            sql.push(')');
        }
        self.sql.to_mut().push_str(&sql);
        self
    }

    /// Appends `, $a, $b, …` (`values`' placeholders, numbered on) to a list begun in the text,
    /// as in `IN ($1` … `)`, and binds them; for `IN` lists of several values.
    pub(super) fn list(mut self, values: impl IntoIterator<Item = Arg>) -> Self {
        let mut sql = String::new();
        for (i, value) in values.into_iter().enumerate() {
            self.args.push(value);
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", self.args.len()));
        }
        self.sql.to_mut().push_str(&sql);
        self
    }

    /// How many arguments are bound.
    #[cfg(test)]
    pub(super) fn arg_count(&self) -> usize {
        self.args.len()
    }

    /// The SQL text.
    pub(super) fn sql(&self) -> &str {
        &self.sql
    }

    /// The arguments, for `DB`.
    fn arguments<'q, DB: Database>(&'q self) -> Result<DB::Arguments<'q>, sqlx::Error>
    where
        Option<i64>: Encode<'q, DB> + Type<DB>,
        Option<&'q str>: Encode<'q, DB> + Type<DB>,
        bool: Encode<'q, DB> + Type<DB>,
        &'q [u8]: Encode<'q, DB> + Type<DB>,
    {
        let mut out = DB::Arguments::default();
        for arg in &self.args {
            match arg {
                Arg::Int(v) => out.add(*v),
                Arg::Text(v) => out.add(v.as_deref()),
                Arg::Bool(v) => out.add(*v),
                Arg::Bytes(v) => out.add(v.as_slice()),
            }
            .map_err(sqlx::Error::Encode)?;
        }
        Ok(out)
    }
}

/// A connection of either backend: from the pool, or a write transaction's.
pub(super) enum Conn<'a> {
    /// SQLite.
    Sqlite(&'a mut SqliteConnection),
    /// PostgreSQL.
    Postgres(&'a mut PgConnection),
}

impl Conn<'_> {
    /// Every row the query returns.
    pub(super) async fn all<T: Record>(&mut self, q: &Query) -> Result<Vec<T>, sqlx::Error> {
        match self {
            Conn::Sqlite(c) => {
                sqlx::query_as_with::<Sqlite, T, _>(q.sql(), q.arguments::<Sqlite>()?)
                    .fetch_all(&mut **c)
                    .await
            }
            Conn::Postgres(c) => {
                sqlx::query_as_with::<Postgres, T, _>(q.sql(), q.arguments::<Postgres>()?)
                    .fetch_all(&mut **c)
                    .await
            }
        }
    }

    /// The first row, if any.
    pub(super) async fn optional<T: Record>(
        &mut self,
        q: &Query,
    ) -> Result<Option<T>, sqlx::Error> {
        match self {
            Conn::Sqlite(c) => {
                sqlx::query_as_with::<Sqlite, T, _>(q.sql(), q.arguments::<Sqlite>()?)
                    .fetch_optional(&mut **c)
                    .await
            }
            Conn::Postgres(c) => {
                sqlx::query_as_with::<Postgres, T, _>(q.sql(), q.arguments::<Postgres>()?)
                    .fetch_optional(&mut **c)
                    .await
            }
        }
    }

    /// The one row the query must return.
    pub(super) async fn one<T: Record>(&mut self, q: &Query) -> Result<T, sqlx::Error> {
        self.optional(q).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs a statement; the number of rows it affected.
    pub(super) async fn execute(&mut self, q: &Query) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Conn::Sqlite(c) => sqlx::query_with::<Sqlite, _>(q.sql(), q.arguments::<Sqlite>()?)
                .execute(&mut **c)
                .await?
                .rows_affected(),
            Conn::Postgres(c) => {
                sqlx::query_with::<Postgres, _>(q.sql(), q.arguments::<Postgres>()?)
                    .execute(&mut **c)
                    .await?
                    .rows_affected()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_keep_their_order() {
        let q = query("SELECT $1, $2, $3")
            .bind(1_i64)
            .bind("x")
            .bind_all([Arg::Bool(true)]);
        assert_eq!(q.sql(), "SELECT $1, $2, $3");
        let rows = query("INSERT INTO t VALUES ").rows([
            vec![Arg::from(1_i64), Arg::from("a")],
            vec![Arg::from(2_i64), Arg::from("b")],
        ]);
        assert_eq!(rows.sql(), "INSERT INTO t VALUES ($1, $2), ($3, $4)");
        assert_eq!(rows.args[3], Arg::Text(Some("b".into())));
        let list = query("SELECT 1 WHERE $1 IN (")
            .bind(7_i64)
            .list([Arg::from(7_i64), Arg::from(8_i64)])
            .and_sql(")");
        assert_eq!(list.sql(), "SELECT 1 WHERE $1 IN ($2, $3)");
        assert_eq!(
            q.args,
            vec![
                Arg::Int(Some(1)),
                Arg::Text(Some("x".into())),
                Arg::Bool(true)
            ]
        );
    }
}

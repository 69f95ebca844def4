//! A client span per SQL statement run inside a traced call, named from the statement's
//! operation and table (`SELECT users`). Neither the statement's text nor a bound value is
//! recorded: only the operation and table names, read from the SQL authd itself wrote.

use diesel::connection::{Instrumentation, InstrumentationEvent};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Set on every pooled connection.
#[derive(Default)]
pub struct QuerySpans {
    /// The statements running, with their SQL (never a bound value). Statements sent at once
    /// (`store::Shared`) are open together; a statement whose future was dropped never
    /// finishes, so only the last few are kept.
    open: std::collections::VecDeque<(String, tracing::Span)>,
}

/// How many statements' spans stay open at once on one connection.
const MAX_OPEN: usize = 8;

const OPERATIONS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WITH",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "LOCK",
];

/// The statement of a query's text without its bound values: diesel describes a statement
/// about to run as `SQL -- binds: [...]`, one that ran as the SQL alone.
fn statement_of(text: &str) -> &str {
    text.split_once(" -- binds: ").map_or(text, |(sql, _)| sql)
}

/// The operation and table of a statement, when they are plain words.
fn summary(sql: &str) -> (Option<&'static str>, Option<String>) {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(64)
        .map(|w| w.chars().filter(|c| *c != '"' && *c != '\\').collect::<String>())
        .collect();
    let Some(first) = words.first() else {
        return (None, None);
    };
    let operation = OPERATIONS.iter().copied().find(|op| first.eq_ignore_ascii_case(op));
    let after = |keyword: &str| {
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case(keyword))
            .and_then(|i| words.get(i + 1))
    };
    let table = match operation {
        Some("UPDATE") => words.get(1),
        Some("INSERT") => after("INTO"),
        Some("SELECT" | "DELETE" | "WITH") => after("FROM"),
        Some("LOCK") => after("TABLE"),
        _ => None,
    }
    .map(|t| t.trim_end_matches([',', ';', '(', ')']))
    .filter(|t| {
        t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    })
    .and_then(|t| t.rsplit('.').next())
    .filter(|t| !t.is_empty())
    .map(str::to_string);
    (operation, table)
}

impl Instrumentation for QuerySpans {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            // Only inside a call or a job that is itself traced: no root span per statement of
            // the background probes.
            InstrumentationEvent::StartQuery { query, .. } if crate::telemetry::spans::in_call() => {
                let text = query.to_string();
                let sql = statement_of(&text).to_string();
                let (operation, table) = summary(&sql);
                let name = match (operation, &table) {
                    (Some(op), Some(table)) => format!("{op} {table}"),
                    (Some(op), None) => op.to_string(),
                    _ => "postgresql".to_string(),
                };
                let span = tracing::info_span!("db", otel.name = name.as_str(), otel.kind = "client");
                span.set_attribute("db.system.name", "postgresql");
                if let Some(op) = operation {
                    span.set_attribute("db.operation.name", op);
                }
                if let Some(table) = table {
                    span.set_attribute("db.collection.name", table);
                }
                if self.open.len() == MAX_OPEN {
                    self.open.pop_front();
                }
                self.open.push_back((sql, span));
            }
            InstrumentationEvent::FinishQuery { query, error, .. } => {
                if self.open.is_empty() {
                    return;
                }
                let text = query.to_string();
                let sql = statement_of(&text);
                let Some(at) = self.open.iter().position(|(open, _)| open == sql) else {
                    return;
                };
                let Some((_, span)) = self.open.remove(at) else { return };
                let failure = match error {
                    Some(diesel::result::Error::NotFound) | None => None,
                    Some(diesel::result::Error::DatabaseError(kind, _)) => Some(format!("{kind:?}")),
                    Some(_) => Some("diesel".to_string()),
                };
                if let Some(class) = failure {
                    span.set_attribute("error.type", class.clone());
                    span.set_status(opentelemetry::trace::Status::error(class));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{statement_of, summary};

    #[test]
    fn a_statement_is_known_by_its_sql_without_the_binds() {
        use crate::store::schema::users;
        use diesel::prelude::*;
        let query = users::table
            .filter(users::email_normalized.eq("secret@example.com"))
            .select(users::id);
        let about_to_run = diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string();
        assert!(about_to_run.contains("secret@example.com"), "{about_to_run}");
        let sql = statement_of(&about_to_run);
        assert!(!sql.contains("secret"), "{sql}");
        assert!(sql.starts_with("SELECT") && sql.ends_with("$1)"), "{sql}");
        assert_eq!(statement_of(sql), sql);
        assert_eq!(statement_of("BEGIN"), "BEGIN");
    }

    #[test]
    fn statements_are_named_by_operation_and_table() {
        let s = |sql| summary(sql);
        assert_eq!(
            s(r#""SELECT \"users\".\"id\" FROM \"users\" WHERE (\"users\".\"email\" = $1)""#),
            (Some("SELECT"), Some("users".into()))
        );
        assert_eq!(
            s(r#"INSERT INTO "sessions" ("id") VALUES ($1)"#),
            (Some("INSERT"), Some("sessions".into()))
        );
        assert_eq!(
            s(r#"UPDATE "public"."users" SET x = $1"#),
            (Some("UPDATE"), Some("users".into()))
        );
        assert_eq!(s("BEGIN"), (Some("BEGIN"), None));
        assert_eq!(s("SELECT 1"), (Some("SELECT"), None));
        assert_eq!(s("SELECT * FROM 'secret@example.com'"), (Some("SELECT"), None));
        assert_eq!(s("VACUUM x"), (None, None));
    }
}

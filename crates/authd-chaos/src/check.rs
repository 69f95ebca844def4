//! The invariants, checked over the answer log after a run.

use crate::log::{Entry, Kind};
use std::collections::{HashMap, HashSet};

/// How long after its revocation was acknowledged a credential may still introspect active.
pub const REVOCATION_BOUND_US: u64 = 1_000_000;
/// How long after the last fault ends every replica must be SERVING again.
pub const RECOVERY_BOUND_US: u64 = 15_000_000;

/// One invariant's result.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// A short name, for `--expect` and the `Invariant:` line of a broken patch.
    pub id: &'static str,
    pub name: &'static str,
    pub checked: u64,
    pub violations: Vec<String>,
}

/// The codes an answer may have besides `OK` and `UNAVAILABLE`: the refusals the API documents
/// for what the load does.
fn allowed_refusals(op: &str) -> &'static [&'static str] {
    match op {
        "login" | "register" | "request_reset" | "create_api_key" => &["RESOURCE_EXHAUSTED"],
        // A token spent by the other of two refreshes at once, or of a session ended meanwhile.
        "refresh" | "logout" => &["UNAUTHENTICATED", "RESOURCE_EXHAUSTED"],
        "rotate_api_key" | "revoke_api_key" => &["RESOURCE_EXHAUSTED", "NOT_FOUND"],
        _ => &[],
    }
}

/// The invariants' short names, in the table's order.
pub const IDS: [&str; 7] = [
    "revocation",
    "coverage",
    "refresh",
    "mail",
    "recovery",
    "answers",
    "panics",
];

pub fn check(entries: &[Entry]) -> Vec<Outcome> {
    vec![
        revoked_stay_revoked(entries),
        faults_were_probed(entries),
        refresh_tokens_spent_once(entries),
        mail_delivered_once(entries),
        replicas_recover(entries),
        answers_are_documented(entries),
        no_panics(entries),
    ]
}

fn calls<'a>(entries: &'a [Entry], op: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
    entries.iter().filter(move |e| e.kind() == Kind::Call && e.op == op)
}

/// The acknowledged calls that revoke credentials.
fn revoking_calls(entries: &[Entry]) -> impl Iterator<Item = &Entry> {
    entries.iter().filter(|e| {
        e.kind() == Kind::Call && matches!(e.op.as_str(), "logout" | "rotate_api_key" | "revoke_api_key") && e.is_ok()
    })
}

/// When each credential's revocation was first acknowledged.
fn revocations(entries: &[Entry]) -> HashMap<u64, u64> {
    let mut revoked_at: HashMap<u64, u64> = HashMap::new();
    for entry in revoking_calls(entries) {
        for cred in &entry.creds {
            let at = revoked_at.entry(*cred).or_insert(entry.t1);
            *at = (*at).min(entry.t1);
        }
    }
    revoked_at
}

/// No credential introspects active later than 1 s after its revocation was acknowledged, on
/// any replica. Checked: every introspection of a revoked credential that began after that.
fn revoked_stay_revoked(entries: &[Entry]) -> Outcome {
    let revoked_at = revocations(entries);
    let mut outcome = Outcome {
        id: "revocation",
        name: "no credential active > 1 s after its revocation was acknowledged",
        checked: 0,
        violations: Vec::new(),
    };
    for entry in calls(entries, "introspect").filter(|e| e.is_ok()) {
        for cred in &entry.creds {
            let Some(at) = revoked_at.get(cred) else { continue };
            if entry.t0 <= at + REVOCATION_BOUND_US {
                continue;
            }
            outcome.checked += 1;
            if entry.active == Some(true) {
                outcome.violations.push(format!(
                    "credential {cred} introspected active on replica {} at {:.3} s, {:.3} s after its revocation",
                    entry.replica.unwrap_or(0),
                    secs(entry.t0),
                    secs(entry.t0 - at)
                ));
            }
        }
    }
    outcome
}

/// A revocation counts as made under a fault from a second before it began (its probes fall in
/// the fault) to three seconds after it ended (calls held up by a database failover are
/// acknowledged only then).
const UNDER_FAULT_BEFORE_US: u64 = 1_000_000;
const UNDER_FAULT_AFTER_US: u64 = 3_000_000;

/// The first invariant means something only if it was tested under each fault: for every fault
/// of a second or more, a credential revoked under it and then introspected past the bound. A
/// fault of one replica (the partition) needs a credential revoked on that replica while it was
/// cut off and introspected on another: what crosses the cut. Checked: those faults.
fn faults_were_probed(entries: &[Entry]) -> Outcome {
    // Each credential's first acknowledged revocation: when, and on which replica.
    let mut revoked: HashMap<u64, (u64, Option<usize>)> = HashMap::new();
    for entry in revoking_calls(entries) {
        for cred in &entry.creds {
            let at = revoked.entry(*cred).or_insert((entry.t1, entry.replica));
            if entry.t1 < at.0 {
                *at = (entry.t1, entry.replica);
            }
        }
    }
    // (when it was revoked, where, where it was probed) for every checked probe.
    let probes: Vec<(u64, Option<usize>, Option<usize>)> = calls(entries, "introspect")
        .filter(|e| e.is_ok())
        .flat_map(|e| {
            e.creds.iter().filter_map(|cred| {
                let (at, by) = *revoked.get(cred)?;
                (e.t0 > at + REVOCATION_BOUND_US).then_some((at, by, e.replica))
            })
        })
        .collect();
    let mut outcome = Outcome {
        id: "coverage",
        name: "revocations made under every fault of 1 s or more probed",
        checked: 0,
        violations: Vec::new(),
    };
    for fault in entries
        .iter()
        .filter(|e| e.kind() == Kind::Fault && e.t1 >= e.t0 + 1_000_000)
    {
        outcome.checked += 1;
        let under = match fault.replica {
            Some(_) => fault.t0..=fault.t1,
            None => fault.t0.saturating_sub(UNDER_FAULT_BEFORE_US)..=fault.t1 + UNDER_FAULT_AFTER_US,
        };
        let covered = probes.iter().any(|(at, by, on)| {
            under.contains(at)
                && match fault.replica {
                    Some(cut) => *by == Some(cut) && *on != Some(cut),
                    None => true,
                }
        });
        if !covered {
            let what = match fault.replica {
                Some(cut) => format!("revoked on replica {cut} and introspected on another"),
                None => "revoked and introspected".into(),
            };
            outcome.violations.push(format!(
                "{} ({:.1} s to {:.1} s): no credential was {what}",
                fault.op,
                secs(fault.t0),
                secs(fault.t1)
            ));
        }
    }
    outcome
}

/// No refresh token succeeded twice. Checked: every refresh token presented.
fn refresh_tokens_spent_once(entries: &[Entry]) -> Outcome {
    let mut successes: HashMap<u64, u64> = HashMap::new();
    for entry in calls(entries, "refresh") {
        let Some(token) = entry.refresh else { continue };
        let count = successes.entry(token).or_default();
        if entry.is_ok() {
            *count += 1;
        }
    }
    Outcome {
        id: "refresh",
        name: "no refresh token succeeded twice",
        checked: successes.len() as u64,
        violations: successes
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(token, n)| format!("refresh token {token} succeeded {n} times"))
            .collect(),
    }
}

/// Every acknowledged mail request delivered exactly once (by the end of the run, after SMTP
/// returned), and no mailbox gets more mails than were asked for it. Each mailbox is asked once.
fn mail_delivered_once(entries: &[Entry]) -> Outcome {
    let mut asked: HashMap<&str, (u64, u64)> = HashMap::new();
    for entry in calls(entries, "request_reset") {
        let Some(mailbox) = entry.mailbox.as_deref() else {
            continue;
        };
        let (acknowledged, sent) = asked.entry(mailbox).or_default();
        *sent += 1;
        if entry.is_ok() {
            *acknowledged += 1;
        }
    }
    let mut delivered: HashMap<&str, u64> = HashMap::new();
    for entry in entries
        .iter()
        .filter(|e| e.kind() == Kind::Mail && e.op == "reset_password")
    {
        if let Some(mailbox) = entry.mailbox.as_deref() {
            *delivered.entry(mailbox).or_default() += 1;
        }
    }
    let mut outcome = Outcome {
        id: "mail",
        name: "every acknowledged mail request delivered exactly once",
        checked: 0,
        violations: Vec::new(),
    };
    for (mailbox, (acknowledged, sent)) in &asked {
        let got = delivered.get(mailbox).copied().unwrap_or(0);
        if *acknowledged > 0 {
            outcome.checked += 1;
        }
        if got < *acknowledged || got > *sent {
            outcome.violations.push(format!(
                "{mailbox}: {got} mails delivered for {acknowledged} acknowledged of {sent} requests"
            ));
        }
    }
    for (mailbox, got) in &delivered {
        if !asked.contains_key(mailbox) {
            outcome
                .violations
                .push(format!("{mailbox}: {got} mails nobody asked for"));
        }
    }
    outcome
}

/// Every replica SERVING again within 15 s of the last fault's end. Checked: each replica.
fn replicas_recover(entries: &[Entry]) -> Outcome {
    let mut outcome = Outcome {
        id: "recovery",
        name: "every replica SERVING within 15 s of the last fault",
        checked: 0,
        violations: Vec::new(),
    };
    let Some(last_fault) = entries.iter().filter(|e| e.kind() == Kind::Fault).map(|e| e.t1).max() else {
        outcome.violations.push("no fault was injected".into());
        return outcome;
    };
    let replicas: HashSet<usize> = entries
        .iter()
        .filter(|e| e.kind() == Kind::Health)
        .filter_map(|e| e.replica)
        .collect();
    if replicas.is_empty() {
        outcome.violations.push("no health was sampled".into());
    }
    let mut replicas: Vec<usize> = replicas.into_iter().collect();
    replicas.sort_unstable();
    for replica in replicas {
        outcome.checked += 1;
        let back = entries
            .iter()
            .filter(|e| e.kind() == Kind::Health && e.replica == Some(replica) && e.t0 >= last_fault)
            .find(|e| e.active == Some(true));
        match back {
            Some(sample) if sample.t0 - last_fault <= RECOVERY_BOUND_US => {}
            Some(sample) => outcome.violations.push(format!(
                "replica {replica} SERVING only {:.1} s after the last fault",
                secs(sample.t0 - last_fault)
            )),
            None => outcome
                .violations
                .push(format!("replica {replica} never SERVING after the last fault")),
        }
    }
    outcome
}

/// No answer other than OK, the documented refusals and UNAVAILABLE. Checked: every call.
fn answers_are_documented(entries: &[Entry]) -> Outcome {
    let mut outcome = Outcome {
        id: "answers",
        name: "every answer OK, a documented refusal or UNAVAILABLE",
        checked: 0,
        violations: Vec::new(),
    };
    let mut odd: HashMap<(String, String), u64> = HashMap::new();
    for entry in entries.iter().filter(|e| e.kind() == Kind::Call) {
        outcome.checked += 1;
        let code = entry.code.as_deref().unwrap_or("NONE");
        if code == "OK" || code == "UNAVAILABLE" || allowed_refusals(&entry.op).contains(&code) {
            continue;
        }
        *odd.entry((entry.op.clone(), code.to_string())).or_default() += 1;
    }
    let mut odd: Vec<_> = odd.into_iter().collect();
    odd.sort();
    outcome.violations = odd
        .into_iter()
        .map(|((op, code), n)| format!("{op}: {n} × {code}"))
        .collect();
    outcome
}

/// No panic in any replica's log. Checked: each log scanned.
fn no_panics(entries: &[Entry]) -> Outcome {
    let scans: Vec<&Entry> = entries.iter().filter(|e| e.kind() == Kind::Panics).collect();
    Outcome {
        id: "panics",
        name: "no panic in any replica's log",
        checked: scans.len() as u64,
        violations: scans
            .iter()
            .filter(|e| e.count.unwrap_or(0) > 0)
            .map(|e| format!("{}: {} panics", e.op, e.count.unwrap_or(0)))
            .collect(),
    }
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The table printed after a run; true when no invariant was violated.
pub fn report(outcomes: &[Outcome]) -> (String, bool) {
    let mut text = String::from("| invariant | checked | violations |\n|---|---|---|\n");
    let mut clean = true;
    for outcome in outcomes {
        text.push_str(&format!(
            "| {} | {} | {} |\n",
            outcome.name,
            outcome.checked,
            outcome.violations.len()
        ));
        clean &= outcome.violations.is_empty();
    }
    for outcome in outcomes.iter().filter(|o| !o.violations.is_empty()) {
        text.push_str(&format!("\n{}:\n", outcome.name));
        for violation in outcome.violations.iter().take(20) {
            text.push_str(&format!("  - {violation}\n"));
        }
        if outcome.violations.len() > 20 {
            text.push_str(&format!("  - … and {} more\n", outcome.violations.len() - 20));
        }
    }
    (text, clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: &str, t0: u64, t1: u64, code: &str) -> Entry {
        Entry {
            kind: Some(Kind::Call),
            op: op.into(),
            replica: Some(1),
            t0,
            t1,
            code: Some(code.into()),
            ..Entry::default()
        }
    }

    fn introspect(cred: u64, t0: u64, active: bool) -> Entry {
        Entry {
            creds: vec![cred],
            active: Some(active),
            ..call("introspect", t0, t0 + 10, "OK")
        }
    }

    fn find<'a>(outcomes: &'a [Outcome], prefix: &str) -> &'a Outcome {
        outcomes.iter().find(|o| o.name.starts_with(prefix)).unwrap()
    }

    #[test]
    fn an_active_answer_past_the_bound_is_a_violation_and_one_within_it_is_not() {
        let logout = Entry {
            creds: vec![7],
            ..call("logout", 0, 1_000, "OK")
        };
        let entries = vec![
            logout,
            introspect(7, 500_000, true),
            introspect(7, 1_100_000, false),
            introspect(7, 2_100_000, true),
            introspect(8, 5_000_000, true),
        ];
        let outcome = revoked_stay_revoked(&entries);
        assert_eq!(outcome.checked, 2);
        assert_eq!(outcome.violations.len(), 1, "{:?}", outcome.violations);
        // An unacknowledged revocation promises nothing.
        let entries = vec![
            Entry {
                creds: vec![7],
                ..call("logout", 0, 1_000, "UNAVAILABLE")
            },
            introspect(7, 3_000_000, true),
        ];
        assert!(revoked_stay_revoked(&entries).violations.is_empty());
    }

    #[test]
    fn a_refresh_token_spent_twice_mail_lost_or_doubled_and_odd_codes_are_violations() {
        let refresh = |code| Entry {
            refresh: Some(3),
            ..call("refresh", 0, 1, code)
        };
        let mail = |mailbox: &str| Entry {
            kind: Some(Kind::Mail),
            op: "reset_password".into(),
            mailbox: Some(mailbox.into()),
            ..Entry::default()
        };
        let asked = |mailbox: &str, code| Entry {
            mailbox: Some(mailbox.into()),
            ..call("request_reset", 0, 1, code)
        };
        let entries = vec![
            refresh("OK"),
            refresh("UNAUTHENTICATED"),
            refresh("OK"),
            asked("a", "OK"),
            asked("b", "OK"),
            asked("c", "UNAVAILABLE"),
            mail("a"),
            mail("c"),
            mail("d"),
            call("introspect", 0, 1, "INTERNAL"),
            call("login", 0, 1, "DEADLINE_EXCEEDED"),
        ];
        let outcomes = check(&entries);
        assert_eq!(find(&outcomes, "no refresh").violations.len(), 1);
        let mail = find(&outcomes, "every acknowledged mail");
        assert_eq!(mail.checked, 2);
        // b never arrived; d was never asked for; c (unacknowledged, delivered) is fine.
        assert_eq!(mail.violations.len(), 2, "{:?}", mail.violations);
        assert_eq!(find(&outcomes, "every answer").violations.len(), 2);
        let (table, clean) = report(&outcomes);
        assert!(!clean);
        assert!(
            table.contains("| no refresh token succeeded twice | 1 | 1 |"),
            "{table}"
        );
    }

    #[test]
    fn every_fault_of_a_second_or_more_needs_a_revocation_under_it_probed() {
        let fault = |op: &str, t0, t1, replica| Entry {
            kind: Some(Kind::Fault),
            op: op.into(),
            replica,
            t0,
            t1,
            ..Entry::default()
        };
        let logout = |cred, replica, t1| Entry {
            creds: vec![cred],
            replica: Some(replica),
            ..call("logout", t1 - 1_000, t1, "OK")
        };
        let probe = |cred, replica, t0| Entry {
            replica: Some(replica),
            ..introspect(cred, t0, false)
        };
        let s = 1_000_000;
        let entries = vec![
            fault("probed", 2 * s, 4 * s, None),
            logout(7, 1, 2 * s + s / 2),
            probe(7, 2, 4 * s),
            fault("not probed", 5 * s, 7 * s, None),
            fault("short", 8 * s, 8 * s + s / 2, None),
            // Cut off: revoked there, but probed only there.
            fault("partition one", 11 * s, 14 * s, Some(3)),
            logout(9, 3, 12 * s),
            probe(9, 3, 13 * s + s / 2),
            // Revoked there, probed on another.
            fault("partition two", 20 * s, 23 * s, Some(3)),
            logout(10, 3, 21 * s),
            probe(10, 1, 22 * s + s / 2),
            // Probed within the bound only: not a checked probe.
            fault("too early", 30 * s, 32 * s, None),
            logout(11, 2, 31 * s),
            probe(11, 1, 31 * s + s / 2),
        ];
        let outcome = faults_were_probed(&entries);
        assert_eq!(outcome.checked, 5);
        let failed: Vec<&str> = outcome
            .violations
            .iter()
            .map(|v| v.split(" (").next().unwrap())
            .collect();
        assert_eq!(
            failed,
            ["not probed", "partition one", "too early"],
            "{:?}",
            outcome.violations
        );
    }

    #[test]
    fn the_invariants_come_in_the_order_of_their_ids() {
        let ids: Vec<&str> = check(&[]).iter().map(|o| o.id).collect();
        assert_eq!(ids, IDS);
    }

    #[test]
    fn replicas_must_serve_again_within_the_bound() {
        let fault = Entry {
            kind: Some(Kind::Fault),
            op: "kill".into(),
            t0: 0,
            t1: 1_000_000,
            ..Entry::default()
        };
        let health = |replica, t0, serving| Entry {
            kind: Some(Kind::Health),
            replica: Some(replica),
            t0,
            active: Some(serving),
            ..Entry::default()
        };
        let entries = vec![
            fault,
            health(1, 2_000_000, true),
            health(2, 2_000_000, false),
            health(2, 17_000_000, true),
            health(3, 3_000_000, false),
        ];
        let outcome = replicas_recover(&entries);
        assert_eq!(outcome.checked, 3);
        assert_eq!(outcome.violations.len(), 2, "{:?}", outcome.violations);
    }
}

//! The watchers of this replica's revocations (`WatchRevocations`), in the list-then-watch
//! pattern: each revocation applied here gets a position in a sequence that is this process's own
//! (its *epoch*), the most recent ones are kept for a while, and a watcher either resumes from a
//! position still held or starts over from a snapshot of the view.
//!
//! A cursor is `<epoch>.<position>`: the position of the next event the watcher has not seen.
//! Another replica's cursor, or one older than what is held, cannot resume; that is a resync, not
//! an error.

use super::Revocation;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// How many recent events are kept for watchers that reconnect or fall behind.
const HISTORY: usize = 16_384;
/// How far a live watcher may fall behind before it must catch up from the history (and, past
/// the history too, start over from a snapshot).
pub const LIVE_BUFFER: usize = 1024;

/// One revocation and its position in this replica's sequence.
#[derive(Clone, Debug)]
pub struct Sequenced {
    pub position: u64,
    pub revocation: Revocation,
}

impl Sequenced {
    /// The cursor just after this event.
    pub fn cursor(&self, epoch: &str) -> String {
        cursor(epoch, self.position + 1)
    }
}

/// The cursor for `position` in `epoch`.
pub fn cursor(epoch: &str, position: u64) -> String {
    format!("{epoch}.{position}")
}

/// What a cursor names, once parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Cursor<'a> {
    pub epoch: &'a str,
    pub position: u64,
}

impl<'a> Cursor<'a> {
    /// `None` for anything this service never issued.
    pub fn parse(text: &'a str) -> Option<Self> {
        let (epoch, position) = text.split_once('.')?;
        if epoch.is_empty() || epoch.len() > 64 || !epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        Some(Self {
            epoch,
            position: position.parse().ok()?,
        })
    }
}

/// Where a new watcher starts.
pub enum Start {
    /// From a snapshot of the view: every event before `position` is in the view already.
    Snapshot { position: u64 },
    /// From the events missed since the watcher's cursor, in order.
    Resume(Vec<Sequenced>),
}

/// A watcher's subscription: where it starts, and the live events after that.
pub struct Subscription {
    pub start: Start,
    pub events: broadcast::Receiver<Sequenced>,
}

#[derive(Default)]
struct History {
    /// The position the next event gets.
    next: u64,
    /// The last events, oldest first; positions `next - recent.len() .. next`.
    recent: VecDeque<Sequenced>,
}

/// The hub every watcher of this replica subscribes to.
pub struct Watchers {
    epoch: String,
    history: Mutex<History>,
    events: broadcast::Sender<Sequenced>,
}

impl Watchers {
    /// `epoch` names this process's sequence (the feed's origin: unique per process).
    pub fn new(epoch: &str) -> Self {
        Self {
            epoch: epoch.to_string(),
            history: Mutex::default(),
            events: broadcast::channel(LIVE_BUFFER).0,
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Gives the next position to a revocation just applied to the view and sends it to every
    /// watcher. Called after the view holds it, so a snapshot taken after a subscription never
    /// misses an event the subscription does not deliver.
    pub fn notify(&self, revocation: &Revocation) {
        let mut history = self.history.lock().expect("watch history lock");
        let event = Sequenced {
            position: history.next,
            revocation: revocation.clone(),
        };
        history.next += 1;
        if history.recent.len() == HISTORY {
            history.recent.pop_front();
        }
        history.recent.push_back(event.clone());
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    /// Subscribes a watcher: from its cursor when this replica still holds every event since,
    /// otherwise from a snapshot (`resumable` is then false when a cursor was given).
    pub fn subscribe(&self, since: Option<&Cursor<'_>>) -> (Subscription, bool) {
        // Under the history lock, so that no event falls between what is replayed (or already in
        // the view) and what the receiver gets.
        let history = self.history.lock().expect("watch history lock");
        let events = self.events.subscribe();
        let oldest = history.next - history.recent.len() as u64;
        match since {
            Some(cursor) if cursor.epoch == self.epoch && (oldest..=history.next).contains(&cursor.position) => {
                let missed = history
                    .recent
                    .iter()
                    .filter(|event| event.position >= cursor.position)
                    .cloned()
                    .collect();
                (
                    Subscription {
                        start: Start::Resume(missed),
                        events,
                    },
                    true,
                )
            }
            _ => (
                Subscription {
                    start: Start::Snapshot { position: history.next },
                    events,
                },
                since.is_none(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::RevocationKind;
    use chrono::Utc;

    fn revocation(subject: &str) -> Revocation {
        let now = Utc::now();
        Revocation {
            kind: RevocationKind::Session,
            subject_id: subject.into(),
            user_id: None,
            created_at: now,
            expires_at: now + chrono::Duration::minutes(16),
        }
    }

    #[test]
    fn cursors_resume_within_the_window_and_resync_outside_it() {
        let hub = Watchers::new("abc");
        let (first, ok) = hub.subscribe(None);
        assert!(ok);
        let Start::Snapshot { position } = first.start else {
            panic!("a new watcher starts from a snapshot")
        };
        assert_eq!(position, 0);
        hub.notify(&revocation("s1"));
        hub.notify(&revocation("s2"));
        let mark = cursor("abc", 1);
        let parsed = Cursor::parse(&mark).unwrap();
        let (resumed, ok) = hub.subscribe(Some(&parsed));
        assert!(ok);
        let Start::Resume(missed) = resumed.start else {
            panic!("a cursor in the window resumes")
        };
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].revocation.subject_id, "s2");
        assert_eq!(missed[0].cursor("abc"), "abc.2");
        // The very latest cursor resumes with nothing missed.
        let (latest, ok) = hub.subscribe(Some(&Cursor::parse("abc.2").unwrap()));
        assert!(ok && matches!(latest.start, Start::Resume(ref m) if m.is_empty()));
        // Another process's cursor, or a future one, starts over.
        for other in ["xyz.1", "abc.3"] {
            let (sub, ok) = hub.subscribe(Some(&Cursor::parse(other).unwrap()));
            assert!(!ok, "{other}");
            assert!(matches!(sub.start, Start::Snapshot { position: 2 }));
        }
        // Past the window a cursor is too old.
        for i in 0..HISTORY {
            hub.notify(&revocation(&format!("more{i}")));
        }
        let (old, ok) = hub.subscribe(Some(&parsed));
        assert!(!ok && matches!(old.start, Start::Snapshot { .. }));
        for bad in ["", "abc", ".1", "abc.x", "a-b.1", "abc.-1"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}

//! The network side: a [`Verifier`] that loads authd's keys with `GetJwks`, follows `WatchKeys`
//! and `WatchRevocations` in the background, and verifies credentials in-process with the rules
//! of [`crate::verify`], the code the server runs.
//!
//! What it cannot decide locally goes to `Introspect`: API keys (their hashes never leave authd),
//! access tokens signed by a key it has not seen while it is not following the keys, and every
//! access token while its revocation view has not been confirmed for longer than
//! [`Options::max_staleness`]. When `Introspect` cannot be reached either, the answer is
//! [`Rejection::Unavailable`]: it fails closed.

mod answers;
mod follow;

use crate::api_key;
use crate::cache::VerifiedTokens;
use crate::identity::{Identity, TokenType};
use crate::keys::KeySet;
use crate::revocation::RevocationView;
use crate::verify::{AccessClaims, LEEWAY_SECS, MAX_TOKEN_LEN, Rejection, TokenRules};
use answers::{Answer, Answers};
use authd_proto::token_service_client::TokenServiceClient;
use authd_proto::{GetJwksRequest, GetJwksResponse, IntrospectRequest, IntrospectResponse};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

/// How a [`Verifier`] behaves. `Options::default()` suits most services.
#[derive(Clone, Debug)]
pub struct Options {
    /// The issuer tokens must name (`iss`). `None`: the one authd announces. When set, it must be
    /// the one authd announces, or [`Verifier::connect`] fails.
    pub issuer: Option<String>,
    /// The audience tokens must carry (`aud`). `None`: the one authd announces. When set, it must
    /// be the one authd announces, or [`Verifier::connect`] fails.
    pub audience: Option<String>,
    /// How long the revocation view is trusted after the last word from authd (an event or a
    /// heartbeat on a stream that is in step). Past it, every access token goes to `Introspect`.
    pub max_staleness: Duration,
    /// How often authd is asked to send a heartbeat on the revocation stream; a stream silent for
    /// three intervals is dropped and reopened. Keep it well under `max_staleness`.
    pub heartbeat_interval: Duration,
    /// How long an `Introspect` answer is reused (it is re-checked against the clock and the
    /// revocation view on every use). Zero turns the cache off.
    pub introspection_ttl: Duration,
    /// How many `Introspect` answers are kept (as many again for inactive answers, apart, so a
    /// flood of bad credentials cannot push out the good ones).
    pub introspection_cache_size: usize,
    /// How many `Introspect` calls may be in flight at once; more wait (within
    /// `request_timeout`), so a flood of made-up credentials cannot flood authd. Credentials
    /// authd answered active before have as many again of their own.
    pub max_concurrent_introspections: usize,
    /// How many verified access tokens are kept, so a token presented again skips the signature.
    pub token_cache_size: usize,
    /// How long [`Verifier::connect`] waits for the keys and the first revocation snapshot.
    pub connect_timeout: Duration,
    /// How long one `Introspect` call may take before the answer is [`Rejection::Unavailable`].
    pub request_timeout: Duration,
    /// The longest wait between two attempts to reopen a stream (the first is 100 ms, then it
    /// doubles).
    pub max_backoff: Duration,
}

impl Options {
    /// Refuses settings that cannot work, with a line that says why.
    fn check(&self) -> Result<(), ConnectError> {
        let fail = |why: &str| Err(ConnectError::Options(why.to_string()));
        if self.max_staleness.is_zero() || self.max_staleness > Duration::from_secs(3600) {
            return fail("max_staleness must be more than zero and at most an hour");
        }
        if self.heartbeat_interval < Duration::from_millis(100) || self.heartbeat_interval > self.max_staleness / 2 {
            return fail("heartbeat_interval must be at least 100 ms and at most half of max_staleness");
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return fail("connect_timeout and request_timeout must be more than zero");
        }
        if self.max_concurrent_introspections == 0 {
            return fail("max_concurrent_introspections must be at least 1");
        }
        Ok(())
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            max_staleness: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            introspection_ttl: Duration::from_secs(5),
            introspection_cache_size: 4096,
            max_concurrent_introspections: 32,
            token_cache_size: crate::cache::DEFAULT_CAPACITY,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Why [`Verifier::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint is not a URI tonic can connect to.
    #[error("not an endpoint: {0}")]
    Endpoint(String),
    /// The credential cannot be sent in a header (it is not printable ASCII).
    #[error("the credential is not a valid header value")]
    Credential,
    /// authd answered `GetJwks` with an error, or could not be reached.
    #[error("authd cannot be reached: {0}")]
    Unreachable(tonic::Status),
    /// authd refused the credential for `WatchRevocations` (it needs an API key with scope
    /// `tokens:introspect`).
    #[error("authd refused the credential: {0}")]
    Refused(tonic::Status),
    /// The key set authd published cannot be used.
    #[error("authd's key set: {0}")]
    Keys(#[from] crate::keys::KeySetError),
    /// The options disagree with what authd announces.
    #[error("{0}")]
    Mismatch(String),
    /// The options cannot work (e.g. a heartbeat slower than the staleness it must prevent).
    #[error("options: {0}")]
    Options(String),
    /// The keys or the first revocation snapshot did not arrive within
    /// [`Options::connect_timeout`].
    #[error("authd did not send its revocations within the connect timeout")]
    Timeout,
}

/// What a verifier has done since it started, and whether it is in step with authd. For metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Access tokens decided in-process (no network call).
    pub verified_locally: u64,
    /// Of those, tokens answered from the verified-token cache (no signature check).
    pub token_cache_hits: u64,
    /// Credentials that needed an answer from authd (API keys, and the fallbacks below).
    pub introspected: u64,
    /// Of those, answers reused from the `Introspect` cache.
    pub introspection_cache_hits: u64,
    /// Access tokens sent to `Introspect` because the view was stale or the key unknown.
    pub fallbacks: u64,
    /// Answers of [`Rejection::Unavailable`] (failed closed).
    pub unavailable: u64,
    /// Times a stream to authd was reopened.
    pub stream_restarts: u64,
    /// Revocations held in the view.
    pub revocations: usize,
    /// Whether the revocation view is trusted now (confirmed within `max_staleness`).
    pub view_current: bool,
    /// Whether the key set is trusted now (confirmed by `WatchKeys` within `max_staleness`).
    pub keys_current: bool,
}

#[derive(Default)]
struct Counters {
    verified_locally: AtomicU64,
    introspected: AtomicU64,
    introspection_cache_hits: AtomicU64,
    fallbacks: AtomicU64,
    unavailable: AtomicU64,
    stream_restarts: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The wall clock, read once per verification (token times are wall-clock seconds).
#[allow(clippy::disallowed_methods)] // the client's one reading of the system clock
fn wall_now() -> DateTime<Utc> {
    Utc::now()
}

/// When something was last confirmed by authd, as nanoseconds after the verifier started (plus
/// one; 0: not confirmed).
#[derive(Default)]
struct Confirmed(AtomicU64);

impl Confirmed {
    fn set(&self, started: Instant) {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.0.store(nanos + 1, Ordering::Release);
    }

    fn clear(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// Whether it was confirmed at most `limit` before `now` (time since the verifier started).
    fn within(&self, now: Duration, limit: Duration) -> bool {
        match self.0.load(Ordering::Acquire) {
            0 => false,
            at => now.saturating_sub(Duration::from_nanos(at - 1)) <= limit,
        }
    }
}

/// What the verifier and its background tasks share.
struct Shared {
    rules: TokenRules,
    keys: RwLock<Arc<KeySet>>,
    tokens: VerifiedTokens,
    view: RevocationView,
    /// Active answers of `Introspect`, and inactive ones apart.
    answers: Answers,
    refusals: Answers,
    /// Bounds the `Introspect` calls in flight: for credentials authd said were active before,
    /// and apart for the others, so a flood of made-up ones cannot starve the known ones.
    calls: tokio::sync::Semaphore,
    unknown_calls: tokio::sync::Semaphore,
    client: TokenServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
    options: Options,
    started: Instant,
    /// The last word from authd on a revocation stream in step (and not behind).
    view_confirmed: Confirmed,
    /// The last message of `WatchKeys`.
    keys_confirmed: Confirmed,
    counters: Counters,
}

impl Shared {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    /// Whether the revocation view and the keys may be trusted alone now: both confirmed by
    /// authd within `max_staleness`.
    fn is_current(&self) -> bool {
        let now = self.started.elapsed();
        let limit = self.options.max_staleness;
        self.view_confirmed.within(now, limit) && self.keys_confirmed.within(now, limit)
    }

    /// Decides an access token in-process (when `current`), or says it must be asked about.
    fn verify_locally(&self, token: &str, current: bool) -> Option<Result<Identity, Rejection>> {
        let now = wall_now();
        let verified = {
            let keys = self.keys.read().expect("key set lock");
            self.tokens.verify(&self.rules, &keys, token, now)
        };
        match verified {
            // Revocations are never undone: a stale view is still right about these.
            Ok(claims) if self.view.is_access_token_revoked(&claims) => Some(Err(Rejection::Revoked)),
            Ok(claims) if current => {
                bump(&self.counters.verified_locally);
                Some(Ok(identity_of(&claims)))
            }
            Ok(_) => None,
            // Maybe a key published after the last key set this verifier saw: authd knows.
            Err(Rejection::UnknownKey) if !current => None,
            Err(rejection) => Some(Err(rejection)),
        }
    }

    /// Asks authd (or its recent answer) about a credential. A recent active answer is reused
    /// only while the view is `current`: otherwise it could hide a revocation the view missed.
    async fn introspect(&self, credential: &str, current: bool) -> Result<Identity, Rejection> {
        bump(&self.counters.introspected);
        let digest = answers::digest(credential);
        let cached = self
            .refusals
            .get(&digest)
            .or_else(|| current.then(|| self.answers.get(&digest)).flatten());
        if let Some(answer) = cached {
            bump(&self.counters.introspection_cache_hits);
            return self.decide(&answer, wall_now());
        }
        let generation = self.answers.generation();
        let pool = match self.answers.holds(&digest) {
            true => &self.calls,
            false => &self.unknown_calls,
        };
        let mut request = self.request(IntrospectRequest {
            token: credential.to_string(),
            token_type_hint: String::new(),
        });
        request.set_timeout(self.options.request_timeout);
        let mut client = self.client.clone();
        let call = async {
            let _permit = pool.acquire().await;
            client.introspect(request).await
        };
        let answer = match tokio::time::timeout(self.options.request_timeout, call).await {
            Ok(Ok(response)) => answer_of(response.into_inner()),
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "authd refused to introspect; failing closed");
                bump(&self.counters.unavailable);
                return Err(Rejection::Unavailable);
            }
            Err(_) => {
                tracing::warn!("Introspect timed out; failing closed");
                bump(&self.counters.unavailable);
                return Err(Rejection::Unavailable);
            }
        };
        let answer = match answer.identity {
            Some(_) => self.answers.insert(digest, answer, generation),
            None => self.refusals.insert(digest, answer, generation),
        };
        self.decide(&answer, wall_now())
    }

    /// An answer of authd, re-checked against the clock and the revocation view.
    fn decide(&self, answer: &Answer, now: DateTime<Utc>) -> Result<Identity, Rejection> {
        let identity = answer.identity.as_ref().ok_or(Rejection::Inactive)?;
        let leeway = match identity.token_type {
            TokenType::AccessToken => LEEWAY_SECS,
            TokenType::ApiKey => 0,
        };
        if identity
            .expires_at
            .is_some_and(|exp| exp.timestamp() + leeway <= now.timestamp())
        {
            return Err(Rejection::Expired);
        }
        let revoked = match identity.token_type {
            TokenType::AccessToken => self.view.is_token_revoked(
                &identity.session.map(|s| s.to_string()).unwrap_or_default(),
                &identity.id,
                &identity.subject.to_string(),
                answer.issued_at,
            ),
            // `iat` has whole seconds: a key made in the second of a user-wide revocation counts
            // as made before it (refused, never wrongly let through).
            TokenType::ApiKey => Uuid::parse_str(&identity.id).map_or(true, |key| {
                let created = DateTime::from_timestamp(answer.issued_at, 0).unwrap_or(DateTime::UNIX_EPOCH);
                self.view.is_api_key_revoked(key, identity.subject, created)
            }),
        };
        if revoked {
            return Err(Rejection::Revoked);
        }
        Ok(identity.clone())
    }
}

/// The identity in verified claims.
fn identity_of(claims: &AccessClaims) -> Identity {
    Identity {
        // The rules refuse a token whose `sub` or `sid` is not an id.
        subject: claims.user_id().unwrap_or_default(),
        username: claims.username.clone(),
        session: claims.session_id(),
        scopes: claims.scope.split_whitespace().map(str::to_string).collect(),
        roles: claims.roles.clone(),
        client_id: claims.client_id.clone(),
        token_type: TokenType::AccessToken,
        id: claims.jti.clone(),
        expires_at: DateTime::from_timestamp(claims.exp, 0),
    }
}

/// An `Introspect` answer as the cache keeps it. An active answer that does not make sense (no
/// user id, an unknown type) counts as inactive.
fn answer_of(response: IntrospectResponse) -> Answer {
    let token_type = match response.token_type.as_str() {
        "access_token" => Some(TokenType::AccessToken),
        "api_key" => Some(TokenType::ApiKey),
        _ => None,
    };
    let subject = Uuid::parse_str(&response.sub).ok();
    let (Some(token_type), Some(subject), true) = (token_type, subject, response.active) else {
        return Answer::new(None, 0);
    };
    let session = Uuid::parse_str(&response.sid).ok();
    let well_formed = match token_type {
        TokenType::AccessToken => session.is_some() && !response.jti.is_empty(),
        // The id is what its revocation names.
        TokenType::ApiKey => Uuid::parse_str(&response.jti).is_ok(),
    };
    if !well_formed {
        return Answer::new(None, 0);
    }
    let identity = Identity {
        subject,
        username: response.username,
        session,
        scopes: response.scope.split_whitespace().map(str::to_string).collect(),
        roles: response.roles,
        client_id: response.client_id,
        token_type,
        id: response.jti,
        expires_at: (response.exp > 0)
            .then(|| DateTime::from_timestamp(response.exp, 0))
            .flatten(),
    };
    Answer::new(Some(identity), response.iat)
}

/// Aborts the background tasks when the last handle of a verifier goes.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Verifies authd's access tokens and API keys inside a service, with revocations pushed by
/// authd. Cheap to clone (clones share the keys, the view and the caches); the background tasks
/// stop when the last clone is dropped. Needs a Tokio runtime.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use authd_client::{Options, Verifier};
/// let verifier = Verifier::connect("http://authd:50051", "authd_…", Options::default()).await?;
/// match verifier.verify("eyJ…").await {
///     Ok(identity) => println!("user {} with scopes {:?}", identity.subject, identity.scopes),
///     Err(rejection) => println!("refused: {rejection}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verifier {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.shared.rules.issuer)
            .field("audience", &self.shared.rules.audience)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Connects to authd at `endpoint` (e.g. `http://authd:50051`) with `credential`, an API key
    /// holding scope `tokens:introspect`: loads the keys with `GetJwks`, then follows `WatchKeys`
    /// and `WatchRevocations`. Returns once the first revocation snapshot is in, so a credential
    /// revoked before the service started is refused from the first call.
    pub async fn connect(endpoint: &str, credential: &str, options: Options) -> Result<Self, ConnectError> {
        let endpoint = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| ConnectError::Endpoint(e.to_string()))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true);
        Self::connect_endpoint(endpoint, credential, options).await
    }

    /// [`Verifier::connect`] through an endpoint configured by the caller (TLS, timeouts, a
    /// proxy). The channel reconnects by itself; the streams are reopened with backoff.
    pub async fn connect_endpoint(
        endpoint: Endpoint,
        credential: &str,
        options: Options,
    ) -> Result<Self, ConnectError> {
        options.check()?;
        let mut authorization: MetadataValue<Ascii> = format!("Bearer {}", credential.trim())
            .parse()
            .map_err(|_| ConnectError::Credential)?;
        authorization.set_sensitive(true);
        let mut client = TokenServiceClient::new(endpoint.connect_lazy());
        let jwks = tokio::time::timeout(options.connect_timeout, client.get_jwks(GetJwksRequest {}))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Unreachable)?
            .into_inner();
        let rules = rules_of(&jwks, &options)?;
        let keys = KeySet::from_jwks_json(&jwks.jwks_json)?;
        let shared = Arc::new(Shared {
            rules,
            keys: RwLock::new(Arc::new(keys)),
            tokens: VerifiedTokens::new(options.token_cache_size),
            view: RevocationView::default(),
            answers: Answers::new(options.introspection_cache_size, options.introspection_ttl),
            refusals: Answers::new(options.introspection_cache_size, options.introspection_ttl),
            calls: tokio::sync::Semaphore::new(options.max_concurrent_introspections),
            unknown_calls: tokio::sync::Semaphore::new(options.max_concurrent_introspections),
            client,
            authorization,
            started: Instant::now(),
            view_confirmed: Confirmed::default(),
            keys_confirmed: Confirmed::default(),
            counters: Counters::default(),
            options,
        });
        // The key set just loaded is current; WatchKeys keeps it so.
        shared.keys_confirmed.set(shared.started);
        let (phase, mut ready) = tokio::sync::watch::channel(follow::Phase::Starting);
        let tasks = Tasks(vec![
            tokio::spawn(follow::revocations(shared.clone(), phase)),
            tokio::spawn(follow::keys(shared.clone())),
        ]);
        let verifier = Self {
            shared,
            _tasks: Arc::new(tasks),
        };
        let started = ready.wait_for(|phase| !matches!(phase, follow::Phase::Starting));
        match tokio::time::timeout(verifier.shared.options.connect_timeout, started).await {
            Ok(Ok(phase)) => match &*phase {
                follow::Phase::Refused(status) => Err(ConnectError::Refused(status.clone())),
                _ => Ok(verifier.clone()),
            },
            _ => Err(ConnectError::Timeout),
        }
    }

    /// Verifies a presented credential (an access token or an API key, without `Bearer `):
    /// signature, issuer, audience, times and revocation, with the server's rules. Access tokens
    /// are decided in-process while the revocation view is current; API keys and whatever cannot
    /// be decided locally are asked of `Introspect` (answers cached briefly). When authd cannot be
    /// asked, [`Rejection::Unavailable`].
    pub async fn verify(&self, credential: &str) -> Result<Identity, Rejection> {
        let credential = credential.trim();
        if credential.is_empty() || credential.len() > MAX_TOKEN_LEN {
            return Err(Rejection::Malformed);
        }
        if api_key::looks_like_api_key(credential) {
            // A typo or a made-up key is refused without a call: the checksum does not hold.
            if api_key::parse(credential).is_none() {
                return Err(Rejection::Malformed);
            }
            return self.shared.introspect(credential, self.shared.is_current()).await;
        }
        let current = self.shared.is_current();
        match self.shared.verify_locally(credential, current) {
            Some(decided) => decided,
            None => {
                bump(&self.shared.counters.fallbacks);
                self.shared.introspect(credential, current).await
            }
        }
    }

    /// The issuer, audience and longest token lifetime this verifier enforces.
    pub fn rules(&self) -> &TokenRules {
        &self.shared.rules
    }

    /// Whether the revocation view and the keys are trusted now (confirmed by authd within
    /// `max_staleness`): access tokens are then decided without a call.
    pub fn is_current(&self) -> bool {
        self.shared.is_current()
    }

    /// Counters and state, for metrics.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (now, limit) = (self.shared.started.elapsed(), self.shared.options.max_staleness);
        Stats {
            verified_locally: load(&c.verified_locally),
            token_cache_hits: self.shared.tokens.hits_and_misses().0,
            introspected: load(&c.introspected),
            introspection_cache_hits: load(&c.introspection_cache_hits),
            fallbacks: load(&c.fallbacks),
            unavailable: load(&c.unavailable),
            stream_restarts: load(&c.stream_restarts),
            revocations: self.shared.view.len(),
            view_current: self.shared.view_confirmed.within(now, limit),
            keys_current: self.shared.keys_confirmed.within(now, limit),
        }
    }
}

/// The rules to enforce: what authd announces, which the options may only confirm.
fn rules_of(jwks: &GetJwksResponse, options: &Options) -> Result<TokenRules, ConnectError> {
    let pick = |name: &str, configured: &Option<String>, announced: &str| match configured {
        Some(configured) if !announced.is_empty() && configured != announced => Err(ConnectError::Mismatch(format!(
            "the {name} is configured as `{configured}` but authd issues `{announced}`"
        ))),
        Some(configured) => Ok(configured.clone()),
        None if announced.is_empty() => Err(ConnectError::Mismatch(format!(
            "authd does not announce its {name}; set it in the options"
        ))),
        None => Ok(announced.to_string()),
    };
    let max_lifetime = jwks
        .max_token_lifetime
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(|| ConnectError::Mismatch("authd does not announce its token lifetime (an older server)".into()))?;
    Ok(TokenRules {
        issuer: pick("issuer", &options.issuer, &jwks.issuer)?,
        audience: pick("audience", &options.audience, &jwks.audience)?,
        max_lifetime,
    })
}

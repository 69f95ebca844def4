//! The load: virtual clients that register, log in, refresh (sometimes the same token on two
//! replicas at once), introspect, log out, make, rotate and revoke API keys and ask for reset
//! mail, each answer logged; and a prober that introspects every revoked credential on every
//! replica for two seconds after its revocation was acknowledged.

use crate::log::{Entry, Kind, Log};
use authd_proto::{
    CreateApiKeyRequest, IntrospectRequest, LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest,
    RequestPasswordResetRequest, RevokeApiKeyRequest, RotateApiKeyRequest, TokenPair,
    api_key_service_client::ApiKeyServiceClient, auth_service_client::AuthServiceClient,
    token_service_client::TokenServiceClient,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// The password of every account the load makes.
const PASSWORD: &str = "chaos-correct-horse-battery";

pub struct Load {
    pub log: Log,
    pub channels: Vec<Channel>,
    /// `Bearer <API key with tokens:introspect>`.
    pub introspector: String,
    pub next_id: AtomicU64,
    /// Credentials revoked, to probe: (id, secret, acknowledged at).
    pub revoked: Mutex<Vec<(u64, String, u64)>>,
    pub tag: String,
}

/// A small xorshift: the load's choices, reproducible per worker.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The code's name as gRPC spells it (`RESOURCE_EXHAUSTED`), from tonic's (`ResourceExhausted`).
pub fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// An answer's code as a client should take it. A call cut off by its connection (a replica
/// killed mid-call) never got a status from authd: the client library makes one up, UNKNOWN or
/// CANCELLED with the transport error as its source, and gRPC counts a broken connection as
/// UNAVAILABLE. A status sent by the server has no source and keeps its code.
pub fn answer_code(status: &tonic::Status) -> String {
    let made_by_the_client = std::error::Error::source(status).is_some();
    match status.code() {
        tonic::Code::Unknown | tonic::Code::Cancelled if made_by_the_client => "UNAVAILABLE".into(),
        code => code_name(code),
    }
}

/// A request with the virtual client's address (authd trusts the harness as a proxy) and,
/// when given, a bearer credential.
fn request<T>(message: T, client: &str, bearer: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(8));
    request
        .metadata_mut()
        .insert("x-forwarded-for", client.parse().expect("an address"));
    if let Some(bearer) = bearer {
        request
            .metadata_mut()
            .insert("authorization", bearer.parse().expect("ASCII credential"));
    }
    request
}

impl Load {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `call` against replica `replica` and logs its answer with `fill`'s fields.
    async fn logged<T, F, Fut>(&self, op: &str, replica: usize, call: F, fill: Entry) -> Option<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let t0 = self.log.now();
        let answer = call(self.channels[replica].clone()).await;
        let t1 = self.log.now();
        let code = match &answer {
            Ok(_) => "OK".to_string(),
            Err(status) => answer_code(status),
        };
        let value = answer.ok().map(tonic::Response::into_inner);
        self.log.push(Entry {
            kind: Some(Kind::Call),
            op: op.into(),
            replica: Some(replica + 1),
            t0,
            t1,
            code: Some(code),
            ..fill
        });
        value
    }

    async fn introspect(&self, replica: usize, cred: u64, secret: &str) {
        let mut client = TokenServiceClient::new(self.channels[replica].clone());
        let t0 = self.log.now();
        let answer = client
            .introspect(request(
                IntrospectRequest {
                    token: secret.to_string(),
                    token_type_hint: String::new(),
                },
                "127.0.0.1",
                Some(&self.introspector),
            ))
            .await;
        let t1 = self.log.now();
        let (code, active) = match answer {
            Ok(answer) => ("OK".to_string(), Some(answer.into_inner().active)),
            Err(status) => (answer_code(&status), None),
        };
        self.log.push(Entry {
            kind: Some(Kind::Call),
            op: "introspect".into(),
            replica: Some(replica + 1),
            t0,
            t1,
            code: Some(code),
            creds: vec![cred],
            active,
            ..Entry::default()
        });
    }

    /// Marks credentials revoked (acknowledged at `at`), for the prober.
    async fn revoked(&self, creds: &[(u64, String)], at: u64) {
        let mut revoked = self.revoked.lock().await;
        revoked.extend(creds.iter().map(|(id, secret)| (*id, secret.clone(), at)));
    }

    /// One virtual client until `until` (µs of the run).
    pub async fn client(self: Arc<Self>, worker: usize, until: u64) {
        let replicas = self.channels.len();
        let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ ((worker as u64 + 1) * 0x1000_0001));
        let mut round = 0u64;
        let mut accounts: Vec<String> = Vec::new();
        while self.log.now() < until {
            round += 1;
            // Each call of a round comes from its own address: authd limits per address.
            let address = format!("198.18.{}.{}", worker, round % 250 + 1);
            if accounts.len() < 6 || dice.below(8) == 0 {
                if let Some(name) = self.register(dice.below(replicas), worker, round, &address).await {
                    // A new account is asked for a reset mail once, on another replica.
                    self.request_reset(dice.below(replicas), &name, &address).await;
                    accounts.push(name);
                }
                continue;
            }
            let name = accounts[dice.below(accounts.len())].clone();
            self.session(&mut dice, &name, &address).await;
            if dice.below(4) == 0 {
                self.api_keys(&mut dice, &name, &address).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn email(&self, name: &str) -> String {
        format!("{name}@chaos.example.com")
    }

    async fn register(&self, replica: usize, worker: usize, round: u64, address: &str) -> Option<String> {
        let name = format!("c{}w{worker}r{round}", self.tag);
        let (email, username, address) = (self.email(&name), name.clone(), address.to_string());
        self.logged(
            "register",
            replica,
            |channel| async move {
                AuthServiceClient::new(channel)
                    .register(request(
                        RegisterRequest {
                            email,
                            username,
                            password: PASSWORD.into(),
                        },
                        &address,
                        None,
                    ))
                    .await
            },
            Entry::default(),
        )
        .await
        .map(|_| name)
    }

    async fn request_reset(&self, replica: usize, name: &str, address: &str) {
        let (email, address) = (self.email(name), address.to_string());
        let mailbox = email.clone();
        self.logged(
            "request_reset",
            replica,
            |channel| async move {
                AuthServiceClient::new(channel)
                    .request_password_reset(request(RequestPasswordResetRequest { email }, &address, None))
                    .await
            },
            Entry {
                mailbox: Some(mailbox),
                ..Entry::default()
            },
        )
        .await;
    }

    async fn login(&self, replica: usize, name: &str, address: &str) -> Option<TokenPair> {
        let (identifier, address) = (name.to_string(), address.to_string());
        self.logged(
            "login",
            replica,
            |channel| async move {
                AuthServiceClient::new(channel)
                    .login(request(
                        LoginRequest {
                            identifier,
                            password: PASSWORD.into(),
                            device_name: None,
                        },
                        &address,
                        None,
                    ))
                    .await
            },
            Entry::default(),
        )
        .await
        .and_then(|response| response.tokens)
    }

    async fn refresh(&self, replica: usize, token_id: u64, token: &str, address: &str) -> Option<TokenPair> {
        let (refresh_token, address) = (token.to_string(), address.to_string());
        self.logged(
            "refresh",
            replica,
            |channel| async move {
                AuthServiceClient::new(channel)
                    .refresh(request(RefreshRequest { refresh_token }, &address, None))
                    .await
            },
            Entry {
                refresh: Some(token_id),
                ..Entry::default()
            },
        )
        .await
        .and_then(|response| response.tokens)
    }

    /// Log in, introspect, refresh (a third of the time the same token on two replicas at
    /// once), introspect, and half the time log out (the session's access tokens then go to the
    /// prober).
    async fn session(&self, dice: &mut Dice, name: &str, address: &str) {
        let replicas = self.channels.len();
        let Some(pair) = self.login(dice.below(replicas), name, address).await else {
            return;
        };
        let mut access = vec![(self.id(), pair.access_token)];
        let mut refresh = (self.id(), pair.refresh_token);
        self.introspect(dice.below(replicas), access[0].0, &access[0].1).await;
        for _ in 0..1 + dice.below(2) {
            let first = dice.below(replicas);
            let refreshed = if dice.below(3) == 0 {
                let second = (first + 1 + dice.below(replicas - 1)) % replicas;
                let (a, b) = tokio::join!(
                    self.refresh(first, refresh.0, &refresh.1, address),
                    self.refresh(second, refresh.0, &refresh.1, address)
                );
                a.or(b)
            } else {
                self.refresh(first, refresh.0, &refresh.1, address).await
            };
            let Some(pair) = refreshed else { break };
            access.push((self.id(), pair.access_token));
            refresh = (self.id(), pair.refresh_token);
            let (id, token) = access.last().expect("just pushed");
            self.introspect(dice.below(replicas), *id, token).await;
        }
        if dice.below(2) == 0 {
            let (refresh_token, address) = (refresh.1.clone(), address.to_string());
            let creds: Vec<u64> = access.iter().map(|(id, _)| *id).collect();
            let done = self
                .logged(
                    "logout",
                    dice.below(replicas),
                    |channel| async move {
                        AuthServiceClient::new(channel)
                            .logout(request(LogoutRequest { refresh_token }, &address, None))
                            .await
                    },
                    Entry {
                        creds,
                        ..Entry::default()
                    },
                )
                .await;
            if done.is_some() {
                self.revoked(&access, self.log.now()).await;
            }
        }
    }

    /// Make an API key, introspect it, rotate it with no grace (the old secret is revoked),
    /// introspect the new one, revoke it.
    async fn api_keys(&self, dice: &mut Dice, name: &str, address: &str) {
        let replicas = self.channels.len();
        let Some(pair) = self.login(dice.below(replicas), name, address).await else {
            return;
        };
        let bearer = format!("Bearer {}", pair.access_token);
        let (b, a) = (bearer.clone(), address.to_string());
        let Some(created) = self
            .logged(
                "create_api_key",
                dice.below(replicas),
                |channel| async move {
                    ApiKeyServiceClient::new(channel)
                        .create_api_key(request(
                            CreateApiKeyRequest {
                                label: "chaos".into(),
                                scopes: Vec::new(),
                                expires_at: None,
                            },
                            &a,
                            Some(&b),
                        ))
                        .await
                },
                Entry::default(),
            )
            .await
        else {
            return;
        };
        let key_id = created.api_key.map(|key| key.id).unwrap_or_default();
        let old = (self.id(), created.secret);
        self.introspect(dice.below(replicas), old.0, &old.1).await;
        let (b, a, id) = (bearer.clone(), address.to_string(), key_id.clone());
        let rotated = self
            .logged(
                "rotate_api_key",
                dice.below(replicas),
                |channel| async move {
                    ApiKeyServiceClient::new(channel)
                        .rotate_api_key(request(
                            RotateApiKeyRequest {
                                id,
                                grace_period: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
                            },
                            &a,
                            Some(&b),
                        ))
                        .await
                },
                Entry {
                    creds: vec![old.0],
                    ..Entry::default()
                },
            )
            .await;
        let Some(rotated) = rotated else { return };
        self.revoked(std::slice::from_ref(&old), self.log.now()).await;
        let new = (self.id(), rotated.secret);
        self.introspect(dice.below(replicas), new.0, &new.1).await;
        let (b, a) = (bearer, address.to_string());
        let revoked = self
            .logged(
                "revoke_api_key",
                dice.below(replicas),
                |channel| async move {
                    ApiKeyServiceClient::new(channel)
                        .revoke_api_key(request(RevokeApiKeyRequest { id: key_id }, &a, Some(&b)))
                        .await
                },
                Entry {
                    creds: vec![new.0],
                    ..Entry::default()
                },
            )
            .await;
        if revoked.is_some() {
            self.revoked(std::slice::from_ref(&new), self.log.now()).await;
        }
    }

    /// Introspects each revoked credential on every replica, four times over the two seconds
    /// after its revocation was acknowledged (the last three past the one-second bound).
    pub async fn prober(self: Arc<Self>, until: u64) {
        const AT_US: [u64; 4] = [300_000, 1_050_000, 1_400_000, 2_000_000];
        let mut done: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        while self.log.now() < until {
            let now = self.log.now();
            let due: Vec<(u64, String)> = {
                let mut revoked = self.revoked.lock().await;
                // Kept until probed four times, however late (a prober held up by an outage must
                // not skip the credentials revoked meanwhile).
                revoked.retain(|(id, _, _)| {
                    let finished = done.get(id).is_some_and(|n| *n >= AT_US.len());
                    if finished {
                        done.remove(id);
                    }
                    !finished
                });
                revoked
                    .iter()
                    .filter(|(id, _, at)| {
                        let next = done.get(id).copied().unwrap_or(0);
                        next < AT_US.len() && now >= at + AT_US[next]
                    })
                    .map(|(id, secret, _)| (*id, secret.clone()))
                    .collect()
            };
            let this = &*self;
            let probes = due.iter().flat_map(|(id, secret)| {
                (0..this.channels.len()).map(move |replica| this.introspect(replica, *id, secret))
            });
            join_all(probes).await;
            for (id, _) in due {
                *done.entry(id).or_default() += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn join_all<F: std::future::Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    let mut set = Vec::new();
    for future in futures {
        set.push(future);
    }
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = set.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|future| future.as_mut().poll(cx).is_pending());
        if pinned.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_named_as_grpc_spells_them() {
        assert_eq!(super::code_name(tonic::Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(super::code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            super::answer_code(&tonic::Status::unauthenticated("no")),
            "UNAUTHENTICATED"
        );
        let cut = tonic::Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(super::answer_code(&cut), "UNAVAILABLE");
    }
}

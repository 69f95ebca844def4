use crate::helpers::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const SERVICES: &[&str] = &[
    "auth.v1.AuthService",
    "auth.v1.UserService",
    "auth.v1.SessionService",
    "auth.v1.ApiKeyService",
    "auth.v1.TokenService",
    "auth.v1.AuditService",
    "envoy.service.auth.v3.Authorization",
];

#[tokio::test]
async fn health_reports_each_service_and_not_found_for_unknown_ones() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in std::iter::once("").chain(SERVICES.iter().copied()) {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e}"));
        assert_eq!(response.into_inner().status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "auth.v1.NoSuchService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

async fn reflection_lists(app: &TestApp, v1alpha: bool) -> Vec<String> {
    use futures::StreamExt;
    macro_rules! list {
        ($module:ident) => {{
            use tonic_reflection::pb::$module::ServerReflectionRequest;
            use tonic_reflection::pb::$module::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$module::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$module::server_reflection_response::MessageResponse;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut client = ServerReflectionClient::new(app.channel.clone());
            let mut stream = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let response = stream.next().await.unwrap().unwrap();
            match response.message_response.unwrap() {
                MessageResponse::ListServicesResponse(list) => {
                    list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }};
    }
    if v1alpha { list!(v1alpha) } else { list!(v1) }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_all_services() {
    let app = spawn_app().await;
    for v1alpha in [false, true] {
        let names = reflection_lists(&app, v1alpha).await;
        for service in SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
            assert!(
                names.iter().any(|n| n == service),
                "{service} missing from {names:?} (v1alpha: {v1alpha})"
            );
        }
    }
}

#[tokio::test]
async fn an_unconfigured_provider_is_invalid_and_admin_rpcs_refuse_users() {
    let app = spawn_app().await;
    let user = app.user("carol").await;
    let err = app
        .auth()
        .login_with_provider(authd::proto::LoginWithProviderRequest {
            provider: "google".into(),
            id_token: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = app
        .users()
        .list_users(bearer(authd::proto::ListUsersRequest::default(), &user.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn oversized_messages_are_refused_by_the_transport() {
    let app = spawn_app().await;
    let huge = "x".repeat(authd::startup::MAX_MESSAGE_BYTES + 1);
    let err = app
        .auth()
        .register(authd::proto::RegisterRequest {
            email: "big@example.com".into(),
            username: "big".into(),
            password: huge,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
}

#[tokio::test]
async fn stops_cleanly_when_asked() {
    let app = spawn_app().await;
    app.stop().await.expect("clean shutdown");
}

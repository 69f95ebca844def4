//! Which OpenTelemetry signals go to a collector, read from the standard `OTEL_*` variables
//! (not from `AUTHD_*` or the TOML file: they are the ones every OpenTelemetry SDK reads).
//! The exporters read the rest themselves: endpoints, headers, timeouts, compression, the
//! sampler, the batch processor (`OTEL_BSP_*`) and the metric interval.

use super::ConfigError;

/// How spans or metrics travel to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC, the default.
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
}

/// What is exported; `None` for a signal that stays in the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Telemetry {
    pub traces: Option<OtlpProtocol>,
    pub metrics: Option<OtlpProtocol>,
}

impl Telemetry {
    /// From the variables `env` gives (blank ones count as unset).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let read = |name: &str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if read("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Self::default());
        }
        let signal = |name: &str, exporter_var: &str| -> Result<Option<OtlpProtocol>, ConfigError> {
            match read(exporter_var).map(|v| v.to_ascii_lowercase()).as_deref() {
                None | Some("otlp") => {}
                Some("none") => return Ok(None),
                Some(_) => return Err(error(exporter_var, "must be otlp or none")),
            }
            let endpoint = format!("OTEL_EXPORTER_OTLP_{name}_ENDPOINT");
            if read("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && read(&endpoint).is_none() {
                return Ok(None);
            }
            let specific = format!("OTEL_EXPORTER_OTLP_{name}_PROTOCOL");
            let (var, value) = match read(&specific) {
                Some(value) => (specific, Some(value)),
                None => (
                    "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
                    read("OTEL_EXPORTER_OTLP_PROTOCOL"),
                ),
            };
            match value.map(|v| v.to_ascii_lowercase()).as_deref() {
                None | Some("grpc") => Ok(Some(OtlpProtocol::Grpc)),
                Some("http/protobuf") => Ok(Some(OtlpProtocol::HttpProtobuf)),
                Some(_) => Err(error(&var, "must be grpc or http/protobuf")),
            }
        };
        Ok(Self {
            traces: signal("TRACES", "OTEL_TRACES_EXPORTER")?,
            metrics: signal("METRICS", "OTEL_METRICS_EXPORTER")?,
        })
    }
}

fn error(name: &str, message: &str) -> ConfigError {
    ConfigError {
        name: name.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(vars: &[(&str, &str)]) -> Result<Telemetry, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Telemetry::from_env(&move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn an_endpoint_turns_export_on_over_grpc_unless_told_otherwise() {
        assert_eq!(telemetry(&[]).unwrap(), Telemetry::default());
        assert_eq!(
            telemetry(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(),
            Telemetry::default()
        );
        let grpc = Some(OtlpProtocol::Grpc);
        let http = Some(OtlpProtocol::HttpProtobuf);
        let both = |p| Telemetry { traces: p, metrics: p };
        assert_eq!(
            telemetry(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap(),
            both(grpc)
        );
        assert_eq!(
            telemetry(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            ])
            .unwrap(),
            both(http)
        );
        assert_eq!(
            telemetry(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ])
            .unwrap(),
            Telemetry {
                traces: http,
                metrics: None
            }
        );
        assert_eq!(
            telemetry(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_METRICS_EXPORTER", "none")
            ])
            .unwrap(),
            Telemetry {
                traces: grpc,
                metrics: None
            }
        );
        assert_eq!(
            telemetry(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_SDK_DISABLED", "true")
            ])
            .unwrap(),
            Telemetry::default()
        );
    }

    #[test]
    fn an_unknown_protocol_or_exporter_is_refused_by_name() {
        let e = telemetry(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "OTEL_EXPORTER_OTLP_PROTOCOL");
        let e = telemetry(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert_eq!(e.name, "OTEL_TRACES_EXPORTER");
    }
}

//! Tracing setup: one subscriber for the whole process, pretty for a terminal or JSON (one
//! object per line) for log shippers, filtered by `RUST_LOG` when set, else by `log.filter`;
//! plus, when `[telemetry.otlp] enabled`, an OpenTelemetry layer exporting the spans (a job's
//! span with its events) over OTLP/HTTP to a collector, Jaeger or Tempo.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings, OtlpSettings, TelemetrySettings};

/// At exit, how long the last spans may take to reach the collector. An unreachable
/// collector must not hold up a stop that systemd or Kubernetes is timing.
const FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Keeps the trace exporter alive; dropping it sends the spans still buffered (bounded by
/// [`FLUSH_AT_EXIT`]). Hold it until the command ends.
#[must_use = "dropping the guard stops the trace export"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_AT_EXIT)
        {
            // The subscriber may be going away with the process: stderr, not tracing.
            eprintln!("followq: could not send the last spans to the OTLP endpoint: {e}");
        }
    }
}

/// Installs the global subscriber. Call once, at start-up.
///
/// Logs go to stderr so that commands printing results (`enqueue`, `status --json`) keep
/// stdout clean for scripts.
pub fn init(log: &LogSettings, telemetry: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    let (subscriber, guard) = subscriber(log, telemetry)?;
    subscriber
        .try_init()
        .map_err(|e| anyhow::anyhow!("could not install the log subscriber: {e}"))?;
    if telemetry.otlp.enabled {
        tracing::info!(
            endpoint = %traces_url(&telemetry.otlp.endpoint),
            "exporting spans over OTLP/HTTP"
        );
    }
    Ok(guard)
}

/// The subscriber [`init`] installs, without installing it (tests scope it to a thread with
/// `tracing::subscriber::set_default`), and the guard of its trace export.
pub fn subscriber(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
) -> anyhow::Result<(impl Subscriber + Send + Sync + 'static, TelemetryGuard)> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| anyhow::anyhow!("RUST_LOG is not a valid filter: {e}"))?,
        _ => EnvFilter::try_new(&log.filter)
            .map_err(|e| anyhow::anyhow!("log.filter is not a valid filter: {e}"))?,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let fmt = match log.format {
        LogFormat::Pretty => fmt.with_target(false).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let provider = if telemetry.otlp.enabled {
        Some(tracer_provider(&telemetry.otlp)?)
    } else {
        None
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
    });
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel);
    Ok((subscriber, TelemetryGuard { provider }))
}

/// The collector's traces URL: the base endpoint plus the OTLP/HTTP traces path.
fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// A tracer provider that batches spans (in the SDK's own thread) and posts them as protobuf.
/// Nothing here touches the network: an unreachable collector only loses spans, later.
fn tracer_provider(settings: &OtlpSettings) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(&settings.endpoint))
        .with_timeout(settings.timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp: could not build the span exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/base/"),
            "https://otel.example/base/v1/traces"
        );
    }
}

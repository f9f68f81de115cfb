//! Logs and traces: the `tracing` subscriber of the `onair` binary — the log to stderr, and,
//! when an OTLP endpoint is configured, the control-path spans (join, publish, negotiation,
//! studio feeds, room lifecycle) exported as OpenTelemetry traces over OTLP/HTTP. Off by default;
//! sampled; never on the per-packet path (the media plane has no spans, and only `signaling`'s
//! spans at INFO reach the exporter).

use crate::config::Config;
use anyhow::Context;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the exporter; `shutdown` sends what is still queued.
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

/// Where traces go: `admin.otlp_endpoint` (a base URL; `/v1/traces` is added), else the
/// standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`, else nowhere.
fn endpoint(config: &Config) -> Option<Option<String>> {
    let configured = config.admin.otlp_endpoint.trim();
    if !configured.is_empty() {
        return Some(Some(format!("{}/v1/traces", configured.trim_end_matches('/'))));
    }
    let env = |k| std::env::var(k).ok().filter(|v: &String| !v.trim().is_empty());
    (env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()).then_some(None)
}

/// The sampling ratio: `ONAIR_TRACE_SAMPLE_RATIO`, else `admin.trace_sample_ratio`.
fn ratio(config: &Config) -> f64 {
    std::env::var("ONAIR_TRACE_SAMPLE_RATIO")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(config.admin.trace_sample_ratio)
        .clamp(0.0, 1.0)
}

/// Install the subscriber for the process.
pub fn init(config: &Config) -> anyhow::Result<Traces> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log)).context("bad log filter")?;
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let Some(endpoint) = endpoint(config) else {
        tracing_subscriber::registry().with(log).init();
        return Ok(Traces { provider: None });
    };
    crate::hooks::tls_provider();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
    if let Some(url) = &endpoint {
        exporter = exporter.with_endpoint(url.clone());
    }
    let exporter = exporter.build().context("the OTLP trace exporter")?;
    let ratio = ratio(config);
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .with_resource(Resource::builder().with_service_name("onair").build())
        .build();
    let tracer = provider.tracer("onair");
    let spans =
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(Targets::new().with_target("signaling", tracing::Level::INFO));
    tracing_subscriber::registry().with(log).with(spans).init();
    tracing::info!(endpoint = endpoint.as_deref().unwrap_or("(from OTEL_EXPORTER_OTLP_*)"), ratio, "OpenTelemetry traces on");
    Ok(Traces { provider: Some(provider) })
}

impl Traces {
    /// Send what is queued and stop the exporter (bounded by the SDK's export timeout).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("traces: {e}");
        }
    }
}

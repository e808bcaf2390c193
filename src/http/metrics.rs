//! `GET /metrics` in the Prometheus text format, written by the `prometheus` crate's encoder from
//! metric families built at each scrape: the counters live where they are counted (the pipeline's
//! [`StageStats`](crate::stats::StageStats), the [`Hub`](super::Hub)'s events), so nothing is
//! counted twice and nothing here runs between scrapes.
//!
//! - `farsight_stage_{in,out,dropped,errors}_total{stage}`: per stage (`camera-<name>`,
//!   `recognize`, `embed`, `events`, `sink-<name>`), as in `farsight status`.
//! - `farsight_stage_latency_seconds{stage}`: each stage's latency histogram.
//! - `farsight_events_total{kind,phase}`: events published, by decision and phase.
//! - `farsight_sink_delivered_total{sink}`, `farsight_sink_dropped_total{sink}`.
//! - `farsight_visitor_events_suppressed_total`: unknown events not sent because their visitor is
//!   ignored (the `visitors` stage's dropped count; with `[visitors]` on).
//! - `farsight_ready`, `farsight_resident_memory_bytes`, `farsight_peak_resident_memory_bytes`,
//!   `farsight_uptime_seconds`.

use super::error::ApiError;
use super::server::Shared;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut l = LabelPair::default();
            l.set_name((*name).to_owned());
            l.set_value((*value).to_owned());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(pairs: &[(&str, &str)], value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    Metric::from_gauge(g)
}

fn labelled_gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

/// Every metric family, as of now.
fn gather(state: &Shared) -> Vec<MetricFamily> {
    let stages: Vec<_> = state.cx.live.stages();
    let snaps: Vec<_> = stages.iter().map(|s| s.snapshot()).collect();
    let mut families = Vec::new();
    let per_stage = |name: &str, help: &str, value: &dyn Fn(&crate::stats::StageSnapshot) -> u64| {
        let metrics = snaps.iter().map(|s| counter(&[("stage", s.name.as_str())], value(s))).collect();
        family(name, help, MetricType::COUNTER, metrics)
    };
    families
        .push(per_stage("farsight_stage_in_total", "Items a stage received (frames, faces, events).", &|s| s.input));
    families.push(per_stage("farsight_stage_out_total", "Items a stage passed on or delivered.", &|s| s.output));
    families.push(per_stage("farsight_stage_dropped_total", "Items a stage dropped (full queue, failure).", &|s| {
        s.dropped
    }));
    families.push(per_stage(
        "farsight_stage_errors_total",
        "Failures in a stage (bad frames, failed deliveries).",
        &|s| s.errors,
    ));
    let histograms = stages
        .iter()
        .map(|s| {
            let (buckets, sum) = s.latency_histogram();
            let mut h = Histogram::default();
            h.set_sample_count(buckets.last().map_or(0, |b| b.1));
            h.set_sample_sum(sum);
            h.set_bucket(
                buckets
                    .into_iter()
                    .map(|(upper, count)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(upper);
                        b.set_cumulative_count(count);
                        b
                    })
                    .collect(),
            );
            let mut m = Metric::from_label(labels(&[("stage", s.name())]));
            m.set_histogram(h);
            m
        })
        .collect();
    families.push(family(
        "farsight_stage_latency_seconds",
        "Latency of a stage's items (camera: capture to queue; recognize: per frame; events: capture to event; \
         sink: publish to delivery).",
        MetricType::HISTOGRAM,
        histograms,
    ));
    let sinks: Vec<_> = snaps.iter().filter_map(|s| Some((s.name.strip_prefix("sink-")?, s))).collect();
    families.push(family(
        "farsight_sink_delivered_total",
        "Events a sink delivered.",
        MetricType::COUNTER,
        sinks.iter().map(|(name, s)| counter(&[("sink", name)], s.output)).collect(),
    ));
    families.push(family(
        "farsight_sink_dropped_total",
        "Events a sink dropped (full queue, failed after retries, shutdown deadline).",
        MetricType::COUNTER,
        sinks.iter().map(|(name, s)| counter(&[("sink", name)], s.dropped)).collect(),
    ));
    families.push(family(
        "farsight_visitor_events_suppressed_total",
        "Events of ignored visitors, counted but not sent to any sink.",
        MetricType::COUNTER,
        snaps.iter().filter(|s| s.name == "visitors").map(|s| counter(&[], s.dropped)).collect(),
    ));
    families.push(family(
        "farsight_events_total",
        "Events published, by decision (match, unknown) and phase (decision, update, final).",
        MetricType::COUNTER,
        state
            .cx
            .hub
            .counts()
            .into_iter()
            .map(|(kind, phase, n)| counter(&[("kind", kind), ("phase", phase)], n))
            .collect(),
    ));
    let ready = !state.cx.pipeline || state.cx.live.is_ready();
    families.push(family(
        "farsight_ready",
        "1 once ready (as /readyz).",
        MetricType::GAUGE,
        vec![gauge(f64::from(u8::from(ready)))],
    ));
    if let Some(kib) = crate::stats::rss_kib() {
        families.push(family(
            "farsight_resident_memory_bytes",
            "Resident set size of the process.",
            MetricType::GAUGE,
            vec![gauge(kib as f64 * 1024.0)],
        ));
    }
    if let Some(kib) = crate::stats::peak_rss_kib() {
        families.push(family(
            "farsight_peak_resident_memory_bytes",
            "Peak resident set size of the process.",
            MetricType::GAUGE,
            vec![gauge(kib as f64 * 1024.0)],
        ));
    }
    let heap = crate::heap::stats();
    if heap.reserved > 0 {
        families.push(family(
            "farsight_big_block_heap_bytes",
            "The heap of blocks of 256 KiB or more (model weights, inference buffers): bytes `live` \
             now, and the `high_water` its top has reached.",
            MetricType::GAUGE,
            vec![
                labelled_gauge(&[("kind", "live")], heap.live as f64),
                labelled_gauge(&[("kind", "high_water")], heap.high_water as f64),
            ],
        ));
    }
    families.push(family(
        "farsight_uptime_seconds",
        "Seconds since the HTTP server started.",
        MetricType::GAUGE,
        vec![gauge(state.started.elapsed().as_secs_f64())],
    ));
    // A family without samples is left out (no cameras in `serve`, no sinks).
    families.retain(|f| !f.get_metric().is_empty());
    families
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<Shared>) -> Result<Response, ApiError> {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&gather(&state))
        .map_err(|e| ApiError::internal(format!("encoding the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response())
}

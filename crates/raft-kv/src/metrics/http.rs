//! The metrics endpoint: a small HTTP/1.1 server (hyper) on `--metrics-listen`.
//!
//! - `GET /metrics`: every metric, OpenMetrics text (Prometheus scrapes it as is).
//! - `GET /health`: liveness. 200 while the node thread runs; 503 once it stopped (the process is
//!   then about to exit with the node thread's error).
//! - `GET /ready`: readiness. 200 when this node knows a leader and has applied everything it knows
//!   to be committed (so a read served here is not held up by a long catch-up); 503 with the reason
//!   otherwise (no leader known: an election, or this node is cut off; or still applying).
//!
//! Anything else is 404; methods other than GET and HEAD are 405. Each connection is served by its
//! own task; the listener stops on the shutdown signal.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use super::Metrics;
use crate::node::NodeHandle;

/// What the endpoint serves from.
pub struct Endpoint {
    /// The instruments (and the scrape-time collector).
    pub metrics: Arc<Metrics>,
    /// The node's published status, for `/ready`.
    pub node: NodeHandle,
    /// Cleared when the node thread stops, for `/health`.
    pub node_running: Arc<AtomicBool>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Answers one request.
pub fn answer(endpoint: &Endpoint, method: &Method, path: &str) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n");
    }
    match path {
        "/metrics" => reply(StatusCode::OK, OPENMETRICS, endpoint.metrics.encode()),
        "/health" => {
            if endpoint.node_running.load(Ordering::Relaxed) {
                reply(StatusCode::OK, TEXT, "ok\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "the node thread stopped\n")
            }
        }
        "/ready" => {
            let st = endpoint.node.status();
            if !endpoint.node_running.load(Ordering::Relaxed) {
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready: the node thread stopped\n")
            } else if st.leader.is_none() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("not ready: no leader known (term {})\n", st.term),
                )
            } else if st.applied < st.commit {
                let body = format!("not ready: applied {} of {} committed entries\n", st.applied, st.commit);
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, body)
            } else {
                reply(
                    StatusCode::OK,
                    TEXT,
                    format!("ready: {} in term {}, applied {}\n", st.role, st.term, st.applied),
                )
            }
        }
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found: try /metrics, /health or /ready\n"),
    }
}

/// Serves the endpoint on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>, mut shutdown: broadcast::Receiver<()>) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = answer(&endpoint, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

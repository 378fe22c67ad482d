//! A minimal etcd v3 client over gRPC: `KV.Put` and `KV.Range`, enough to run the same workloads
//! against etcd as against raft-kv.
//!
//! The messages are declared here with prost derives instead of being generated from etcd's
//! `rpc.proto`, so no `protoc` is needed to build. Only the fields we send or read are declared;
//! prost skips the others on decoding, and fields left at their default are not sent, which is
//! what etcd expects: in particular `RangeRequest.serializable = false` (field 7) is the default,
//! so every read is **linearizable** (etcd confirms leadership through a ReadIndex round), the
//! same guarantee raft-kv gives its `GET`.
//!
//! Field numbers follow etcd's `api/etcdserverpb/rpc.proto` and `api/mvccpb/kv.proto` (v3.4+).
//! One [`EtcdConn`] is one HTTP/2 connection; gRPC multiplexes the clients that share it.

use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

/// The header etcd attaches to every response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    /// The cluster's id.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// The id of the member that answered.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// The key-value store revision when the request was applied.
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// The Raft term of the member that answered.
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `etcdserverpb.PutRequest` (fields `lease`, `prev_kv`, `ignore_value`, `ignore_lease` left at
/// their defaults and therefore not declared).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    /// The key to write.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// The value to store.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `etcdserverpb.PutResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    /// The response header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.RangeRequest` for a single key: `range_end` empty, no limit, latest revision,
/// and `serializable` false (linearizable).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    /// The key to read.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// Revision of the key's creation.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// Revision of the key's last modification.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// Number of modifications since creation.
    #[prost(int64, tag = "4")]
    pub version: i64,
    /// The value.
    #[prost(bytes = "bytes", tag = "5")]
    pub value: Bytes,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    /// The response header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The keys found (at most one here).
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    /// Whether more keys matched than were returned.
    #[prost(bool, tag = "3")]
    pub more: bool,
    /// Number of keys in the range.
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// Why an etcd request failed.
#[derive(Debug, Error)]
pub enum EtcdError {
    /// The endpoint is not a valid URI.
    #[error("bad endpoint {0}: {1}")]
    Endpoint(String, String),
    /// The connection could not be made or broke.
    #[error("transport: {0}")]
    Transport(String),
    /// etcd answered with a gRPC error status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(Box<tonic::Status>),
}

impl EtcdError {
    /// A short kind for the error counters (`Unavailable`, `DeadlineExceeded`, `transport`...).
    pub fn kind(&self) -> String {
        match self {
            EtcdError::Endpoint(..) => "endpoint".into(),
            EtcdError::Transport(_) => "transport".into(),
            EtcdError::Status(s) => format!("{:?}", s.code()),
        }
    }
}

/// One HTTP/2 connection to an etcd member; cheap to clone (clones share the connection).
#[derive(Clone, Debug)]
pub struct EtcdConn {
    /// The gRPC channel.
    channel: Channel,
}

impl EtcdConn {
    /// A connection to `host:port` (plain-text gRPC), made lazily on the first request.
    /// Must be called within a tokio runtime.
    pub fn new(host_port: &str, connect_timeout: Duration) -> Result<EtcdConn, EtcdError> {
        let uri = format!("http://{host_port}");
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| EtcdError::Endpoint(uri, e.to_string()))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        Ok(EtcdConn { channel: endpoint.connect_lazy() })
    }

    /// `KV.Put(key, value)`.
    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<PutResponse, EtcdError> {
        self.unary("/etcdserverpb.KV/Put", PutRequest { key, value }).await
    }

    /// Linearizable `KV.Range(key)`.
    pub async fn get(&self, key: Bytes) -> Result<RangeResponse, EtcdError> {
        self.unary("/etcdserverpb.KV/Range", RangeRequest { key }).await
    }

    async fn unary<Q, R>(&self, path: &'static str, request: Q) -> Result<R, EtcdError>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| EtcdError::Transport(e.to_string()))?;
        let codec: ProstCodec<Q, R> = ProstCodec::default();
        grpc.unary(tonic::Request::new(request), PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| EtcdError::Status(Box::new(s)))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn requests_encode_with_etcds_field_numbers() {
        let put = PutRequest { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"vv") };
        // field 1 (bytes) "k", field 2 (bytes) "vv"
        assert_eq!(put.encode_to_vec(), b"\x0a\x01k\x12\x02vv");
        // A single-key range sends the key only: serializable (7) stays false = linearizable.
        let range = RangeRequest { key: Bytes::from_static(b"k") };
        assert_eq!(range.encode_to_vec(), b"\x0a\x01k");
    }

    #[test]
    fn range_response_decodes_and_skips_unknown_fields() {
        let kv = KeyValue {
            key: Bytes::from_static(b"k"),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            value: Bytes::from_static(b"v"),
        };
        let resp = RangeResponse {
            header: Some(ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 }),
            kvs: vec![kv.clone()],
            more: false,
            count: 1,
        };
        let mut wire = resp.encode_to_vec();
        // An unknown field (KeyValue.lease is 6; here a top-level field 9, varint 5) is skipped.
        wire.extend_from_slice(b"\x48\x05");
        let back = RangeResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(back.kvs, vec![kv]);
        assert_eq!(back.count, 1);
        assert_eq!(back.header.map(|h| h.raft_term), Some(4));
    }
}

//! placeholder
pub mod kv;

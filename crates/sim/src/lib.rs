//! placeholder

pub mod linearizability;

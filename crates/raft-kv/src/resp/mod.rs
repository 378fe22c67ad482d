//! The Redis serialization protocol, version 2 (RESP2): what `redis-cli`, `redis-benchmark` and
//! every Redis client library speak.
//!
//! - [`Frame`]: one protocol value.
//! - [`Parser`]: incremental, bounded, never-panicking parser for requests (server side,
//!   multibulk and inline forms) and replies (client side). The server calls
//!   [`Parser::parse`] on its read buffer after every read.
//! - [`encode`] / [`encode_as`] and the `write_*` functions: the encoder. Replies can be
//!   written in RESP3 ([`Protocol`]) for clients that ask with `HELLO 3` (recent client
//!   libraries do by default); requests and the client side are RESP2.
//! - [`split_args`]: Redis's shell-like argument splitter (inline commands, the console).
//! - [`client::Connection`]: a small blocking client over `std::net::TcpStream`.
//!
//! Wire format summary (every line ends with CRLF):
//! `+status`, `-ERR message`, `:integer`, `$len` + data (binary safe; `$-1` is null),
//! `*count` + elements (`*-1` is the null array). A request is an array of bulk strings, or a
//! plain text line (inline form).

mod args;
pub mod client;
mod encode;
mod frame;
mod parse;

pub use args::{split_args, SplitError};
pub use encode::{
    encode, encode_as, write_array_header, write_bulk, write_command, write_error, write_integer,
    write_map_header, write_null, write_null_array, write_simple,
};
pub use frame::{Frame, Protocol};
pub use parse::{parse_i64, Limits, Parser, ProtocolError};

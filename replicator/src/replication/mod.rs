//! Replication: a standby's segment kept a copy of the primary's over one TCP link.
//!
//! `frame` is the wire format, `auth` the challenge-response handshake, `seal` the
//! authenticated record stream after it, `transport` the link's byte stream (plain TCP or
//! TLS); `follow` is the primary's snapshot and change-feed follower and `backlog` its last
//! shipped frames (partial resync), `apply` the standby's side; `primary` and `standby` are
//! the two daemons.

pub mod apply;
pub mod auth;
pub mod backlog;
pub mod follow;
pub mod frame;
pub mod primary;
pub mod seal;
pub mod standby;
pub mod transport;

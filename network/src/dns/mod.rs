//! Service DNS on the bridge address (UDP port 53), with messages read and
//! written by hickory-proto. A replica asks `<service>` or an alias and gets
//! the ready replicas of that service in its own project (known by the
//! asker's address); `<service>.<project>` and `<service>.<project>.orca`
//! answer cluster-wide for internal services (and within the asker's own
//! project). Everything else goes to the host's resolvers.
//!
//! While a service runs a canary, a query is answered with either the
//! canary replicas or the stable ones, alternating by the canary's weight
//! (smoothly: at 10 %, one answer in ten, evenly spread), with a 1 s TTL so
//! clients that resolve per connection split their traffic by weight too.
//!
//! - [`names`]: who may resolve what (pure).
//! - [`table`]: the live table, and the turns of canary splits.
//! - [`server`]: DNS messages, the UDP server and forwarding.

mod names;
mod server;
mod table;

pub use names::{Lookup, Names};
pub use server::{answer, host_resolvers, serve};
pub use table::DnsTable;

/// TTL of orca's answers: short, since replicas come and go.
pub const TTL: u32 = 5;
/// TTL of one side of a canary split, so clients come back for the other.
pub const SPLIT_TTL: u32 = 1;
/// The zone suffix of cluster-wide names.
pub const ZONE: &str = "orca";

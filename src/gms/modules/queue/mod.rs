//! The ORS `queue` module: `<queue:submit>` asks the routing backend for
//! an agent matching a target and reserves them (routing the interaction
//! there too unless `route="false"`), and `<queue:cancel>` withdraws a
//! submit still waiting. The `_genesys.queue` enumerations are defined by
//! the session prelude.

pub mod cancel;
pub mod submit;

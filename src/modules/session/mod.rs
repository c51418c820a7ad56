//! The ORS `session` module: `<session:fetch>`, `<session:start>`,
//! `<session:terminate>`, and `<session:response>` (which answers a
//! `/scxml/session/{id}/request/{name}` call). The `_genesys.session`
//! object they work with is defined by the server's prelude.

pub mod fetch;
pub mod response;
pub mod start;
pub mod terminate;

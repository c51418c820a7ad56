//! The ORS `session` module: `<session:fetch>`, `<session:start>`,
//! `<session:terminate>`, and `<session:response>` (which answers a
//! `/scxml/session/{id}/request/{name}` call). The `_genesys.session`
//! object they work with is defined by the server's prelude; its helper
//! functions (lists, special days, time zones) by [`helpers`].

pub mod fetch;
pub mod helpers;
pub mod response;
pub mod start;
pub mod terminate;

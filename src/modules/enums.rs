//! The enumerations Composer's routing scripts read from the object model
//! (`RouteFeature.js` maps IRD parameters onto them):
//! `_genesys.queue.rType` (redirect route types, the `type` of an
//! `<ixn:redirect>`), `_genesys.queue.usecapcond`,
//! `_genesys.queue.overwriteType` (and its copy `_genesys.voice.overwriteType`)
//! and `_genesys.resource.resourceType` (DN types). Each member's value is
//! its own name, so a strategy can log it and an action can read it back
//! without a numeric table the public documentation does not give. The
//! queue module's actions live with the contact-centre extension; these
//! enumerations are plain object model and belong to the platform.

/// Redirect route types (`_genesys.queue.rType`), as Composer names them.
pub const ROUTE_TYPES: &[&str] = &[
    "RouteTypeUnknown",
    "RouteTypeDefault",
    "RouteTypeLabel",
    "RouteTypeOverwriteDNIS",
    "RouteTypeDDD",
    "RouteTypeIDDD",
    "RouteTypeDirect",
    "RouteTypeReject",
    "RouteTypeAnnouncement",
    "RouteTypePostFeature",
    "RouteTypeDirectAgent",
    "RouteTypeGetFromDN",
];

/// When a target's capacity rule is used (`_genesys.queue.usecapcond`).
pub const USE_CAPACITY: &[&str] = &["Never", "Only", "OnStatError"];

/// Which number overrides the DNIS (`_genesys.queue.overwriteType`).
pub const OVERWRITE_TYPES: &[&str] = &["UseANI", "UseConfig", "UseDNIS", "UseNone"];

/// DN types a resource may be reached on (`_genesys.resource.resourceType`).
pub const RESOURCE_TYPES: &[&str] = &[
    "any",
    "CFGACDPosition",
    "CFGCellular",
    "CFGChat",
    "CFGCoBrowse",
    "CFGEmail",
    "CFGExtension",
    "CFGFAX",
    "CFGVideo",
    "CFGVoiceMail",
    "CFGVoIP",
    "CFGWorkflow",
];

/// An object literal whose members are `names`, each valued by its name.
pub fn enum_literal(names: &[&str]) -> String {
    let members: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .map(|n| (n.to_string(), serde_json::Value::String(n.to_string())))
        .collect();
    serde_json::Value::Object(members).to_string()
}

/// The prelude piece that defines the enumerations (keeping any members
/// another piece already put on `_genesys.queue` or `_genesys.resource`).
/// Each table is a shared constant (`__orsShared`): made and frozen once
/// per script context, referenced by every session's `_genesys`, and
/// named rather than written out in snapshots.
pub fn prelude() -> String {
    format!(
        r#"(function (G) {{
  G.queue = G.queue || {{}};
  G.resource = G.resource || {{}};
  G.voice = G.voice || {{}};
  G.queue.rType = __orsShared("queue.rType", function () {{ return {route}; }});
  G.queue.usecapcond = __orsShared("queue.usecapcond", function () {{ return {cap}; }});
  G.queue.overwriteType = __orsShared("queue.overwriteType", function () {{ return {over}; }});
  G.voice.overwriteType = G.queue.overwriteType;
  G.resource.resourceType = __orsShared("resource.resourceType", function () {{ return {res}; }});
}})(globalThis._genesys)"#,
        route = enum_literal(ROUTE_TYPES),
        cap = enum_literal(USE_CAPACITY),
        over = enum_literal(OVERWRITE_TYPES),
        res = enum_literal(RESOURCE_TYPES),
    )
}

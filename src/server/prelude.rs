//! The `_genesys` object of the ORS platform: the script every server
//! session runs before its data is initialised.

/// ECMAScript run in every server session before its data is initialised:
/// defines `_genesys` with the `session` basics and an empty interaction
/// table (filled by the interaction module). Its functions are made once
/// per script context (`__orsShared`) and put on each session's object.
pub fn prelude(server_name: &str) -> String {
    let name = serde_json::Value::String(server_name.to_string());
    format!(
        r#"(function (g) {{
  var session = {{
    id: g._sessionid,
    server: {{ name: {name}, cluster: "" }},
    tenant: "Environment",
    tenantid: 1,
    starttime: Date.now(),
    lists: {{}}
  }};
  var shared = __orsShared('session.basics', function () {{
    return {{
      setTenant: function (name) {{ this.tenant = String(name); return true; }},
      getListItemValue: function (list, item, key) {{
        var l = g._genesys.session.lists[list];
        var i = l && l[item];
        return i === undefined ? undefined : (key === undefined ? i : i[key]);
      }}
    }};
  }});
  Object.assign(session, shared);
  g._genesys = {{ session: session, ixn: {{ interactions: {{}} }} }};
}})(globalThis)"#
    )
}

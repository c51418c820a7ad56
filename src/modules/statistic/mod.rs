//! The ORS `statistic` module against simulated statistics: the
//! `<statistic:subscribe>` action and the `_genesys.statistic` functions
//! (`sData`, `getAvgData`, `getMinData`, `getMaxData`), all reading the
//! values of `[platform.statistics]` (by target, then statistic name;
//! `default` for the rest). Sources: the Genesys 8.1 SCXML Technical
//! Reference (Statistic Interface: subscribe's `object`, `statistic`,
//! `interval`) and docs.genesys.com OS/Deployment/DirectStat (the four
//! functions and the action).

pub mod subscribe;

use serde_json::Value;

use crate::modules::settings::StatisticSettings;

/// The prelude piece for `_genesys.statistic`: the functions look values
/// up in a JSON string constant, parsed when called. `getAvgData`,
/// `getMinData` and `getMaxData` take a target or an array (or
/// comma-separated list) of targets. The functions are made once per
/// script context (a shared constant) and put on each session's
/// `_genesys.statistic`.
pub fn prelude(settings: &StatisticSettings) -> String {
    let values = serde_json::to_string(&settings.values).unwrap_or_else(|_| "{}".into());
    format!(
        r#"(function (G) {{
  var shared = __orsShared('statistic.functions', function () {{
    var VALUES = {values};
    var DEFAULT = {default};
    function one(target, stat) {{
      var t = JSON.parse(VALUES)[String(target)];
      var v = t === undefined ? undefined : t[String(stat)];
      return v === undefined ? DEFAULT : v;
    }}
    function all(targets, stat) {{
      var list = Array.isArray(targets) ? targets : String(targets).split(',');
      var out = [];
      for (var i = 0; i < list.length; i++) {{
        var name = String(list[i]).trim();
        if (name !== '') out.push(one(name, stat));
      }}
      return out;
    }}
    var st = {{}};
    st.sData = function (target, stat) {{ return one(target, stat); }};
    st.getAvgData = function (targets, stat) {{
      var v = all(targets, stat), sum = 0;
      for (var i = 0; i < v.length; i++) sum += v[i];
      return v.length ? sum / v.length : DEFAULT;
    }};
    st.getMinData = function (targets, stat) {{
      var v = all(targets, stat);
      return v.length ? Math.min.apply(null, v) : DEFAULT;
    }};
    st.getMaxData = function (targets, stat) {{
      var v = all(targets, stat);
      return v.length ? Math.max.apply(null, v) : DEFAULT;
    }};
    return st;
  }});
  var st = G.statistic = G.statistic || {{}};
  Object.assign(st, shared);
}})(globalThis._genesys)"#,
        values = Value::String(values),
        default = Value::from(settings.default),
    )
}

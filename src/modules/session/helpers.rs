//! The `_genesys.session` helper functions of the ORS Core Extensions
//! (docs.genesys.com OS/Developer/CoreExt; signatures as Composer's
//! `DateTime.js` and generated strategies call them): list objects
//! (`lists`, `getListItemValue`, `listLookupValue`, the `lookupseq`
//! enumeration), statistical days (`isSpecialDay`) and the clock in a time
//! zone (`timeInZone`, `dateInZone`, `dayInZone`). They are a prelude
//! piece: the configured lists become `_genesys.session.lists` (session
//! data, so a script may add its own), while special days and the zone
//! table are string constants the functions parse when called.

use serde_json::{Value, json};

use crate::modules::settings::PlatformSettings;

/// `MM-DD` or `YYYY-MM-DD` with a valid month and day, as written.
pub fn parse_day(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split('-').collect();
    let (month, day) = match parts.as_slice() {
        [m, d] => (*m, *d),
        [y, m, d] if y.len() == 4 && y.parse::<u16>().is_ok() => (*m, *d),
        _ => return None,
    };
    let ok =
        |s: &str, max: u8| s.len() == 2 && s.parse::<u8>().is_ok_and(|v| (1..=max).contains(&v));
    (ok(month, 12) && ok(day, 31)).then(|| text.trim().to_string())
}

/// `HH:MM` (00:00 to 24:00) as minutes since midnight.
pub fn parse_minutes(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// The special days as the prelude reads them (a JSON array).
fn special_days(settings: &PlatformSettings) -> Value {
    Value::Array(
        settings
            .special_days
            .iter()
            .map(|d| {
                json!({
                    "table": d.table,
                    "day": d.day,
                    "dates": d.dates.iter().filter_map(|x| parse_day(x)).collect::<Vec<_>>(),
                    "weekdays": d.weekdays,
                    "from": d.from.as_deref().and_then(parse_minutes).unwrap_or(0),
                    "until": d.until.as_deref().and_then(parse_minutes).unwrap_or(24 * 60),
                })
            })
            .collect(),
    )
}

/// The prelude piece for `_genesys.session`, with the zone table made
/// from `now` on. The functions are made once per script context (a
/// shared constant, frozen) and put on each session's `_genesys.session`;
/// they read the session's own `_genesys` through the global object.
pub fn prelude(settings: &PlatformSettings, now: jiff::Timestamp) -> String {
    let zones = super::super::zones::table(&settings.time_zones, &settings.time_zone, now);
    let lists = Value::Object(
        settings
            .lists
            .iter()
            .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
            .collect(),
    );
    let text = |s: String| Value::String(s).to_string();
    format!(
        r#"(function (g) {{
  var s = g._genesys.session;
  s.lists = {lists};
  s.lookupseq = __orsShared('session.lookupseq', function () {{
    return {{ StartFromCDN: 'StartFromCDN', StartFromRouter: 'StartFromRouter',
      StartFromStrategy: 'StartFromStrategy', StartFromTenant: 'StartFromTenant',
      StartFromTserver: 'StartFromTserver' }};
  }});
  var shared = __orsShared('session.functions', function () {{
    var s = {{}};
    var ZONES = {zones};
    var SPECIAL = {special};
    var DEFAULT_ZONE = {default_zone};
    var hasOwn = Object.prototype.hasOwnProperty;
    function member(obj, name) {{
      if (obj === null || typeof obj !== 'object') return undefined;
      name = String(name);
      if (hasOwn.call(obj, name)) return obj[name];
      var lower = name.toLowerCase();
      for (var k in obj) {{ if (hasOwn.call(obj, k) && k.toLowerCase() === lower) return obj[k]; }}
      return undefined;
    }}
    function listOf(l) {{ return (l !== null && typeof l === 'object') ? l : member(g._genesys.session.lists, l); }}
    function given(v) {{ return v !== undefined && v !== null && v !== ''; }}
    s.getListItemValue = function (list, item, key) {{
      var v = member(listOf(list), item);
      if (v !== undefined && given(key)) v = member(v, key);
      return v === undefined ? '' : v;
    }};
    s.listLookupValue = function (list, key) {{
      var l = listOf(list);
      if (l === null || typeof l !== 'object') return '';
      for (var item in l) {{
        if (!hasOwn.call(l, item)) continue;
        var v = member(l[item], key);
        if (v !== undefined) return v;
      }}
      return '';
    }};
    function two(n) {{ return (n < 10 ? '0' : '') + n; }}
    function inZone(zone) {{
      var name = String(given(zone) ? zone : DEFAULT_ZONE);
      var at = ZONES.indexOf(';' + name + '=');
      if (at < 0) at = ZONES.indexOf(';' + name.toUpperCase() + '=');
      if (at < 0) throw new RangeError('unknown time zone: ' + name);
      var body = ZONES.substring(ZONES.indexOf('=', at) + 1, ZONES.indexOf(';', at + 1)).split(',');
      var now = Date.now(), secs = 0;
      for (var i = 0; i < body.length; i++) {{
        var p = body[i].split(':');
        if (i > 0 && Number(p[0]) > now) break;
        secs = Number(p[1]);
      }}
      return new Date(now + secs * 1000);
    }}
    function dateOf(d) {{ return d.getUTCFullYear() + '-' + two(d.getUTCMonth() + 1) + '-' + two(d.getUTCDate()); }}
    s.timeInZone = function (zone) {{
      var d = inZone(zone);
      return two(d.getUTCHours()) + ':' + two(d.getUTCMinutes()) + ':' + two(d.getUTCSeconds());
    }};
    s.dateInZone = function (zone) {{ return dateOf(inZone(zone)); }};
    s.dayInZone = function (zone) {{ return inZone(zone).getUTCDay(); }};
    s.isSpecialDay = function (table, day, zone, useTime) {{
      var d = inZone(zone), ymd = dateOf(d), md = ymd.substring(5);
      var wd = d.getUTCDay(), minutes = d.getUTCHours() * 60 + d.getUTCMinutes();
      var timed = useTime === true || useTime === 1 || String(useTime).toLowerCase() === 'true';
      var days = JSON.parse(SPECIAL);
      for (var i = 0; i < days.length; i++) {{
        var e = days[i];
        if (e.table !== String(table)) continue;
        if (given(day) && e.day !== String(day)) continue;
        var any = e.dates.length === 0 && e.weekdays.length === 0;
        if (!any && e.dates.indexOf(md) < 0 && e.dates.indexOf(ymd) < 0 && e.weekdays.indexOf(wd) < 0) continue;
        if (timed && (minutes < e.from || minutes >= e.until)) continue;
        return 1;
      }}
      return 0;
    }};
    return s;
  }});
  Object.assign(s, shared);
}})(globalThis)"#,
        zones = text(zones),
        special = text(special_days(settings).to_string()),
        default_zone = text(settings.time_zone.clone()),
        lists = lists,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_times_parse_strictly() {
        assert_eq!(parse_day("12-25").as_deref(), Some("12-25"));
        assert_eq!(parse_day("2026-01-01").as_deref(), Some("2026-01-01"));
        assert_eq!(parse_day("13-01"), None);
        assert_eq!(parse_day("1-1"), None);
        assert_eq!(parse_day("Christmas"), None);
        assert_eq!(parse_minutes("08:30"), Some(510));
        assert_eq!(parse_minutes("24:00"), Some(1440));
        assert_eq!(parse_minutes("24:01"), None);
        assert_eq!(parse_minutes("8"), None);
    }
}

//! The ORS `ws` (web services) module of the Core Extensions, answered by
//! a simulator: `<ws:invoke>` is looked up in `[[platform.ws.rules]]` by
//! method and URL pattern, and the first matching rule gives a canned
//! reply, a delay or an error. The vendor's public pages name the module
//! (namespace `www.genesyslab.com/modules/ws`, events `ws.*`, root
//! `_genesys.ws`; docs.genesys.com OS/Developer/OrchExt) but describe no
//! action, so the action's name and attributes follow `<session:fetch>`;
//! see `docs/ors-dialect.md`.

pub mod invoke;

use crate::modules::settings::{WsRule, WsSettings};

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (and nothing else is special).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The first rule matching `method` and `url`.
pub fn find_rule<'a>(settings: &'a WsSettings, method: &str, url: &str) -> Option<&'a WsRule> {
    settings.rules.iter().find(|r| {
        r.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && glob_match(&r.url, url)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run_of_characters() {
        assert!(glob_match(
            "http://crm/customers/*",
            "http://crm/customers/42"
        ));
        assert!(glob_match("*://crm/*/orders", "https://crm/7/orders"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("http://crm/*/orders", "http://crm/7/invoices"));
        assert!(!glob_match("a*a", "a"));
    }
}

//! The ORS `classification` module against a simulated classification
//! server: `<classification:classify>` puts a text in the categories whose
//! `[[platform.classification.rules]]` keywords it contains. Attributes and
//! events follow the Genesys 8.1 SCXML Technical Reference and
//! docs.genesys.com OS/Developer/ClassificationIntf: the answer is
//! `classification.classify.done` with `requestid` and `categories`
//! (`{name, id, relevancy}` objects, most relevant first) or
//! `error.classification.classify` with `error` and `message`.

pub mod classify;

use crate::modules::settings::{ClassificationRule, ClassificationSettings};

/// The categories `text` falls in under `root` (any root when `None`),
/// most relevant first (rule order among equals).
pub fn categorize<'a>(
    settings: &'a ClassificationSettings,
    text: &str,
    root: Option<&str>,
) -> Vec<&'a ClassificationRule> {
    let text = text.to_lowercase();
    let mut hits: Vec<&ClassificationRule> = settings
        .rules
        .iter()
        .filter(|r| match (root, r.root.as_deref()) {
            (Some(asked), Some(own)) => asked.eq_ignore_ascii_case(own),
            _ => true,
        })
        .filter(|r| {
            r.keywords
                .iter()
                .map(|k| k.trim().to_lowercase())
                .any(|k| !k.is_empty() && text.contains(&k))
        })
        .collect();
    hits.sort_by_key(|r| std::cmp::Reverse(r.relevancy));
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        category: &str,
        keywords: &[&str],
        relevancy: u8,
        root: Option<&str>,
    ) -> ClassificationRule {
        ClassificationRule {
            category: category.into(),
            id: None,
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            relevancy,
            root: root.map(str::to_string),
        }
    }

    #[test]
    fn keywords_match_ignoring_case_and_the_most_relevant_come_first() {
        let settings = ClassificationSettings {
            rules: vec![
                rule("Billing", &["invoice", "bill"], 70, None),
                rule("Sales", &["buy"], 90, Some("Commerce")),
                rule("Support", &["broken"], 60, Some("Service")),
            ],
        };
        let names = |text: &str, root: Option<&str>| {
            categorize(&settings, text, root)
                .iter()
                .map(|r| r.category.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("I want to BUY; my Invoice is wrong", None),
            ["Sales", "Billing"]
        );
        assert_eq!(
            names("my bill, and it is broken", Some("service")),
            ["Billing", "Support"]
        );
        assert!(names("hello", None).is_empty());
    }
}

//! Routing targets (URS target strings and the GMS `_target` option):
//! (`Billing@StatServer.GA`, or a skill expression such as
//! `?:English=20&Loans=2@StatServer.GA`) or a JSON array of up to 15 steps
//! `{target, timeout, clear, stat_to_check, stat_operator, stat_value}`
//! tried in order. Parsing yields plain data a routing backend can act on;
//! every refusal names what is wrong and where.

use serde_json::Value;

/// Most targets a `_target` list may hold (GMS 8.5.114.09 and later).
pub const MAX_TARGETS: usize = 15;

/// What kind of resource a target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// `A`: one agent.
    Agent,
    /// `AP`: one agent place.
    AgentPlace,
    /// `GA`: a group of agents.
    AgentGroup,
    /// `GP`: a group of places.
    PlaceGroup,
    /// `GC`: a campaign group.
    CampaignGroup,
}

impl TargetKind {
    fn parse(code: &str) -> Option<TargetKind> {
        Some(match code {
            "A" => TargetKind::Agent,
            "AP" => TargetKind::AgentPlace,
            "GA" => TargetKind::AgentGroup,
            "GP" => TargetKind::PlaceGroup,
            "GC" => TargetKind::CampaignGroup,
            _ => return None,
        })
    }

    /// The URS code (`A`, `AP`, `GA`, `GP`, `GC`).
    pub fn code(self) -> &'static str {
        match self {
            TargetKind::Agent => "A",
            TargetKind::AgentPlace => "AP",
            TargetKind::AgentGroup => "GA",
            TargetKind::PlaceGroup => "GP",
            TargetKind::CampaignGroup => "GC",
        }
    }
}

/// A comparison in a skill expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
}

impl Comparison {
    /// Whether `level` satisfies `level <op> value`.
    pub fn holds(self, level: f64, value: f64) -> bool {
        match self {
            Comparison::Equal => level == value,
            Comparison::NotEqual => level != value,
            Comparison::Less => level < value,
            Comparison::LessOrEqual => level <= value,
            Comparison::Greater => level > value,
            Comparison::GreaterOrEqual => level >= value,
        }
    }
}

/// A skill expression: skills compared with levels, `&`, `|`, `!` and
/// parentheses (`English>=5 & (Loans=2 | Mortgage>3)`).
#[derive(Debug, Clone, PartialEq)]
pub enum SkillExpr {
    /// `skill <op> level`.
    Skill {
        /// Skill name.
        name: String,
        /// How the agent's level is compared.
        op: Comparison,
        /// The level compared with.
        level: f64,
    },
    /// Both hold.
    And(Box<SkillExpr>, Box<SkillExpr>),
    /// Either holds.
    Or(Box<SkillExpr>, Box<SkillExpr>),
    /// It does not hold.
    Not(Box<SkillExpr>),
}

impl SkillExpr {
    /// Evaluates the expression for an agent whose level in a skill is
    /// given by `level_of` (`None`: the agent does not have the skill, and
    /// every comparison on it is false).
    pub fn matches(&self, level_of: &dyn Fn(&str) -> Option<f64>) -> bool {
        match self {
            SkillExpr::Skill { name, op, level } => {
                level_of(name).is_some_and(|l| op.holds(l, *level))
            }
            SkillExpr::And(a, b) => a.matches(level_of) && b.matches(level_of),
            SkillExpr::Or(a, b) => a.matches(level_of) || b.matches(level_of),
            SkillExpr::Not(a) => !a.matches(level_of),
        }
    }
}

/// What a target selects from.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// A named agent, place or group.
    Named(String),
    /// Any agent whose skills match.
    Skills(SkillExpr),
}

/// One URS target string, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The named resource or the skill expression.
    pub selector: Selector,
    /// The Stat Server the target is counted on.
    pub statserver: String,
    /// The kind of resource.
    pub kind: TargetKind,
    /// The text it was parsed from.
    pub text: String,
}

/// A statistic that makes a step be skipped (unless it is the last).
#[derive(Debug, Clone, PartialEq)]
pub struct StatCheck {
    /// Statistic name (`RStatAgentsReady`, ...).
    pub stat: String,
    /// `true` for `>`, `false` for `<`.
    pub greater: bool,
    /// The threshold.
    pub value: f64,
}

/// One step of a `_target`: a target, how long to wait on it, and whether
/// the next step replaces it (`clear`) or adds to it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStep {
    /// The target.
    pub target: Target,
    /// Seconds before moving to the next step (`None`: until the request's
    /// own timeout).
    pub timeout_secs: Option<u64>,
    /// Whether the next step replaces this target instead of adding to it.
    pub clear: bool,
    /// Skip this step when the statistic meets the threshold.
    pub skip_when: Option<StatCheck>,
}

/// Why a `_target` value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("_target: {0}")]
pub struct TargetError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, TargetError> {
    Err(TargetError(message.into()))
}

/// Parses a `_target` option value: one target string or a JSON array of
/// steps (single-quoted JSON, as some GMS templates write it, is accepted).
pub fn parse_target_option(value: &str) -> Result<Vec<TargetStep>, TargetError> {
    let text = value.trim();
    if text.is_empty() {
        return err("is empty");
    }
    if !text.starts_with('[') {
        return Ok(vec![TargetStep {
            target: parse_target(text)?,
            timeout_secs: None,
            clear: false,
            skip_when: None,
        }]);
    }
    let list: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(first) => serde_json::from_str(&text.replace('\'', "\""))
            .map_err(|_| TargetError(format!("not a valid JSON array of targets ({first})")))?,
    };
    let Value::Array(items) = list else {
        return err("a target list must be a JSON array");
    };
    if items.is_empty() {
        return err("the target list is empty");
    }
    if items.len() > MAX_TARGETS {
        return err(format!(
            "{} targets given; at most {MAX_TARGETS} are allowed",
            items.len()
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            parse_step(item).map_err(|e| TargetError(format!("target {}: {}", i + 1, e.0)))
        })
        .collect()
}

fn parse_step(item: &Value) -> Result<TargetStep, TargetError> {
    let Value::Object(fields) = item else {
        return err("each element must be an object with a 'target'");
    };
    for key in fields.keys() {
        if !matches!(
            key.as_str(),
            "target" | "timeout" | "clear" | "stat_to_check" | "stat_operator" | "stat_value"
        ) {
            return err(format!("unknown property '{key}'"));
        }
    }
    let target = match fields.get("target") {
        Some(Value::String(s)) => parse_target(s)?,
        _ => return err("'target' must be a string"),
    };
    let timeout_secs = match fields.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            number(v)
                .filter(|n| *n >= 0.0 && n.fract() == 0.0)
                .ok_or_else(|| {
                    TargetError(format!(
                        "'timeout' must be a whole number of seconds, not {v}"
                    ))
                })? as u64,
        ),
    };
    let clear = match fields.get("clear") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(v) => return err(format!("'clear' must be true or false, not {v}")),
    };
    let skip_when = match fields.get("stat_to_check") {
        None | Some(Value::Null) => None,
        Some(Value::String(stat)) => {
            let greater = match fields.get("stat_operator").and_then(Value::as_str) {
                Some(">") => true,
                Some("<") => false,
                other => {
                    return err(format!(
                        "'stat_operator' must be \"<\" or \">\", not {}",
                        other.map_or("nothing".to_string(), |o| format!("\"{o}\""))
                    ));
                }
            };
            let value = fields
                .get("stat_value")
                .and_then(number)
                .ok_or_else(|| TargetError("'stat_value' must be a number".into()))?;
            if matches!(target.selector, Selector::Skills(_))
                && !matches!(
                    stat.as_str(),
                    "RStatAgentsReadyvoice" | "RStatAgentsReady" | "RStatAgentsTotal"
                )
            {
                return err(format!(
                    "a skill target can only check RStatAgentsReadyvoice, RStatAgentsReady or \
                     RStatAgentsTotal, not '{stat}'"
                ));
            }
            Some(StatCheck {
                stat: stat.clone(),
                greater,
                value,
            })
        }
        Some(v) => return err(format!("'stat_to_check' must be a string, not {v}")),
    };
    Ok(TargetStep {
        target,
        timeout_secs,
        clear,
        skip_when,
    })
}

/// A number given as a JSON number or a numeric string.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses one URS target string `name@statserver.TYPE` or
/// `?:skill-expression@statserver.TYPE`.
pub fn parse_target(text: &str) -> Result<Target, TargetError> {
    let text = text.trim();
    let Some((selector, place)) = text.rsplit_once('@') else {
        return err(format!(
            "'{text}' is not a target: expected name@statserver.TYPE"
        ));
    };
    let Some((statserver, code)) = place.rsplit_once('.') else {
        return err(format!(
            "'{text}': expected a target type after the Stat Server name (name@statserver.TYPE)"
        ));
    };
    let kind = TargetKind::parse(code.trim()).ok_or_else(|| {
        TargetError(format!(
            "'{text}': unknown target type '{code}' (A, AP, GA, GP or GC)"
        ))
    })?;
    if statserver.trim().is_empty() {
        return err(format!("'{text}': the Stat Server name is missing"));
    }
    let selector = match selector.strip_prefix("?:") {
        Some(expr) => {
            if kind != TargetKind::AgentGroup && kind != TargetKind::Agent {
                return err(format!(
                    "'{text}': a skill expression selects agents (type GA or A), not {}",
                    kind.code()
                ));
            }
            Selector::Skills(
                parse_skills(expr).map_err(|e| TargetError(format!("'{text}': {}", e.0)))?,
            )
        }
        None if selector.trim().is_empty() => {
            return err(format!("'{text}': the target name is missing"));
        }
        None => Selector::Named(selector.trim().to_string()),
    };
    Ok(Target {
        selector,
        statserver: statserver.trim().to_string(),
        kind,
        text: text.to_string(),
    })
}

/// Parses a skill expression.
pub fn parse_skills(text: &str) -> Result<SkillExpr, TargetError> {
    let mut p = SkillParser {
        chars: text.char_indices().collect(),
        pos: 0,
        text,
    };
    let expr = p.or()?;
    p.skip_spaces();
    if p.pos < p.chars.len() {
        return p.fail("unexpected text");
    }
    Ok(expr)
}

struct SkillParser<'a> {
    chars: Vec<(usize, char)>,
    pos: usize,
    text: &'a str,
}

impl SkillParser<'_> {
    fn fail<T>(&self, what: &str) -> Result<T, TargetError> {
        let at = self.chars.get(self.pos).map_or(self.text.len(), |c| c.0);
        err(format!(
            "skill expression '{}': {what} at character {}",
            self.text,
            at + 1
        ))
    }

    fn skip_spaces(&mut self) {
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.1.is_whitespace())
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_spaces();
        if self.chars.get(self.pos).is_some_and(|x| x.1 == c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<SkillExpr, TargetError> {
        let mut left = self.and()?;
        while self.eat('|') {
            left = SkillExpr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<SkillExpr, TargetError> {
        let mut left = self.unary()?;
        while self.eat('&') {
            left = SkillExpr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<SkillExpr, TargetError> {
        if self.eat('!') {
            return Ok(SkillExpr::Not(Box::new(self.unary()?)));
        }
        if self.eat('(') {
            let inner = self.or()?;
            if !self.eat(')') {
                return self.fail("')' expected");
            }
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<SkillExpr, TargetError> {
        self.skip_spaces();
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.1.is_alphanumeric() || c.1 == '_' || c.1 == '-' || c.1 == ' ')
            && !self.at_operator()
        {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().map(|c| c.1).collect();
        let name = name.trim().to_string();
        if name.is_empty() {
            return self.fail("a skill name expected");
        }
        self.skip_spaces();
        let op = if self.eat_str(">=") {
            Comparison::GreaterOrEqual
        } else if self.eat_str("<=") {
            Comparison::LessOrEqual
        } else if self.eat_str("!=") {
            Comparison::NotEqual
        } else if self.eat('>') {
            Comparison::Greater
        } else if self.eat('<') {
            Comparison::Less
        } else if self.eat('=') {
            Comparison::Equal
        } else {
            return self.fail(&format!(
                "a comparison (=, !=, <, <=, >, >=) expected after '{name}'"
            ));
        };
        self.skip_spaces();
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.1.is_ascii_digit() || c.1 == '.')
        {
            self.pos += 1;
        }
        let digits: String = self.chars[start..self.pos].iter().map(|c| c.1).collect();
        let Ok(level) = digits.parse::<f64>() else {
            return self.fail(&format!("a level (number) expected after '{name}'"));
        };
        Ok(SkillExpr::Skill { name, op, level })
    }

    fn at_operator(&self) -> bool {
        matches!(
            self.chars.get(self.pos).map(|c| c.1),
            Some('=' | '<' | '>' | '!' | '&' | '|' | '(' | ')')
        )
    }

    fn eat_str(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        let here: String = self
            .chars
            .iter()
            .skip(self.pos)
            .take(n)
            .map(|c| c.1)
            .collect();
        if here == s {
            self.pos += n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(pairs: &'static [(&'static str, f64)]) -> impl Fn(&str) -> Option<f64> {
        move |s| pairs.iter().find(|(k, _)| *k == s).map(|(_, v)| *v)
    }

    #[test]
    fn a_single_named_target_is_read() {
        let steps = parse_target_option("Billing@StatServer.GA").unwrap();
        assert_eq!(steps.len(), 1);
        let t = &steps[0].target;
        assert_eq!(t.selector, Selector::Named("Billing".into()));
        assert_eq!(t.statserver, "StatServer");
        assert_eq!(t.kind, TargetKind::AgentGroup);
        assert_eq!(steps[0].timeout_secs, None);
        for (code, kind) in [
            ("A", TargetKind::Agent),
            ("AP", TargetKind::AgentPlace),
            ("GP", TargetKind::PlaceGroup),
            ("GC", TargetKind::CampaignGroup),
        ] {
            let t = parse_target(&format!("x@ss.{code}")).unwrap();
            assert_eq!(t.kind, kind);
            assert_eq!(t.kind.code(), code);
        }
    }

    #[test]
    fn skill_expressions_select_agents_by_level() {
        let t = parse_target("?:English=20&Loans=2@StatServer.GA").unwrap();
        let Selector::Skills(expr) = &t.selector else {
            panic!("skills expected");
        };
        assert!(expr.matches(&levels(&[("English", 20.0), ("Loans", 2.0)])));
        assert!(!expr.matches(&levels(&[("English", 20.0), ("Loans", 3.0)])));
        assert!(!expr.matches(&levels(&[("English", 20.0)])));
        let e = parse_skills("English >= 5 & (Loans=2 | Mortgage>3) & !Spanish>0").unwrap();
        assert!(e.matches(&levels(&[("English", 7.0), ("Mortgage", 4.0)])));
        assert!(!e.matches(&levels(&[("English", 7.0), ("Mortgage", 3.0)])));
        assert!(!e.matches(&levels(&[
            ("English", 7.0),
            ("Loans", 2.0),
            ("Spanish", 1.0)
        ])));
        assert!(e.matches(&levels(&[
            ("English", 5.0),
            ("Loans", 2.0),
            ("Spanish", 0.0)
        ])));
        let spaced = parse_skills("Customer Service >= 1").unwrap();
        assert!(spaced.matches(&levels(&[("Customer Service", 1.0)])));
    }

    #[test]
    fn a_json_list_of_steps_is_read_with_its_options() {
        let steps = parse_target_option(
            r#"[{"target":"Tier1@SS.GA","timeout":"15","clear":true},
                {"target":"?:English>3@SS.GA","timeout":30,"stat_to_check":"RStatAgentsReady",
                 "stat_operator":"<","stat_value":"1"},
                {"target":"Overflow@SS.GA"}]"#,
        )
        .unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].timeout_secs, Some(15));
        assert!(steps[0].clear);
        assert!(!steps[1].clear);
        assert_eq!(
            steps[1].skip_when,
            Some(StatCheck {
                stat: "RStatAgentsReady".into(),
                greater: false,
                value: 1.0
            })
        );
        assert_eq!(steps[2].timeout_secs, None);
        // The single-quoted form some GMS templates use.
        let quoted = parse_target_option(
            "[{'target':'Customer_Service@Stat_Server.GA','timeout':'15','clear':true}]",
        )
        .unwrap();
        assert_eq!(quoted[0].target.statserver, "Stat_Server");
        assert_eq!(quoted[0].timeout_secs, Some(15));
    }

    #[test]
    fn bad_targets_are_refused_with_what_is_wrong() {
        let cases = [
            ("", "is empty"),
            ("Billing", "expected name@statserver.TYPE"),
            ("Billing@StatServer", "expected a target type"),
            ("Billing@StatServer.XX", "unknown target type 'XX'"),
            ("@StatServer.GA", "the target name is missing"),
            ("Billing@.GA", "the Stat Server name is missing"),
            ("?:English@SS.GA", "a comparison"),
            ("?:English=@SS.GA", "a level (number) expected"),
            ("?:(English=1@SS.GA", "')' expected"),
            ("?:English=1@SS.GP", "skill expression selects agents"),
            ("[]", "the target list is empty"),
            ("[1]", "target 1: each element must be an object"),
            (
                "[{\"target\":\"a@b.GA\",\"timeout\":\"soon\"}]",
                "'timeout' must be a whole number",
            ),
            (
                "[{\"target\":\"a@b.GA\",\"colour\":1}]",
                "unknown property 'colour'",
            ),
            (
                "[{\"target\":\"a@b.GA\",\"stat_to_check\":\"X\",\"stat_operator\":\"=\",\"stat_value\":1}]",
                "'stat_operator' must be",
            ),
            (
                "[{\"target\":\"?:a=1@b.GA\",\"stat_to_check\":\"StatX\",\"stat_operator\":\">\",\"stat_value\":1}]",
                "a skill target can only check",
            ),
            ("[{\"target\":", "not a valid JSON array"),
        ];
        for (input, expected) in cases {
            let e = parse_target_option(input).expect_err(input).to_string();
            assert!(e.starts_with("_target: "), "{e}");
            assert!(e.contains(expected), "{input:?}: {e}");
        }
        let many: Vec<String> = (0..16)
            .map(|i| format!("{{\"target\":\"g{i}@ss.GA\"}}"))
            .collect();
        let e = parse_target_option(&format!("[{}]", many.join(","))).unwrap_err();
        assert!(
            e.to_string().contains("16 targets given; at most 15"),
            "{e}"
        );
        let fifteen = format!("[{}]", many[..15].join(","));
        assert_eq!(parse_target_option(&fifteen).unwrap().len(), 15);
    }
}

//! The simulated media backend behind the dialog module: what a treatment
//! element asks for ([`Treatment`], read from its attributes and its
//! `<dialog:prompts>`/`<dialog:prompt>`/`<dialog:input>` children), what
//! the simulated caller does ([`Treatment::outcome`]: the treatment takes
//! its configured time, a collect returns the configured digits), and the
//! treatments under way per session, which `<dialog:stop>` cancels.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::interpreter::ActionScope;
use crate::modules::settings::DialogSettings;
use crate::modules::{
    Failure, XmlElement, eval_checked, invalid_attribute, seconds_value, value_text,
};

/// The kinds of treatment ORS's dialog interface runs (REF81 Dialog
/// (Treatment) Interface, action elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<dialog:play>`: announcements.
    Play,
    /// `<dialog:collect>`: digits from the caller.
    Collect,
    /// `<dialog:playandcollect>`: announcements, then digits.
    PlayAndCollect,
    /// `<dialog:playsound>`: music, ringback, silence, busy tones.
    PlaySound,
    /// `<dialog:pause>` (inside `<dialog:runtreatments>`).
    Pause,
    /// `<dialog:remote>` (inside `<dialog:runtreatments>`): a dialog run
    /// on a remote resource.
    Remote,
    /// `<dialog:start>`: a dialog application.
    Start,
}

impl Kind {
    /// The element's local name (also the `[platform.dialog.durations]`
    /// key and the `<action>` of its events).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Play => "play",
            Kind::Collect => "collect",
            Kind::PlayAndCollect => "playandcollect",
            Kind::PlaySound => "playsound",
            Kind::Pause => "pause",
            Kind::Remote => "remote",
            Kind::Start => "start",
        }
    }

    /// The kind an element's local name names.
    pub fn from_name(name: &str) -> Option<Kind> {
        [
            Kind::Play,
            Kind::Collect,
            Kind::PlayAndCollect,
            Kind::PlaySound,
            Kind::Pause,
            Kind::Remote,
            Kind::Start,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// Whether the treatment collects digits.
    pub fn collects(self) -> bool {
        matches!(self, Kind::Collect | Kind::PlayAndCollect)
    }

    /// Whether an own `duration` attribute (seconds) sets its length.
    fn takes_duration(self) -> bool {
        matches!(
            self,
            Kind::PlaySound | Kind::Pause | Kind::Remote | Kind::Start
        )
    }
}

/// What a collect asks of the caller (`<dialog:input>`).
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Most digits taken (`max_digits`).
    pub max_digits: Option<usize>,
    /// Digits that end the input and are not part of it (`term_digits`).
    pub term_digits: String,
    /// Longest the caller is given, in ms (`total_timeout`, seconds).
    pub total_timeout_ms: Option<u64>,
}

/// One treatment, read and checked.
#[derive(Debug, Clone)]
pub struct Treatment {
    /// Its kind.
    pub kind: Kind,
    /// How long it takes, in ms.
    pub duration_ms: u64,
    /// The values of its prompts (`intid`, `number`, `userannid`, `text`),
    /// which may select the digits a collect returns.
    pub prompts: Vec<String>,
    /// For a collect: the input rules.
    pub input: Option<Input>,
}

/// What the simulated caller did with a treatment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran to its end after `after_ms`; a collect got `digits`.
    Done {
        /// Its length, in ms.
        after_ms: u64,
        /// The digits collected, for a collect.
        digits: Option<String>,
    },
    /// The caller entered nothing within the collect's `total_timeout`.
    TimedOut {
        /// The timeout, in ms.
        after_ms: u64,
    },
}

impl Treatment {
    /// Reads the treatment `element` (the action itself, or a child of
    /// `<dialog:runtreatments>`): every attribute that is an expression is
    /// evaluated, and one that fails or has the wrong kind of value is an
    /// `invalidattribute` failure.
    pub fn parse(
        scope: &mut ActionScope<'_>,
        kind: Kind,
        element: &XmlElement,
        settings: &DialogSettings,
    ) -> Result<Treatment, Failure> {
        let tag = format!("dialog:{}", kind.name());
        let mut duration_ms = settings.duration_ms(kind.name());
        if kind.takes_duration()
            && let Some(v) = eval_checked(scope, &tag, "duration", element.attr("duration"))?
        {
            duration_ms = seconds_value(&v)
                .ok_or_else(|| invalid_attribute(&tag, "duration", &v, "a number of seconds"))?;
        }
        for name in ["type", "resource", "destination", "language", "default"] {
            if let Some(v) = eval_checked(scope, &tag, name, element.attr(name))?
                && (v.is_object() || v.is_array())
            {
                return Err(invalid_attribute(&tag, name, &v, "a string"));
            }
        }
        if kind == Kind::Remote && element.attr("destination").is_none() {
            return Err(Failure::new(
                "invalidattribute",
                "the attribute dialog:remote:destination is required",
            ));
        }
        let mut prompts = Vec::new();
        let mut input = kind.collects().then(Input::default);
        for child in element.descendants() {
            match child.name.as_str() {
                "prompt" => {
                    for name in ["intid", "number", "userannid", "text"] {
                        if let Some(v) =
                            eval_checked(scope, "dialog:prompt", name, child.attr(name))?
                        {
                            prompts.push(value_text(&v));
                        }
                    }
                }
                "input" if kind.collects() => {
                    input = Some(read_input(scope, child)?);
                }
                _ => {}
            }
        }
        Ok(Treatment {
            kind,
            duration_ms,
            prompts,
            input,
        })
    }

    /// What the simulated caller does: the treatment takes its length; a
    /// collect returns the digits configured for one of its prompts, else
    /// for the interaction, else the default, cut at a terminating digit
    /// and to `max_digits`, unless its `total_timeout` runs out first.
    pub fn outcome(&self, settings: &DialogSettings, interaction: Option<&str>) -> Outcome {
        let Some(input) = &self.input else {
            return Outcome::Done {
                after_ms: self.duration_ms,
                digits: None,
            };
        };
        if let Some(limit) = input.total_timeout_ms
            && limit < self.duration_ms
        {
            return Outcome::TimedOut { after_ms: limit };
        }
        let entered = self
            .prompts
            .iter()
            .find_map(|p| settings.prompt_digits.get(p))
            .or_else(|| interaction.and_then(|i| settings.interaction_digits.get(i)))
            .unwrap_or(&settings.digits);
        let mut digits: String = entered
            .chars()
            .take_while(|c| !input.term_digits.contains(*c))
            .collect();
        if let Some(max) = input.max_digits {
            digits = digits.chars().take(max).collect();
        }
        Outcome::Done {
            after_ms: self.duration_ms,
            digits: Some(digits),
        }
    }
}

/// Reads `<dialog:input>`.
fn read_input(scope: &mut ActionScope<'_>, element: &XmlElement) -> Result<Input, Failure> {
    let tag = "dialog:input";
    let mut input = Input::default();
    if let Some(v) = eval_checked(scope, tag, "max_digits", element.attr("max_digits"))? {
        let n = match &v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| invalid_attribute(tag, "max_digits", &v, "a whole number from 1 to 64"))?;
        input.max_digits = Some(n as usize);
    }
    if let Some(v) = eval_checked(scope, tag, "term_digits", element.attr("term_digits"))? {
        input.term_digits = value_text(&v);
    }
    if let Some(v) = eval_checked(scope, tag, "total_timeout", element.attr("total_timeout"))? {
        input.total_timeout_ms =
            Some(seconds_value(&v).ok_or_else(|| {
                invalid_attribute(tag, "total_timeout", &v, "a number of seconds")
            })?);
    }
    for name in ["abort_digits", "digit_timeout", "clear_buffer"] {
        eval_checked(scope, tag, name, element.attr(name))?;
    }
    Ok(input)
}

/// A treatment under way, as `<dialog:stop>` finds it.
struct Running {
    session: String,
    requestid: String,
    interaction: Option<String>,
    cancel: Arc<Notify>,
}

/// The treatments under way on this server.
#[derive(Default)]
pub struct Treatments {
    running: Mutex<Vec<Running>>,
}

impl Treatments {
    fn begin(&self, session: &str, requestid: &str, interaction: Option<&str>) -> Arc<Notify> {
        let cancel = Arc::new(Notify::new());
        if let Ok(mut running) = self.running.lock() {
            running.push(Running {
                session: session.to_string(),
                requestid: requestid.to_string(),
                interaction: interaction.map(str::to_string),
                cancel: cancel.clone(),
            });
        }
        cancel
    }

    fn end(&self, requestid: &str) {
        if let Ok(mut running) = self.running.lock() {
            running.retain(|r| r.requestid != requestid);
        }
    }

    /// Cancels the treatments `session` has under way (only those on
    /// `interaction` when given); returns the request ids cancelled.
    pub fn stop(&self, session: &str, interaction: Option<&str>) -> Vec<String> {
        let Ok(mut running) = self.running.lock() else {
            return Vec::new();
        };
        let mut stopped = Vec::new();
        running.retain(|r| {
            let hit = r.session == session
                && interaction.is_none_or(|i| r.interaction.as_deref() == Some(i));
            if hit {
                r.cancel.notify_one();
                stopped.push(r.requestid.clone());
            }
            !hit
        });
        stopped
    }

    /// Registers a run of `outcomes` at once (so that a `<dialog:stop>`
    /// in the same macrostep finds it) and returns the future that plays
    /// them one after the other (stopping at a timeout) and answers with
    /// the last digits collected, `timeout`, or `cancelled` when
    /// `<dialog:stop>` comes first. Times are the worker's tokio clock.
    pub fn start(
        self: &Arc<Self>,
        session: String,
        requestid: String,
        interaction: Option<String>,
        outcomes: Vec<Outcome>,
    ) -> impl std::future::Future<Output = Result<Map<String, Value>, Failure>> + use<> {
        let cancel = self.begin(&session, &requestid, interaction.as_deref());
        let this = self.clone();
        async move { this.play(requestid, cancel, outcomes).await }
    }

    async fn play(
        &self,
        requestid: String,
        cancel: Arc<Notify>,
        outcomes: Vec<Outcome>,
    ) -> Result<Map<String, Value>, Failure> {
        let mut total = 0u64;
        let mut digits = None;
        let mut timed_out = false;
        for o in outcomes {
            match o {
                Outcome::Done {
                    after_ms,
                    digits: d,
                } => {
                    total = total.saturating_add(after_ms);
                    digits = d.or(digits);
                }
                Outcome::TimedOut { after_ms } => {
                    total = total.saturating_add(after_ms);
                    timed_out = true;
                    break;
                }
            }
        }
        let sleep = tokio::time::sleep(std::time::Duration::from_millis(total));
        let cancelled = tokio::select! {
            _ = sleep => false,
            _ = cancel.notified() => true,
        };
        self.end(&requestid);
        if cancelled {
            return Err(Failure::new("cancelled", "the treatment was stopped"));
        }
        if timed_out {
            return Err(Failure::new(
                "timeout",
                "the caller entered no digits before total_timeout",
            ));
        }
        let mut out = Map::new();
        if let Some(d) = digits {
            out.insert("digits".into(), Value::String(d));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: Input, prompts: &[&str]) -> Treatment {
        Treatment {
            kind: Kind::Collect,
            duration_ms: 500,
            prompts: prompts.iter().map(|p| p.to_string()).collect(),
            input: Some(input),
        }
    }

    #[test]
    fn a_collect_returns_the_most_specific_digits_cut_by_its_rules() {
        let mut settings = DialogSettings {
            digits: "12345#9".into(),
            ..DialogSettings::default()
        };
        let plain = collect(Input::default(), &[]);
        let done = |digits: &str| Outcome::Done {
            after_ms: 500,
            digits: Some(digits.into()),
        };
        assert_eq!(plain.outcome(&settings, None), done("12345#9"));
        let cut = collect(
            Input {
                term_digits: "#".into(),
                max_digits: Some(3),
                ..Input::default()
            },
            &[],
        );
        assert_eq!(cut.outcome(&settings, None), done("123"));
        settings
            .interaction_digits
            .insert("ixn-1".into(), "77".into());
        settings.prompt_digits.insert("1111".into(), "42".into());
        assert_eq!(plain.outcome(&settings, Some("ixn-1")), done("77"));
        let prompted = collect(Input::default(), &["1111"]);
        assert_eq!(prompted.outcome(&settings, Some("ixn-1")), done("42"));
        let short = collect(
            Input {
                total_timeout_ms: Some(100),
                ..Input::default()
            },
            &[],
        );
        assert_eq!(
            short.outcome(&settings, None),
            Outcome::TimedOut { after_ms: 100 }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_treatment_answers_cancelled() {
        let t = Arc::new(Treatments::default());
        let job = tokio::spawn(t.start(
            "s".into(),
            "r1".into(),
            Some("i".into()),
            vec![Outcome::Done {
                after_ms: 60_000,
                digits: None,
            }],
        ));
        assert_eq!(t.stop("other", None), Vec::<String>::new());
        assert_eq!(t.stop("s", Some("i")), vec!["r1".to_string()]);
        let err = job.await.unwrap().unwrap_err();
        assert_eq!(err.code, "cancelled");
    }

    #[tokio::test(start_paused = true)]
    async fn treatments_run_in_turn_and_keep_the_last_digits() {
        let t = Arc::new(Treatments::default());
        let out = t
            .start(
                "s".into(),
                "r".into(),
                None,
                vec![
                    Outcome::Done {
                        after_ms: 10,
                        digits: Some("1".into()),
                    },
                    Outcome::Done {
                        after_ms: 10,
                        digits: None,
                    },
                ],
            )
            .await
            .unwrap();
        assert_eq!(out["digits"], "1");
    }
}

//! Backend settings: which routing and chat backends the server uses (an
//! external service speaking the JSON protocol of [`super::routing_http`]
//! and [`super::chat_http`], or the embedded simulator), and how the
//! embedded simulator behaves: its agents, whether they accept chats by
//! themselves, after what delay, and the greeting they send.
//!
//! Every struct takes defaults for missing fields and refuses unknown
//! ones, so a misspelt setting is reported instead of ignored.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The greeting an embedded agent sends after joining a chat, by default.
pub const DEFAULT_GREETING: &str = "Hello {customer}, my name is {agent}. How can I help you?";

/// Which backends to use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendSettings {
    /// Base URL of an external routing service (`None`: the embedded
    /// simulator routes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_url: Option<String>,
    /// Base URL of an external chat service (`None`: the embedded
    /// simulator hosts chats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_url: Option<String>,
    /// The embedded simulator (used for whichever backend has no URL).
    pub simulator: SimulatorSettings,
}

/// The embedded simulator's agents and behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorSettings {
    /// The agents; an empty list means the demo agents
    /// ([`SimulatorSettings::effective_agents`]).
    pub agents: Vec<AgentSettings>,
    /// Whether agents accept a delivered chat by themselves (each agent
    /// may override it).
    pub auto_accept: bool,
    /// How long an auto-accepting agent takes to join, in milliseconds.
    pub accept_delay_ms: u64,
    /// What an agent says after joining: `{customer}` is replaced by the
    /// customer's nickname and `{agent}` by the agent's name. Empty: no
    /// greeting.
    pub greeting: String,
    /// How long an ended chat stays readable (transcript, info), in
    /// seconds, before it is dropped.
    pub ended_chat_retention_secs: u64,
}

impl Default for SimulatorSettings {
    fn default() -> SimulatorSettings {
        SimulatorSettings {
            agents: Vec::new(),
            auto_accept: true,
            accept_delay_ms: 300,
            greeting: DEFAULT_GREETING.to_string(),
            ended_chat_retention_secs: 600,
        }
    }
}

/// One simulated agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// The agent's id (employee id); required and unique.
    pub id: String,
    /// Display name (the chat nickname); empty means the id.
    pub name: String,
    /// The agent's place; empty means `Place_<id>`.
    pub place: String,
    /// Agent groups (and place or campaign groups) the agent belongs to.
    pub groups: Vec<String>,
    /// Skills with their levels.
    pub skills: BTreeMap<String, f64>,
    /// Whether the agent starts ready.
    pub ready: bool,
    /// How many interactions of each media the agent handles at once
    /// (a media not listed: none).
    pub capacity: BTreeMap<String, u32>,
    /// Overrides [`SimulatorSettings::auto_accept`] for this agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_accept: Option<bool>,
}

impl Default for AgentSettings {
    fn default() -> AgentSettings {
        AgentSettings {
            id: String::new(),
            name: String::new(),
            place: String::new(),
            groups: Vec::new(),
            skills: BTreeMap::new(),
            ready: true,
            capacity: default_capacity(),
            auto_accept: None,
        }
    }
}

/// Three chats and one voice call at a time.
fn default_capacity() -> BTreeMap<String, u32> {
    BTreeMap::from([("chat".to_string(), 3), ("voice".to_string(), 1)])
}

impl AgentSettings {
    /// A ready agent with the default capacity in the given groups.
    pub fn new(id: &str, name: &str, groups: &[&str]) -> AgentSettings {
        AgentSettings {
            id: id.to_string(),
            name: name.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..AgentSettings::default()
        }
    }

    /// The display name: [`AgentSettings::name`], or the id when empty.
    pub fn display_name(&self) -> String {
        if self.name.trim().is_empty() {
            self.id.clone()
        } else {
            self.name.clone()
        }
    }

    /// The place: [`AgentSettings::place`], or `Place_<id>` when empty.
    pub fn effective_place(&self) -> String {
        if self.place.trim().is_empty() {
            format!("Place_{}", self.id)
        } else {
            self.place.clone()
        }
    }

    /// Checks one agent: a non-empty id and finite skill levels.
    pub fn validate(&self) -> Result<(), super::SetupError> {
        if self.id.trim().is_empty() {
            return Err(super::SetupError::Settings(
                "an agent's id must not be empty".to_string(),
            ));
        }
        if let Some((skill, _)) = self.skills.iter().find(|(_, l)| !l.is_finite()) {
            return Err(super::SetupError::Settings(format!(
                "agent '{}': skill '{skill}' must have a finite level",
                self.id
            )));
        }
        Ok(())
    }
}

impl SimulatorSettings {
    /// The agents the simulator starts with: the configured ones, or when
    /// none are configured the demo agents: `agent-1` "Ann Lee" and
    /// `agent-2` "Bob Stone" in `Chat_Agents`, and `agent-3` "Carla Diaz"
    /// in `Chat_Overflow`, all with English=10.
    pub fn effective_agents(&self) -> Vec<AgentSettings> {
        if !self.agents.is_empty() {
            return self.agents.clone();
        }
        [
            ("agent-1", "Ann Lee", "Chat_Agents"),
            ("agent-2", "Bob Stone", "Chat_Agents"),
            ("agent-3", "Carla Diaz", "Chat_Overflow"),
        ]
        .into_iter()
        .map(|(id, name, group)| AgentSettings {
            skills: BTreeMap::from([("English".to_string(), 10.0)]),
            ..AgentSettings::new(id, name, &[group])
        })
        .collect()
    }

    /// Checks the agents: non-empty, unique ids and finite skill levels.
    /// An agent with no capacity at all is allowed (it is never chosen).
    pub fn validate(&self) -> Result<(), super::SetupError> {
        let mut seen = BTreeSet::new();
        for agent in &self.agents {
            agent.validate()?;
            if !seen.insert(agent.id.as_str()) {
                return Err(super::SetupError::Settings(format!(
                    "agent id '{}' is used twice",
                    agent.id
                )));
            }
        }
        Ok(())
    }
}

impl BackendSettings {
    /// Checks the URLs (http or https) and the simulator settings.
    pub fn validate(&self) -> Result<(), super::SetupError> {
        for (what, url) in [
            ("routing_url", &self.routing_url),
            ("chat_url", &self.chat_url),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(super::SetupError::Settings(format!(
                    "{what} '{url}' must be an http:// or https:// URL"
                )));
            }
        }
        self.simulator.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_demo_agents() {
        let s = BackendSettings::default();
        assert!(s.routing_url.is_none() && s.chat_url.is_none());
        assert!(s.simulator.auto_accept);
        assert_eq!(s.simulator.accept_delay_ms, 300);
        assert!(s.simulator.greeting.contains("{customer}"));
        let agents = s.simulator.effective_agents();
        let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["agent-1", "agent-2", "agent-3"]);
        assert_eq!(agents[0].groups, ["Chat_Agents"]);
        assert_eq!(agents[2].groups, ["Chat_Overflow"]);
        assert_eq!(agents[0].capacity.get("chat"), Some(&3));
        assert_eq!(agents[0].capacity.get("voice"), Some(&1));
        assert_eq!(agents[0].effective_place(), "Place_agent-1");
        assert!(s.validate().is_ok());
    }

    #[test]
    fn settings_are_read_from_json_with_defaults_and_unknown_fields_refused() {
        let s: BackendSettings = serde_json::from_str(
            r#"{"simulator": {"auto_accept": false,
                "agents": [{"id": "a1", "groups": ["G"], "capacity": {"chat": 1}}]}}"#,
        )
        .unwrap();
        assert!(!s.simulator.auto_accept);
        assert_eq!(s.simulator.accept_delay_ms, 300);
        let a = &s.simulator.agents[0];
        assert!(a.ready);
        assert_eq!(a.display_name(), "a1");
        assert_eq!(a.capacity, BTreeMap::from([("chat".to_string(), 1)]));
        let e = serde_json::from_str::<BackendSettings>(r#"{"simulator": {"agent": []}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `agent`"), "{e}");
    }

    #[test]
    fn validation_refuses_duplicate_and_empty_ids_and_bad_urls() {
        let mut s = SimulatorSettings {
            agents: vec![
                AgentSettings::new("a", "A", &[]),
                AgentSettings::new("a", "B", &[]),
            ],
            ..SimulatorSettings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("used twice"));
        s.agents[1].id = " ".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("must not be empty")
        );
        s.agents[1].id = "b".into();
        s.agents[1].capacity.clear();
        assert!(s.validate().is_ok());
        let b = BackendSettings {
            routing_url: Some("ftp://x".into()),
            ..BackendSettings::default()
        };
        assert!(
            b.validate()
                .unwrap_err()
                .to_string()
                .contains("routing_url")
        );
    }
}

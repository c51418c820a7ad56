//! The `ors serve` configuration: the commented example in the repository
//! parses, unknown keys and unsafe settings are refused, script objects
//! match by name ignoring case.

use ors::app::Config;
use ors::server::config::ConfigError;

#[test]
fn the_example_configuration_parses_to_the_defaults_plus_its_script() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ors.example.toml");
    let config = Config::load(&path).expect("example loads");
    let defaults = Config::default();
    assert_eq!(config.listen, defaults.listen);
    assert_eq!(config.data_dir, defaults.data_dir);
    assert_eq!(
        config.contact_centre.gms.services,
        defaults.contact_centre.gms.services
    );
    assert_eq!(
        config.contact_centre.gms.limits,
        defaults.contact_centre.gms.limits
    );
    assert_eq!(
        config.contact_centre.gms.realm,
        defaults.contact_centre.gms.realm
    );
    assert_eq!(config.security.operator, defaults.security.operator);
    assert_eq!(config.security.admin, defaults.security.admin);
    assert_eq!(config.store.url, defaults.store.url);
    assert_eq!(
        config.store.hibernate_after_secs,
        defaults.store.hibernate_after_secs
    );
    assert_eq!(
        config.store.purge_interval_secs,
        defaults.store.purge_interval_secs
    );
    assert_eq!(config.store.warm_after_secs, defaults.store.warm_after_secs);
    assert_eq!(config.store.warm_max_bytes, defaults.store.warm_max_bytes);
    assert_eq!(config.limits.max_body_bytes, defaults.limits.max_body_bytes);
    assert_eq!(
        config.limits.request_timeout_ms,
        defaults.limits.request_timeout_ms
    );
    assert_eq!(
        config.documents.max_age_secs,
        defaults.documents.max_age_secs
    );
    assert_eq!(
        config.security.allowed_hosts,
        defaults.security.allowed_hosts
    );
    assert_eq!(
        config.connections.header_timeout_ms,
        defaults.connections.header_timeout_ms
    );
    assert_eq!(
        config.connections.max_connections,
        defaults.connections.max_connections
    );
    assert_eq!(
        config.connections.max_connections_per_ip,
        defaults.connections.max_connections_per_ip
    );
    let (script, spelled) = config.script("counterdemo").expect("script object");
    assert_eq!(spelled, Some("CounterDemo"));
    assert_eq!(script.url, "fixtures/server/counter.scxml");
    assert_eq!(script.params["label"], "from the script object");
    assert!(config.script("CounterDemo").unwrap().1.is_none());
    // The GMS wiring it spells out is the default one.
    assert_eq!(
        config.contact_centre.gms.chat_endpoint,
        defaults.contact_centre.gms.chat_endpoint
    );
    assert_eq!(
        config.contact_centre.interaction_queues["chat_inbound"].application,
        defaults.contact_centre.interaction_queues["chat_inbound"].application
    );
    let inbound = config.script("GMSInbound").expect("inbound script").0;
    assert_eq!(inbound.params["app_selected_agent_group"], "Chat_Overflow");
    let agents = config.contact_centre.backends.simulator.effective_agents();
    let demo = defaults
        .contact_centre
        .backends
        .simulator
        .effective_agents();
    let ids = |a: &[ors::backends::AgentSettings]| -> Vec<(String, Vec<String>)> {
        a.iter().map(|a| (a.id.clone(), a.groups.clone())).collect()
    };
    assert_eq!(ids(&agents), ids(&demo));
}

#[test]
fn unknown_keys_and_exposed_listeners_are_refused() {
    let err = Config::parse("listn = \"127.0.0.1:1\"", "t.toml").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Parse { message, .. } if message.contains("listn")),
        "{err}"
    );
    let err = Config::parse("listen = \"0.0.0.0:8080\"", "t.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
    let ok = Config::parse(
        "listen = \"0.0.0.0:8080\"\n[security]\nallow_non_loopback = true\nbearer_token = \"x\"",
        "t.toml",
    )
    .expect("explicitly allowed");
    assert!(!ok.listen.ip().is_loopback());
    let err = Config::parse("[scripts.X]\nurl = \"\"", "t.toml").unwrap_err();
    assert!(err.to_string().contains("scripts.X"), "{err}");
}

#[test]
fn genesys_document_extensions_are_accepted_and_kept() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/genesys_extensions.scxml");
    let doc = ors::load_file(&path, &ors::LoadOptions::default()).expect("loads");
    assert!(!doc.persist, "_persist=\"false\" is kept");
    assert_eq!(doc.application_type.as_deref(), Some("routingstrategy"));
    let text = std::fs::read_to_string(&path).unwrap();
    let persisted = text.replace("_persist=\"false\"", "");
    let doc = ors::parse_document(&persisted, None, &ors::LoadOptions::default()).unwrap();
    assert!(doc.persist, "documents persist by default");
    let bad = text.replace("_persist=\"false\"", "_persist=\"sometimes\"");
    let err = ors::parse_document(&bad, None, &ors::LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("_persist must be"), "{err}");
}

#[test]
fn store_urls_other_than_sqlite_postgres_or_none_are_refused() {
    let err = Config::parse("[store]\nurl = \"mysql://x/y\"", "t.toml").unwrap_err();
    assert!(err.to_string().contains("store.url"), "{err}");
    let ok = Config::parse("[store]\nurl = \"none\"", "t.toml").expect("none is fine");
    assert_eq!(
        ok.store_location().unwrap(),
        ors::store::StoreLocation::None
    );
}

#[test]
fn gms_services_default_to_the_chat_immediate_demo_and_are_checked() {
    let defaults = Config::default();
    assert!(
        defaults
            .contact_centre
            .gms
            .services
            .contains_key("chat-immediate")
    );
    let own = Config::parse(
        "[gms.services.support]\n_target = \"Support@StatServer.GA\"\n_urs_virtual_queue = \"VQ\"\n",
        "t.toml",
    )
    .expect("a service of one's own");
    assert_eq!(own.contact_centre.gms.services.len(), 1);
    let err = Config::parse(
        "[gms.services.support]\n_target = \"Support@StatServer\"\n_urs_virtual_queue = \"VQ\"\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("gms.services") && err.contains("_target"),
        "{err}"
    );
    let err = Config::parse(
        "[gms.services.support]\n_urs_virtual_queue = \"VQ\"\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("mandatory option _target"), "{err}");
}

#[test]
fn an_unknown_top_level_key_is_refused_with_its_line_and_column() {
    let text = "workers = 2\n\n  listn = \"127.0.0.1:1\"\n[store]\nurl = \"none\"\n";
    let err = Config::parse(text, "t.toml").unwrap_err();
    let ConfigError::Parse { path, message } = &err else {
        panic!("a parse error, not {err}");
    };
    assert_eq!(path, "t.toml");
    assert!(message.contains("line 3, column 3"), "{message}");
    assert!(message.contains("unknown field `listn`"), "{message}");
    // Sections of the contact-centre extension are known keys.
    Config::parse("[gms]\nchat_endpoint = \"Environment:q\"\n", "t.toml").expect("gms is known");
}

#[test]
fn credentials_and_customer_limits_are_read_and_checked() {
    let text = "[security.operator]\nusername = \"ops\"\npassword = \"pw\"\n\
                [security.admin]\nbearer_token = \"adm\"\n\
                [gms]\npassword = \"dev\"\nrealm = \"Shop\"\n\
                [gms.limits]\nmax_message_bytes = 100\n";
    let config = Config::parse(text, "t.toml").expect("parses");
    assert_eq!(config.security.operator.username.as_deref(), Some("ops"));
    assert!(config.security.operator_credentials().is_set());
    assert_eq!(config.security.admin.bearer_token.as_deref(), Some("adm"));
    assert_eq!(config.contact_centre.gms.password.as_deref(), Some("dev"));
    assert_eq!(config.contact_centre.gms.limits.max_message_bytes, 100);
    let ors = Config::parse(
        "[documents]\ndialect = \"ors\"\n[scripts.S]\nurl = \"x.scxml\"\ndialect = \"w3c\"\n",
        "t.toml",
    )
    .expect("dialects parse");
    assert_eq!(ors.documents.dialect, Some(ors::model::Dialect::Ors));
    assert_eq!(ors.scripts["S"].dialect, Some(ors::model::Dialect::W3c));
    let bad = Config::parse("[documents]\ndialect = \"scxml2009\"\n", "t.toml").unwrap_err();
    assert!(bad.to_string().contains("scxml2009"), "{bad}");
    let zero = Config::parse("[gms.limits]\nburst = 0\n", "t.toml").unwrap_err();
    assert!(zero.to_string().contains("gms.limits.burst"), "{zero}");
    let unknown = Config::parse("[security.operator]\ntoken = \"x\"\n", "t.toml").unwrap_err();
    assert!(unknown.to_string().contains("token"), "{unknown}");
}

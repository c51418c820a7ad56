//! The platform modules (`dialog`, `classification`, `ws`, `statistic`)
//! and the `_genesys` object model, run in an in-process server over the
//! simulators a `[platform]` configuration sets up. Each fixture under
//! `fixtures/ors/modules/` appends every answer it gets to `log`; the
//! tests read it back once the session has ended.

mod common;

use std::time::Duration;

use common::{eventually, in_process};
use ors::app::Config;
use serde_json::{Value, json};

/// The `[platform]` rules the fixtures run against (the same file
/// `ors run --platform sim --config` takes in `tests/ors_corpus.rs`).
const PLATFORM: &str = include_str!("../fixtures/ors/modules/platform.toml");

fn config() -> Config {
    let mut config =
        Config::parse(PLATFORM, "platform.toml").expect("the [platform] example parses");
    config.server.workers = 2;
    config.security.allowed_dirs = vec![common::fixtures_dir("ors")];
    config.data_dir = common::scratch_dir("platform");
    config
}

/// Starts `fixtures/ors/modules/<name>` and returns its data once it has
/// ended.
async fn run_to_end(name: &str) -> Value {
    let server = in_process(config()).await;
    let api = server.api();
    let id = api
        .start_session(&[("src", &common::fixture("ors/modules", name))])
        .await;
    let q = eventually(
        "the session never ended",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let api = api.clone();
            let id = id.clone();
            async move {
                let q = api.query_ok(&id).await;
                if q["status"] == "running" {
                    Err(format!("still in {}", q["configuration"]))
                } else {
                    Ok(q)
                }
            }
        },
    )
    .await;
    server.stop().await;
    assert_eq!(q["status"], "completed", "{q}");
    q["data"].clone()
}

/// The log entry named `name` (the first one after `skip` others of that
/// name).
fn entry<'a>(log: &'a Value, name: &str, skip: usize) -> &'a Value {
    log.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == name)
        .nth(skip)
        .unwrap_or_else(|| panic!("no {name} (#{skip}) in {log:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialog_actions_answer_with_ors_events_from_the_simulated_media_backend() {
    let data = run_to_end("dialog.scxml").await;
    let log = &data["log"];
    let names: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names[..7],
        [
            "dialog.play.done",
            "dialog.playsound.done",
            "dialog.collect.done",
            "dialog.playandcollect.done",
            "dialog.start.requestid",
            "dialog.start.done",
            "dialog.runtreatments.done",
        ],
        "{log:#}"
    );

    let play = entry(log, "dialog.play.done", 0);
    assert_eq!(play["data"]["interactionid"], "ixn-1");
    assert!(
        play["data"]["requestid"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(play["data"].get("digits").is_none());
    // The interaction's digits, cut at the terminating digit, at most 3.
    assert_eq!(entry(log, "dialog.collect.done", 0)["data"]["digits"], "98");
    // A prompt's digits win.
    assert_eq!(
        entry(log, "dialog.playandcollect.done", 0)["data"]["digits"],
        "55"
    );
    let start_id = &entry(log, "dialog.start.requestid", 0)["data"]["requestid"];
    assert_eq!(
        &entry(log, "dialog.start.done", 0)["data"]["requestid"],
        start_id
    );
    let run = &entry(log, "dialog.runtreatments.done", 0)["data"];
    assert_eq!(run["digits"], "98");
    assert_eq!(run["interactionid"], "ixn-1");

    // <dialog:stop> cancels the long playsound of the same interaction.
    let cancelled = &entry(log, "error.dialog.playsound", 0)["data"];
    assert_eq!(cancelled["error"], "cancelled");
    assert_eq!(cancelled["requestid"], data["longreq"]);
    let stop = &entry(log, "dialog.stop.done", 0)["data"];
    assert_eq!(stop["stopped"], json!([data["longreq"]]));

    let bad = &entry(log, "error.dialog.playsound", 1)["data"];
    assert_eq!(bad["error"], "invalidattribute");
    let message = bad["message"].as_str().unwrap();
    assert!(message.contains("dialog:playsound:duration"), "{message}");
    assert!(bad["requestid"].as_str().is_some_and(|r| !r.is_empty()));

    assert_eq!(
        entry(log, "error.dialog.collect", 0)["data"]["error"],
        "timeout"
    );
    let child = &entry(log, "error.dialog.runtreatments", 0)["data"];
    assert_eq!(child["error"], "invalidattribute");
    assert!(child["message"].as_str().unwrap().contains("dialog:dance"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classification_ws_and_statistic_actions_are_answered_by_the_configured_rules() {
    let data = run_to_end("services.scxml").await;
    let log = &data["log"];

    let classified = &entry(log, "classification.classify.done", 0)["data"];
    assert_eq!(classified["root"], "Service");
    // "Sales" matches "wrong" but belongs to another root.
    assert_eq!(
        classified["categories"],
        json!([
            {"name": "Support", "id": "cat-support", "relevancy": 90},
            {"name": "Billing", "id": "Billing", "relevancy": 70},
        ])
    );
    let no_root = &entry(log, "error.classification.classify", 0)["data"];
    assert_eq!(no_root["error"], "invalidattribute");

    let ok = &entry(log, "ws.invoke.done", 0)["data"];
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["content"], json!({"name": "Bob Markel", "tier": "gold"}));
    assert_eq!(ok["params"], json!({"fields": "name"}));
    assert_eq!(ok["url"], "http://crm.example/customers/42");
    let errors: Vec<(&str, &str)> = (0..4)
        .map(|i| {
            let d = &entry(log, "error.ws.invoke", i)["data"];
            (d["error"].as_str().unwrap(), d["message"].as_str().unwrap())
        })
        .collect();
    assert_eq!(errors[0], ("remote", "orders service down"));
    assert_eq!(errors[1].0, "timeout");
    assert_eq!(errors[2].0, "invalidattribute");
    assert_eq!(errors[3].0, "notfound");

    let stat = &entry(log, "statistic.subscribe.done", 0)["data"];
    assert_eq!(stat["value"], 3.0);
    assert_eq!(stat["object"], "Billing@StatServer.GA");
    assert_eq!(stat["interval"], 10);
    let bad = &entry(log, "error.statistic.subscribe", 0)["data"];
    assert_eq!(bad["error"], "invalidattribute");
    assert!(bad["message"].as_str().unwrap().contains("interval"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_model_has_composers_enumerations_lists_days_zones_and_statistics() {
    let before = jiff::Timestamp::now();
    let data = run_to_end("object_model.scxml").await;
    let after = jiff::Timestamp::now();
    let r = &data["r"];
    assert_eq!(r["rType"], "RouteTypeDefault");
    assert_eq!(r["rTypes"], 12);
    assert_eq!(r["usecapcond"], "OnStatError");
    assert_eq!(r["overwrite"], "UseDNIS");
    assert_eq!(r["resourceType"], "CFGExtension");
    assert_eq!(r["lookupseq"], "StartFromTenant");

    assert_eq!(r["item"], "7001");
    assert_eq!(r["whole"], json!({"destination-dn": "7001", "prefix": "9"}));
    assert_eq!(r["ignoringCase"], "9");
    assert_eq!(r["missing"], "");
    assert_eq!(r["scalar"], true);
    assert_eq!(r["lookup"], "9");

    let time = r["time"].as_str().unwrap();
    assert!(
        time.len() == 8 && time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':',
        "{time}"
    );
    let paris = |t: jiff::Timestamp| {
        t.to_zoned(jiff::tz::TimeZone::get("Europe/Paris").unwrap())
            .date()
            .to_string()
    };
    let date = r["date"].as_str().unwrap();
    assert!(date == paris(before) || date == paris(after), "{date}");
    assert!((0..=6).contains(&r["day"].as_i64().unwrap()));

    assert_eq!(r["everyDay"], 1);
    assert_eq!(r["never"], 0);
    assert_eq!(r["anyDayOfTable"], 1);
    assert_eq!(r["noTable"], 0);
    assert_eq!(r["badZone"], "RangeError");

    assert_eq!(r["sData"], 3);
    assert_eq!(r["sDefault"], -1);
    assert_eq!(r["avg"], 5);
    assert_eq!(r["max"], 7);
    assert_eq!(r["min"], 3);
}

#[test]
fn platform_settings_are_checked_with_the_place_of_a_mistake() {
    let err = Config::parse("[platform.dialog]\ndigts = \"1\"\n", "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("digts"), "{err}");
    let err = Config::parse("[platform.time_zones]\nHQ = \"Mars/Olympus\"\n", "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("Mars/Olympus"), "{err}");
    let err = Config::parse(
        "[[platform.special_days]]\ntable = \"T\"\nday = \"D\"\ndates = [\"31-12\"]\n",
        "bad.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("31-12"), "{err}");
    let err = Config::parse("[[platform.ws.rules]]\nurl = \"\"\n", "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ws.rules[0]"), "{err}");
}

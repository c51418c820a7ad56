//! The `ors run` / `ors validate` command-line contracts, driven as a real
//! process the way other tools drive it.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::cli::{self, ors, spawn_ors, write_temp};

use serde_json::{Value, json};

/// `ors ARGS CHART` with no input; its output.
fn run_chart(args: &[&str], chart: &Path) -> std::process::Output {
    ors()
        .args(args)
        .arg(chart)
        .stdin(Stdio::null())
        .output()
        .expect("runs")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Runs `ors` with these arguments and the chart, writing `input` to its
/// stdin.
fn run_with_input(args: &[&str], chart: &Path, input: &[u8]) -> std::process::Output {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    all.push(chart.as_os_str());
    cli::run_with_input(all, input)
}

#[test]
fn a_driver_can_send_one_event_and_wait_for_its_line() {
    let mut child = spawn_ors(
        [OsStr::new("run"), fixture("hello.scxml").as_os_str()],
        Stdio::piped(),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || -> Value {
        let line = lines.next().expect("a line").expect("readable");
        serde_json::from_str(&line).expect("JSON line")
    };
    let start = next();
    assert_eq!(start["cause"], "start");
    assert_eq!(start["event"], Value::Null);
    assert_eq!(start["configuration"], json!(["idle"]));

    writeln!(stdin, r#"{{"name":"tick"}}"#).expect("write");
    stdin.flush().expect("flush");
    let l = next();
    assert_eq!(
        (l["cause"].clone(), l["event"].clone()),
        (json!("input"), json!("tick"))
    );
    assert_eq!(l["atomic"], json!(["counting"]));

    writeln!(stdin, r#"{{"name":"stop"}}"#).expect("write");
    stdin.flush().expect("flush");
    let l = next();
    assert_eq!(l["done"], true);
    assert_eq!(l["final"], "done");
    assert_eq!(l["configuration"], json!(["done"]));
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn invalid_input_lines_are_reported_and_skipped() {
    let out = run_with_input(
        &["run"],
        &fixture("hello.scxml"),
        b"not json\n{\"data\":1}\n{\"name\":\"tick\",\"data\":{\"n\":1}}\n",
    );
    assert_eq!(out.status.code(), Some(0));
    let (stdout, lines) = cli::json_lines(&out.stdout);
    assert_eq!(lines.len(), 2, "start + the one valid event: {stdout}");
    assert_eq!(lines[1]["event"], "tick");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not JSON"), "{stderr}");
    assert!(stderr.contains("missing \"name\""), "{stderr}");
    assert!(stderr.contains("ticks: 1"), "log goes to stderr: {stderr}");
}

#[test]
fn timeout_exits_124() {
    let chart = write_temp(
        "wait.scxml",
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0"><state id="wait"/></scxml>"#,
    );
    let mut child = spawn_ors(
        [
            OsStr::new("run"),
            OsStr::new("--timeout"),
            OsStr::new("0.3"),
            chart.as_os_str(),
        ],
        Stdio::null(),
    );
    // Keep stdin open so only the timeout can end the run.
    let _stdin = child.stdin.take();
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(124));
}

#[test]
fn at_end_of_input_pending_delayed_sends_still_fire() {
    let chart = write_temp(
        "delayed.scxml",
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0">
  <state id="a">
    <onentry><send event="later" delay="50ms"/></onentry>
    <transition event="later" target="b"/>
  </state>
  <state id="b"/>
</scxml>"#,
    );
    let out = run_chart(&["run"], &chart);
    assert_eq!(out.status.code(), Some(0));
    let (stdout, lines) = cli::json_lines(&out.stdout);
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[1]["cause"], "delayed");
    assert_eq!(lines[1]["event"], "later");
    assert_eq!(lines[1]["configuration"], json!(["b"]));
    assert!(
        lines[1].get("done").is_none(),
        "b is not final: nothing can wake it, so ors exits"
    );
}

#[test]
fn many_events_stream_through() {
    let n = 20_000;
    let mut input = String::new();
    for _ in 0..n {
        input.push_str("{\"name\":\"tick\"}\n");
    }
    let mut child = spawn_ors(
        [OsStr::new("run"), fixture("hello.scxml").as_os_str()],
        Stdio::null(),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("runs");
    writer.join().expect("writer").expect("written");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), n + 1);
    let last: Value = serde_json::from_str(stdout.lines().last().expect("last")).expect("JSON");
    assert_eq!(last["configuration"], json!(["counting"]));
}

#[test]
fn a_document_that_fails_to_load_exits_2_with_its_position() {
    let chart = write_temp(
        "broken.scxml",
        "<scxml xmlns=\"http://www.w3.org/2005/07/scxml\" version=\"1.0\">\n  <state id=\"a\">\n    <transition target=\"missing\"/>\n  </state>\n</scxml>",
    );
    let out = run_chart(&["run"], &chart);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.scxml:3:5: unknown target state 'missing'"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// The documents the server ships validate without a warning: every
/// module action they use is one the server registers.
#[test]
fn the_shipped_documents_validate_without_warnings() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scxml");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scxml/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "scxml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let out = ors().arg("validate").args(&files).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.matches(": ok (").count(), files.len(), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn validate_exit_codes() {
    let ok = ors()
        .arg("validate")
        .arg(fixture("hello.scxml"))
        .output()
        .expect("runs");
    assert_eq!(ok.status.code(), Some(0));
    let bad = ors()
        .arg("validate")
        .arg(fixture("hello.scxml"))
        .arg(fixture("invalid/duplicate_id.scxml"))
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(
        stdout.contains("duplicate_id.scxml:4:3: duplicate state id 'a'"),
        "{stdout}"
    );
}

#[test]
fn trace_reports_exits_transitions_and_entries_in_order() {
    let out = run_with_input(
        &["run", "--trace", "--no-basichttp"],
        &fixture("hello.scxml"),
        b"{\"name\":\"tick\"}\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let steps: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
        .collect();
    assert_eq!(
        steps,
        vec![
            "enter idle",
            "exit idle",
            "transition idle -> [counting] at 8:5",
            "enter counting"
        ],
        "{stderr}"
    );
}

/// A document in the ORS dialect (`profile`, no `datamodel`): `<send>`'s
/// event, delay, target and targettype are expressions, as Composer writes
/// them; the events arrive by their evaluated names. Read as W3C SCXML
/// (`--dialect w3c`) the same document waits for an event named with
/// quotes that never comes.
#[test]
fn the_ors_dialect_evaluates_send_attributes_as_expressions() {
    let chart = fixture("ors/send_expressions.scxml");
    let out = run_chart(&["run"], &chart);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (stdout, lines) = cli::json_lines(&out.stdout);
    let last = lines.last().expect("a line");
    assert_eq!(last["configuration"], json!(["done"]), "{stdout}");
    assert!(
        stderr.contains("seen: application.start,internal.note,Entry1.done"),
        "{stderr}"
    );
    let w3c = run_chart(&["run", "--dialect", "w3c", "--timeout", "1"], &chart);
    let (stdout, lines) = cli::json_lines(&w3c.stdout);
    assert!(
        lines.iter().all(|l| l["configuration"] != json!(["done"])),
        "{stdout}"
    );
    let validated = ors().args(["validate"]).arg(&chart).output().expect("runs");
    assert_eq!(validated.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&validated.stdout).contains("dialect ors"),
        "{}",
        String::from_utf8_lossy(&validated.stdout)
    );
}

/// `<script><xi:include href=… parse="text"/></script>`: the included file
/// is fetched relative to the document and becomes script text where the
/// include stands; an include that cannot be read rejects the document
/// with the include's file, line and column.
#[test]
fn scripts_take_text_from_xinclude() {
    let out = run_chart(&["run"], &fixture("ors/script_include.scxml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (stdout, lines) = cli::json_lines(&out.stdout);
    assert_eq!(
        lines.last().expect("a line")["configuration"],
        json!(["done"]),
        "{stdout}"
    );
    let broken = write_temp(
        "broken_include.scxml",
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" xmlns:xi="http://www.w3.org/2001/XInclude" profile="ecmascript">
  <script>
    <xi:include href="no/such/file.js" parse="text"/>
  </script>
  <state id="s"/>
</scxml>"#,
    );
    let out = ors().arg("validate").arg(&broken).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("broken_include.scxml:3:"), "{text}");
    assert!(text.contains("file.js"), "{text}");
}

/// An interaction-process page that includes one workflow page twice
/// (`xi:include parse="xml" xpointer resolveid`), which itself includes a
/// subflow: the trace shows each copy's states under its own prefix, and
/// the page read on its own boots into its "no boot" final at once.
#[test]
fn workflow_pages_are_included_under_their_prefix() {
    let out = run_chart(&["run", "--trace"], &fixture("ors/include_workflow.scxml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (stdout, lines) = cli::json_lines(&out.stdout);
    assert_eq!(
        lines.last().expect("a line")["configuration"],
        json!(["done"]),
        "{stdout}"
    );
    for wanted in [
        "enter First._composer_entry",
        "enter First.Sub.Step",
        "transition Second.Inner -> [Second.Leave]",
        "flow: greeting under First",
        "flow: greeting under Second",
        "visits: First.Sub,Second.Sub",
    ] {
        assert!(stderr.contains(wanted), "missing '{wanted}' in:\n{stderr}");
    }
    let alone = run_chart(&["run"], &fixture("ors/include/GreetingFlow.scxml"));
    let (stdout, lines) = cli::json_lines(&alone.stdout);
    assert_eq!(
        lines.last().expect("a line")["configuration"],
        json!(["_composer_no_boot"]),
        "{stdout}"
    );
}

/// An ORS module action nothing implements loads with a warning naming the
/// event it will raise, and at run time raises `error.<module>.<action>`
/// with `error: "unsupported"` while the rest of its block runs. `ors
/// validate` knows the platform's actions: `<session:fetch>` draws no
/// warning there, though the bare engine of plain `ors run` has none.
#[test]
fn unsupported_module_actions_answer_with_their_error_event() {
    let chart = fixture("ors/unsupported_action.scxml");
    let validated = ors().arg("validate").arg(&chart).output().expect("runs");
    assert_eq!(validated.status.code(), Some(0));
    let warnings = String::from_utf8_lossy(&validated.stderr);
    assert!(
        warnings.contains("unsupported_action.scxml:15:7")
            && warnings.contains("error.resource.acquire"),
        "{warnings}"
    );
    assert!(!warnings.contains("<fetch>"), "{warnings}");
    for platform in [true, false] {
        let mut command = ors();
        command.args(["run", "--timeout", "10"]);
        if platform {
            command.args(["--platform", "sim"]);
        }
        let out = command
            .arg(&chart)
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        let (stdout, lines) = cli::json_lines(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert_eq!(
            lines.last().expect("a line")["final"],
            json!("done"),
            "{stdout}"
        );
    }
    let bare = run_chart(&["run", "--timeout", "10"], &chart);
    assert!(String::from_utf8_lossy(&bare.stderr).contains("<fetch> of the ORS session module"));
}

/// A delay too long to represent saturates (it never fires) instead of
/// wrapping around to "now"; an unparsable delay is `error.execution`.
#[test]
fn huge_delays_saturate_and_bad_ones_are_errors() {
    let chart = write_temp(
        "huge_delay.scxml",
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript" initial="s">
  <state id="s">
    <onentry>
      <send event="late" delay="99999999999999999999s"/>
      <send event="late" delayexpr="'18446744073709551615ms'"/>
      <send event="soon" delay="50ms"/>
    </onentry>
    <transition event="late" target="wrong"/>
    <transition event="soon" target="t"/>
  </state>
  <state id="t">
    <onentry><send event="never" delayexpr="'NaNs'"/></onentry>
    <transition event="error.execution" target="done"/>
    <transition event="never" target="wrong"/>
  </state>
  <final id="done"/>
  <final id="wrong"/>
</scxml>"#,
    );
    let out = run_chart(&["run", "--timeout", "10"], &chart);
    let (stdout, lines) = cli::json_lines(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(
        lines.last().expect("a line")["final"],
        json!("done"),
        "{stdout}"
    );
}

/// An empty `<finalize/>` copies the values a child returns into the
/// variables the invoke names (`namelist`, `<param location>`); with no
/// `<finalize>` they are left alone (SCXML 1.0 §6.5).
#[test]
fn an_empty_finalize_updates_the_named_variables() {
    for (finalize, expected) in [("<finalize/>", "done"), ("", "unchanged")] {
        let chart = write_temp(
            &format!("finalize_{}.scxml", finalize.len()),
            &format!(
                r##"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript" initial="s">
  <datamodel><data id="x" expr="1"/><data id="y" expr="1"/></datamodel>
  <state id="s">
    <invoke type="scxml" namelist="x">
      <param name="y" location="y"/>
      <content>
        <scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript" initial="c">
          <state id="c">
            <onentry>
              <send target="#_parent" event="result">
                <param name="x" expr="42"/>
                <param name="y" expr="'forty-two'"/>
              </send>
            </onentry>
          </state>
        </scxml>
      </content>
      {finalize}
    </invoke>
    <transition event="result" cond="x === 42 &amp;&amp; y === 'forty-two'" target="done"/>
    <transition event="result" cond="x === 1 &amp;&amp; y === 1" target="unchanged"/>
    <transition event="result" target="wrong"/>
  </state>
  <final id="done"/>
  <final id="unchanged"/>
  <final id="wrong"/>
</scxml>"##
            ),
        );
        let out = run_chart(&["run", "--timeout", "10"], &chart);
        let (stdout, lines) = cli::json_lines(&out.stdout);
        assert_eq!(
            lines.last().expect("a line")["final"],
            json!(expected),
            "{finalize}: {stdout}"
        );
    }
}

/// A session the microstep limit stops has not finished: its last line
/// says why, and `ors run` exits 3 (bare engine and platform alike).
#[test]
fn a_session_stopped_by_the_microstep_limit_exits_3() {
    let chart = write_temp(
        "runaway.scxml",
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript" initial="a">
  <datamodel><data id="n" expr="0"/></datamodel>
  <state id="a"><transition target="b"><assign location="n" expr="n + 1"/></transition></state>
  <state id="b"><transition target="a"/></state>
</scxml>"#,
    );
    for platform in [false, true] {
        let mut command = ors();
        command.args(["run", "--timeout", "20", "--max-microsteps", "1000"]);
        if platform {
            command.args(["--platform", "sim"]);
        }
        let out = command
            .arg(&chart)
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        let (stdout, lines) = cli::json_lines(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "platform {platform}: {stdout}");
        let last = lines.last().expect("a line");
        assert_eq!(last["final"], Value::Null, "{stdout}");
        assert!(
            last["stopped"]
                .as_str()
                .is_some_and(|r| r.contains("1000 microsteps")),
            "{stdout}"
        );
    }
}

/// `error.execution` says which element failed and where: `_event.data`
/// has the `message`, the `tagname`, and the element's `line` and
/// `column` in the document.
#[test]
fn execution_errors_name_the_element_and_its_place() {
    let chart = write_temp(
        "error_place.scxml",
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript" initial="s">
  <state id="s">
    <onentry>
      <log expr="'fine'"/>
      <assign location="nosuch.deep.x" expr="1"/>
    </onentry>
    <transition event="error.execution" target="done">
      <log label="where" expr="[_event.data.tagname, _event.data.line, _event.data.column].join(':')"/>
    </transition>
  </state>
  <final id="done"/>
</scxml>"#,
    );
    let out = run_chart(&["run", "--timeout", "10"], &chart);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("where: assign:5:7"), "{stderr}");
}

/// Thousands of nested states are refused where the text is read, with
/// the place of the first element too deep, instead of overflowing a
/// thread's stack while the document is built (which aborted the process).
#[test]
fn documents_nested_too_deep_are_refused_not_a_crash() {
    let n = 5000;
    let mut text = String::from(
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript">"#,
    );
    for i in 0..n {
        text.push_str(&format!("<state id=\"s{i}\">"));
    }
    text.push_str(&"</state>".repeat(n));
    text.push_str("</scxml>");
    let chart = write_temp("deep.scxml", &text);
    let out = ors().arg("validate").arg(&chart).output().expect("runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("deep.scxml:1:") && said.contains("nest deeper than 200 levels"),
        "{said}"
    );
    let out = run_chart(&["run", "--platform", "sim", "--timeout", "20"], &chart);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nest deeper than 200 levels"));
}

/// A document that invokes itself stops at the invoke depth limit: the
/// innermost invoke fails with `error.execution` instead of the chain
/// growing until memory runs out.
#[test]
fn a_document_invoking_itself_stops_at_the_depth_limit() {
    let chart = write_temp(
        "self_invoke.scxml",
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript" initial="s">
  <state id="s">
    <invoke type="scxml" src="self_invoke.scxml"/>
    <transition event="error.execution" target="refused">
      <log label="refused" expr="_event.data.message"/>
    </transition>
  </state>
  <final id="refused"/>
</scxml>"#,
    );
    let out = run_chart(&["run", "--no-basichttp", "--timeout", "3"], &chart);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The chain of 31 sessions stays (each waits on its child), so the
    // run ends by its timeout; what matters is that it stopped growing.
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert_eq!(
        stderr.matches("nest deeper than 32 levels").count(),
        1,
        "{stderr}"
    );
}

/// Nested `<foreach>`es are bounded per macrostep: past a million
/// iterations the `<foreach>` fails with `error.execution` instead of
/// running for minutes.
#[test]
fn nested_foreach_is_bounded() {
    let chart = write_temp(
        "foreach_bomb.scxml",
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript" initial="s">
  <datamodel><data id="big" expr="Array.apply(null, Array(2000)).map(function (_, i) { return i; })"/></datamodel>
  <state id="s">
    <onentry>
      <foreach array="big" item="x">
        <foreach array="big" item="y"/>
      </foreach>
    </onentry>
    <transition event="error.execution" cond="_event.data.tagname === 'foreach'" target="done"/>
  </state>
  <final id="done"/>
</scxml>"#,
    );
    let out = run_chart(&["run", "--timeout", "60"], &chart);
    let (stdout, lines) = cli::json_lines(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(
        lines.last().expect("a line")["final"],
        json!("done"),
        "{stdout}"
    );
}

/// `ors conformance` whose reader has gone (`| head -1` after the first
/// line, here a pipe closed before anything is written) ends quietly with
/// status 0 instead of panicking on the broken pipe.
#[test]
fn conformance_output_into_a_closed_pipe_ends_quietly() {
    let dir = std::env::temp_dir().join(format!("ors-closed-pipe-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("mandatory")).expect("suite dir");
    std::fs::write(
        dir.join("manifest.tsv"),
        "test\tfile\tcategory\tspec_section\tneeds\tdescription\n\
         t1\tmandatory/t1.scxml\tmandatory\t3.1\tnone\treaches pass\n",
    )
    .expect("manifest");
    std::fs::write(
        dir.join("mandatory/t1.scxml"),
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="pass">
             <final id="pass"/></scxml>"#,
    )
    .expect("test");
    let mut child = ors()
        .arg("conformance")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! README.md's quick start, run literally (issue 21): the first command of its first code block
//! (`cargo run --release`) from the workspace root, as a newcomer types it on a fresh clone,
//! then `curl localhost:8080/ready`, then every line of the "First five minutes" block, each
//! checked for what the README says it shows, then SIGTERM: exit 0 and not one ERROR or WARN
//! line. If the README's commands change, this test reads the new ones.
//!
//! It uses the default ports (8080, 1883, 5672, 9092), so nextest runs it alone in the
//! `default-ports` test group (`.config/nextest.toml`). On a fresh clone the first command
//! builds the release profile; `scripts/test` builds it before the suite, so here it only
//! starts.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::workspace_root;

/// A release build may still run inside the first command.
const START: Duration = Duration::from_secs(25 * 60);
const STOP: Duration = Duration::from_secs(30);

/// The lines of the first fenced block after `heading` (or of the file's first block when
/// `heading` is empty), with trailing `# comments` and blank lines removed.
fn code_block(readme: &str, heading: &str) -> Vec<String> {
    let from = if heading.is_empty() {
        0
    } else {
        readme
            .find(heading)
            .unwrap_or_else(|| panic!("README.md has no {heading:?}"))
    };
    let rest = &readme[from..];
    let open = rest.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let close = open + rest[open..].find("```").expect("the block's end");
    rest[open..close]
        .lines()
        .map(|l| strip_comment(l).trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The line without a trailing shell comment (` #` outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || line[..i].ends_with(' ')) => return &line[..i],
            _ => {}
        }
    }
    line
}

/// What each five-minute line must print (a distinctive part of the command → expected
/// substrings of its output). Every line of the block must have an entry.
fn expectations(line: &str) -> (&'static [&'static str], &'static [i32]) {
    if line.starts_with("mosquitto_pub") {
        (&[], &[0])
    } else if line.contains("/consumers/readers -H") {
        (&[r#""instance_id":"r1""#], &[0])
    } else if line.contains("/subscription") {
        (&[], &[0])
    } else if line.contains("/records") {
        (&[r#""value":{"temp":21.5}"#, "devices/d1/telemetry"], &[0])
    } else if line.contains("/events") {
        // curl --max-time ends the stream: exit 28.
        (&[r#"data: {"temp":21.5}"#, "id: 0:"], &[28])
    } else if line.contains("proton") {
        (&["x-opt-kafka-topic", "21.5"], &[0])
    } else if line.contains("confluent_kafka") {
        (
            &["devices/d1/telemetry", "21.5", "barnabas.mqtt.topic"],
            &[0],
        )
    } else {
        panic!("README line without an expectation in tests/readme.rs: {line}")
    }
}

/// `PATH` for a line: the proton line needs Debian's python3 (python3-qpid-proton), the
/// confluent-kafka line the test venv's (README: `pip install confluent-kafka`).
fn path_for(line: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    if line.contains("proton") {
        let system = common::system_python();
        let dir = system.parent().unwrap().display().to_string();
        format!("{dir}:{path}")
    } else if line.contains("confluent_kafka") {
        let venv = common::python();
        let dir = venv.parent().unwrap().display().to_string();
        format!("{dir}:{path}")
    } else {
        path
    }
}

struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Runs `command` through `sh` in its own process group, stderr collected.
    fn spawn(command: &str) -> Process {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("sh");
        // A newcomer's shell: none of the variables cargo and nextest set for a test (they
        // would also make cargo rebuild the release profile that scripts/test built).
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let test_env = (key.starts_with("CARGO") && key != "CARGO_HOME")
                || key.starts_with("NEXTEST")
                || key.starts_with("__NEXTEST")
                || key.starts_with("RUST_")
                || key == "LD_LIBRARY_PATH";
            if test_env && key != "CARGO_TARGET_DIR" {
                cmd.env_remove(&*key);
            }
        }
        let mut child = cmd
            .args(["-c", &format!("exec {command}")])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("sh");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[readme] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Process { child, lines }
    }

    fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_for_line(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().iter().any(|l| l.contains(needle)) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "exited ({status}) before {needle:?}:\n{}",
                    self.log().join("\n")
                );
            }
            assert!(Instant::now() < deadline, "no {needle:?} within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to the whole group, as a terminal's stop would reach it.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + STOP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within {STOP:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Runs one README line in `sh`, bounded; returns (exit code, stdout + stderr).
fn run_line(line: &str) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["60", "sh", "-c", line])
        .current_dir(workspace_root())
        .env("PATH", path_for(line))
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let first = code_block(&readme, "");
    assert_eq!(
        first,
        ["cargo run --release", "./scripts/test"],
        "README's two commands changed: update this test"
    );
    let five = code_block(&readme, "## First five minutes");
    assert!(five.len() >= 5, "{five:?}");
    for line in &five {
        expectations(line); // every line is checked, none skipped
    }

    let mut gateway = Process::spawn(&first[0]);
    gateway.wait_for_line("barnabas ready", START);
    let (code, status) = run_line("curl -s -o /dev/null -w '%{http_code}' localhost:8080/ready");
    assert_eq!(
        (code, status.as_str()),
        (0, "200"),
        "curl localhost:8080/ready"
    );

    for line in &five {
        let (want, codes) = expectations(line);
        let (code, out) = run_line(line);
        assert!(codes.contains(&code), "exit {code} from {line}\n{out}");
        for w in want {
            assert!(out.contains(w), "{line}\nprinted:\n{out}\nwithout {w:?}");
        }
    }

    let status = gateway.terminate();
    let log = gateway.log();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    let loud = common::loud_lines(&log);
    assert!(loud.is_empty(), "the stop was not quiet:\n{loud:#?}");
}

#[test]
fn comments_are_stripped_outside_quotes_only() {
    assert_eq!(strip_comment("cargo run   # build"), "cargo run   ");
    assert_eq!(strip_comment("echo '# not' # yes"), "echo '# not' ");
    assert_eq!(strip_comment(r#"curl "a#b""#), r#"curl "a#b""#);
}

//! docs/claims.md maps every promise of README.md and docs/*.md to the tests that prove it
//! (issue 22). This keeps the map honest: every test it names exists as a function in the
//! file it names, and every row has a verdict.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;

/// `(file, function)` of every `` `path::name` `` reference in a row's test column.
fn references(cell: &str) -> Vec<(String, String)> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|r| r.rsplit_once("::"))
        .map(|(file, name)| (file.to_owned(), name.to_owned()))
        .collect()
}

/// Whether `source` defines a function `name`.
fn defines(source: &str, name: &str) -> bool {
    source.lines().any(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix("pub ").unwrap_or(l);
        let l = l.strip_prefix("async ").unwrap_or(l);
        l.strip_prefix("fn ")
            .and_then(|rest| rest.strip_prefix(name))
            .is_some_and(|rest| rest.starts_with('(') || rest.starts_with('<'))
    })
}

#[test]
fn every_test_docs_claims_names_exists() {
    let root = common::workspace_root();
    let claims = std::fs::read_to_string(root.join("docs/claims.md")).unwrap();
    let mut sources: HashMap<String, String> = HashMap::new();
    let (mut rows, mut missing, mut bad_verdicts) = (0, Vec::new(), Vec::new());
    let mut counts = [0usize; 3]; // proves, weak, none
    for line in claims.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 4 || cells[0] == "promise" || cells[0].starts_with("---") {
            continue;
        }
        rows += 1;
        let verdict = cells[3];
        match verdict {
            "proves" => counts[0] += 1,
            "none" => counts[2] += 1,
            v if v.starts_with("weak") => counts[1] += 1,
            _ => bad_verdicts.push(line.to_owned()),
        }
        for (file, name) in references(cells[2]) {
            let source = sources
                .entry(file.clone())
                .or_insert_with(|| std::fs::read_to_string(root.join(&file)).unwrap_or_default());
            if !defines(source, &name) {
                missing.push(format!("{file}::{name}"));
            }
        }
    }
    assert!(rows > 20, "docs/claims.md lists only {rows} promises");
    assert!(
        missing.is_empty(),
        "docs/claims.md names tests that do not exist: {missing:#?}"
    );
    assert!(
        bad_verdicts.is_empty(),
        "rows without a verdict: {bad_verdicts:#?}"
    );
    let summary = format!(
        "- promises: {rows}\n- proved: {}\n- weak: {}\n- none: {}\n",
        counts[0], counts[1], counts[2]
    );
    assert!(
        claims.contains(&summary),
        "docs/claims.md's Summary is out of date (run scripts/claims-summary); the rows say:\n{summary}"
    );
}

#[test]
fn references_and_definitions_are_read_as_written() {
    assert_eq!(
        references("`tests/mqtt.rs::a_b`<br>`crates/x/src/y.rs::c`"),
        [
            ("tests/mqtt.rs".to_owned(), "a_b".to_owned()),
            ("crates/x/src/y.rs".to_owned(), "c".to_owned())
        ]
    );
    assert!(defines("async fn a_b() {", "a_b"));
    assert!(defines("    pub fn c<T>(", "c"));
    assert!(!defines("fn a_bc() {", "a_b"));
}

/// README.md §Testing and docs/reliability.md §Fuzzing: "`./scripts/test` … runs nextest then
/// every fuzz target; CI runs exactly that", and "CI runs every fuzz target for 20 s after the
/// suite; a crash fails it". That `.ci/run` runs scripts/test, which starts `./scripts/fuzz`
/// with 20 s after both nextest runs and keeps its status, is run by
/// [`ci_runs_scripts_test_which_installs_what_is_missing_then_tests_in_order`]; here
/// scripts/fuzz itself is run, in a copy of its directory layout, with a stand-in `cargo` first
/// on `PATH` that lists two targets and makes one of them crash: both are run for the seconds
/// given, and the script fails; with no crash it succeeds.
///
/// Broken to: the stand-in crashing no target is the check seen the other way (exit 0); a
/// scripts/fuzz that ignored a failing target would exit 0 with the crash too, and one that ran
/// a fixed list would miss `beta`.
#[test]
fn ci_runs_scripts_test_which_fuzzes_every_target_after_the_suite_and_fails_on_a_crash() {
    use std::os::unix::fs::PermissionsExt;

    let root = common::workspace_root();

    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("scripts")).unwrap();
    std::fs::create_dir_all(tree.path().join("fuzz")).unwrap();
    std::fs::copy(root.join("scripts/fuzz"), tree.path().join("scripts/fuzz")).unwrap();
    let bin = tree.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let cargo = bin.join("cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\n\
         echo \"$*\" >> \"$CARGO_LOG\"\n\
         case \"$1 $2\" in\n\
           \"fuzz --version\") echo cargo-fuzz 0.12.0 ;;\n\
           \"fuzz list\") printf 'alpha\\nbeta\\n' ;;\n\
           \"fuzz run\") if [ \"$3\" = \"$CRASH\" ]; then echo '==1== ERROR: libFuzzer: deadly signal'; exit 77; fi ;;\n\
         esac\n\
         exit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for (crash, want_ok) in [("beta", false), ("none", true)] {
        let log = tree.path().join(format!("cargo-{crash}.log"));
        let out = std::process::Command::new("bash")
            .arg(tree.path().join("scripts/fuzz"))
            .arg("20")
            .env("PATH", &path)
            .env("CARGO_LOG", &log)
            .env("CRASH", crash)
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            out.status.success(),
            want_ok,
            "scripts/fuzz with {crash} crashing: {}\ncargo was called: {calls}",
            common::text(&out)
        );
        for target in ["alpha", "beta"] {
            assert!(
                calls.contains(&format!("fuzz run {target} -- -max_total_time=20 ")),
                "{target} fuzzed for 20 s: {calls}"
            );
        }
    }
}

/// README.md §Testing: "`./scripts/test` installs the prerequisites and runs nextest then every
/// fuzz target; CI runs exactly that". `.ci/run` itself is run, in a copy of the repository's
/// layout (`.ci/run`, `scripts/test`, and stand-ins for `scripts/fuzz`, `scripts/kafka/run`,
/// `scripts/java-clients/run` and `.venv/bin/python`), with `PATH` holding only stand-ins for
/// the commands it installs or runs (`dpkg-query`, `apt-get`, `sudo`, `cargo`, `javac`, `mvn`)
/// and the few shell tools it uses; every stand-in logs its call. Twice:
///
/// - a fresh machine (mosquitto and a JDK missing, no Python clients, no cargo-nextest) whose
///   first nextest run fails: the missing Debian packages are installed (the JDK and Maven
///   among them), the Python clients and cargo-nextest too, then — in this order — the
///   release build, the suite, the Apache Kafka run (`BARNABAS_TEST_KAFKA=apache`, profile
///   `apache`) and fuzzing for 20 s; the exit status is the suite's failure;
/// - a machine with everything, where only fuzzing fails: nothing is installed, the same steps
///   run, and the exit status is fuzzing's failure.
///
/// Broken to: scripts/test with its fuzz step moved before the suite, or with
/// `((status)) || status=$fuzz_status` removed, or with the Debian step skipped — each seen
/// failing this test.
#[test]
fn ci_runs_scripts_test_which_installs_what_is_missing_then_tests_in_order() {
    use std::os::unix::fs::PermissionsExt;

    let root = common::workspace_root();
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path();
    let exe = |path: &std::path::Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    for file in [".ci/run", "scripts/test"] {
        exe(
            &t.join(file),
            &std::fs::read_to_string(root.join(file)).unwrap(),
        );
    }
    // Every stand-in logs `name args [kafka=…]` and answers as the machine it plays has it.
    let stub = r#"#!/bin/sh
name=NAME
echo "$name $* [kafka=${BARNABAS_TEST_KAFKA:-}]" >> "$STUB_LOG"
for last; do :; done
case "$name $1 $2" in
  "dpkg-query "*) case " $MISSING " in *" $last "*) exit 1 ;; esac; printf 'install ok installed' ;;
  "cargo nextest --version") [ "$HAVE_NEXTEST" = 1 ] || exit 101 ;;
  "cargo nextest run") if [ -n "${BARNABAS_TEST_KAFKA:-}" ]; then exit "$APACHE_EXIT"; else exit "$SUITE_EXIT"; fi ;;
  "python -c"*) exit "$PY_IMPORT" ;;
  "fuzz "*) exit "$FUZZ_EXIT" ;;
  "sudo "*) shift; exec "$@" ;;
esac
exit 0
"#;
    let bin = t.join("bin");
    for name in ["dpkg-query", "apt-get", "sudo", "cargo"] {
        exe(&bin.join(name), &stub.replace("NAME", name));
    }
    // A JDK and Maven, on the PATH of the second machine only.
    let jdk = t.join("jdk");
    for name in ["javac", "mvn"] {
        exe(&jdk.join(name), &stub.replace("NAME", name));
    }
    for (path, name) in [
        ("scripts/fuzz", "fuzz"),
        ("scripts/kafka/run", "kafka-run"),
        ("scripts/java-clients/run", "java-clients-run"),
        (".venv/bin/python", "python"),
        (".venv/bin/pip", "pip"),
    ] {
        exe(&t.join(path), &stub.replace("NAME", name));
    }
    for tool in [
        "bash", "sh", "dirname", "id", "mkdir", "tee", "grep", "sort",
    ] {
        let real = which(tool);
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }

    let run = |path: &std::ffi::OsStr, machine: &[(&str, &str)]| {
        let log = t.join("calls.log");
        let _ = std::fs::remove_file(&log);
        let out = std::process::Command::new(bin.join("bash"))
            .arg(t.join(".ci/run"))
            .env_clear()
            .env("PATH", path)
            .env("HOME", t)
            .env("STUB_LOG", &log)
            .envs(machine.iter().copied())
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        (out.status.code(), calls)
    };
    // The order of the steps: the index in `calls` of each needle, which must rise.
    let in_order = |calls: &str, steps: &[&str]| {
        let lines: Vec<&str> = calls.lines().collect();
        let mut from = 0;
        for step in steps {
            let at = lines[from..]
                .iter()
                .position(|l| l.starts_with(step))
                .unwrap_or_else(|| panic!("{step:?} not called after step {from}:\n{calls}"));
            from += at + 1;
        }
    };
    let steps = [
        "cargo build --release ",
        "cargo nextest run --workspace --no-fail-fast [kafka=]",
        "cargo nextest run --workspace --no-fail-fast --profile apache [kafka=apache]",
        "fuzz 20 ",
    ];

    let (status, calls) = run(
        bin.as_os_str(),
        &[
            ("MISSING", "mosquitto"),
            ("HAVE_NEXTEST", "0"),
            ("PY_IMPORT", "1"),
            ("SUITE_EXIT", "100"),
            ("APACHE_EXIT", "0"),
            ("FUZZ_EXIT", "0"),
        ],
    );
    assert_eq!(
        status,
        Some(100),
        "the suite's failure is the exit status:\n{calls}"
    );
    in_order(
        &calls,
        &[
            "dpkg-query -W -f=${Status} gcc ",
            "apt-get update",
            "apt-get install -y -qq --no-install-recommends mosquitto openjdk-17-jdk-headless maven ",
            "pip install -q --disable-pip-version-check -r ",
            "cargo install --locked cargo-nextest",
            "kafka-run --fetch",
            "java-clients-run --fetch",
        ],
    );
    in_order(&calls, &steps);

    let with_jdk = std::env::join_paths([&bin, &jdk]).unwrap();
    let (status, calls) = run(
        &with_jdk,
        &[
            ("MISSING", ""),
            ("HAVE_NEXTEST", "1"),
            ("PY_IMPORT", "0"),
            ("SUITE_EXIT", "0"),
            ("APACHE_EXIT", "0"),
            ("FUZZ_EXIT", "77"),
        ],
    );
    assert_eq!(
        status,
        Some(77),
        "fuzzing's failure is the exit status:\n{calls}"
    );
    for install in ["apt-get", "pip ", "cargo install"] {
        assert!(
            !calls.lines().any(|l| l.starts_with(install)),
            "{install} called on a machine that has everything:\n{calls}"
        );
    }
    in_order(&calls, &steps);
}

/// The absolute path of a tool on this machine's `PATH`.
fn which(tool: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
}

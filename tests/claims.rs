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
/// suite; a crash fails it". CI's entry point (`.ci/run`) runs nothing but `./scripts/test`;
/// scripts/test starts `./scripts/fuzz` with 20 s (unless `BARNABAS_FUZZ_SECONDS`) after both
/// nextest runs, and folds its exit status into its own. scripts/fuzz itself is run, in a copy
/// of its directory layout, with a stand-in `cargo` first on `PATH` that lists two targets and
/// makes one of them crash: both are run for the seconds given, and the script fails; with no
/// crash it succeeds.
///
/// Broken to: the stand-in crashing no target is the check seen the other way (exit 0); a
/// scripts/fuzz that ignored a failing target would exit 0 with the crash too, and one that ran
/// a fixed list would miss `beta`. scripts/test and .ci/run are read, not run (scripts/test
/// installs packages): reordering the fuzz step before the suite, or dropping its status,
/// fails the text checks.
#[test]
fn ci_runs_scripts_test_which_fuzzes_every_target_after_the_suite_and_fails_on_a_crash() {
    use std::os::unix::fs::PermissionsExt;

    let root = common::workspace_root();
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();

    let ci = read(".ci/run");
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        commands,
        [
            "set -euo pipefail",
            "cd \"$(dirname \"$0\")/..\"",
            "exec ./scripts/test"
        ],
        ".ci/run runs exactly scripts/test"
    );

    let test = read("scripts/test");
    let at = |needle: &str| {
        test.find(needle)
            .unwrap_or_else(|| panic!("scripts/test lacks {needle:?}"))
    };
    let suite = at("cargo nextest run --workspace --no-fail-fast 2>&1 | tee");
    let apache = at("BARNABAS_TEST_KAFKA=apache cargo nextest run --workspace");
    let fuzz = at(r#"./scripts/fuzz "${BARNABAS_FUZZ_SECONDS:-20}" || fuzz_status=$?"#);
    assert!(
        suite < fuzz && apache < fuzz,
        "fuzzing comes after the suite"
    );
    let verdict = at("((status)) || status=$fuzz_status");
    assert!(fuzz < verdict);
    assert!(test.trim_end().ends_with(r#"exit "$status""#));

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

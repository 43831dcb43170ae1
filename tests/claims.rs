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

//! Issue 15: the configuration reference in `docs/` says exactly what the
//! config types accept.
//!
//! Every table that documents keys is preceded by a line
//! `<!-- keys: SECTION -->` and has the key, in backticks, in its first
//! column. The sections and their keys are read from the config types
//! themselves (serde's field lists, through the connector registry for
//! sources and sinks): a key that exists but is undocumented, a documented
//! key that does not exist, a section documented twice or not at all, each
//! fails this test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use weir_connector::registry::keys_of;
use weir_tests::repo;

/// Every documented section: its keys, and where its table is.
fn documented(docs: &Path) -> (BTreeMap<String, (BTreeSet<String>, String)>, Vec<String>) {
    let mut files = Vec::new();
    let mut stack = vec![docs.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut sections = BTreeMap::new();
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = line.trim().strip_prefix("<!-- keys: ").and_then(|r| r.strip_suffix(" -->")) else { continue };
            let at = format!("{}:{}", file.strip_prefix(repo()).unwrap_or(&file).display(), i + 1);
            let mut keys = BTreeSet::new();
            // The table: a header row, a separator row, then one row per key.
            for row in lines[i + 1..].iter().take_while(|l| l.trim_start().starts_with('|')).skip(2) {
                let first = row.trim().trim_start_matches('|').split('|').next().unwrap_or("").trim();
                match first.strip_prefix('`').and_then(|k| k.split('`').next()) {
                    Some(k) if !k.is_empty() => {
                        if !keys.insert(k.to_owned()) {
                            problems.push(format!("{at}: `{k}` is listed twice in [{name}]"));
                        }
                    }
                    _ => problems.push(format!("{at}: a row of [{name}] has no key in backticks: {row}")),
                }
            }
            if keys.is_empty() {
                problems.push(format!("{at}: the keys comment of [{name}] is not followed by a table"));
            }
            if let Some((_, first)) = sections.insert(name.to_owned(), (keys, at.clone())) {
                problems.push(format!("{at}: [{name}] is documented again (first at {first})"));
            }
        }
    }
    (sections, problems)
}

/// Every section of a pipeline file and of `weir serve`'s config, from the types.
fn in_code() -> BTreeMap<String, BTreeSet<String>> {
    let mut all: BTreeMap<String, BTreeSet<String>> = weir_pipeline::config_sections(&weir_connectors::builtin())
        .into_iter()
        .map(|s| (s.name, s.keys.into_iter().map(str::to_owned).collect()))
        .collect();
    let serve = [
        ("serve", keys_of::<weir_api::ServeConfig>()),
        ("serve.api", keys_of::<weir_api::config::ApiConfig>()),
        ("serve.metrics", keys_of::<weir_api::config::MetricsConfig>()),
        ("serve.restart", keys_of::<weir_api::config::RestartConfig>()),
    ];
    for (name, keys) in serve {
        all.insert(name.to_owned(), keys.into_iter().map(str::to_owned).collect());
    }
    all
}

/// What differs between the docs and the code, one sentence per difference.
fn differences(docs: &Path) -> Vec<String> {
    let (documented, mut problems) = documented(docs);
    for (name, keys) in in_code() {
        match documented.get(&name) {
            // A section without keys (the discard sink) needs no table.
            None if keys.is_empty() => {}
            None => problems.push(format!("[{name}] is not documented: add a `<!-- keys: {name} -->` table with {keys:?}")),
            Some((doc, at)) => {
                for k in keys.difference(doc) {
                    problems.push(format!("{at}: [{name}] accepts `{k}`, which the table does not document"));
                }
                for k in doc.difference(&keys) {
                    problems.push(format!("{at}: [{name}] documents `{k}`, which the config does not accept"));
                }
            }
        }
    }
    let code = in_code();
    for (name, (_, at)) in &documented {
        if !code.contains_key(name) {
            problems.push(format!("{at}: [{name}] is not a section of any config"));
        }
    }
    problems
}

#[test]
fn the_configuration_reference_matches_the_config_types() {
    let problems = differences(&repo().join("docs"));
    assert!(problems.is_empty(), "docs/ and the config types disagree:\n  {}", problems.join("\n  "));
}

/// The check itself: a copy of docs/ with one key removed and one invented
/// must fail with both named.
#[test]
fn a_missing_or_invented_key_is_caught() {
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("docs");
    copy_dir(&repo().join("docs"), &copy);
    let reference = copy.join("configuration.md");
    let text = std::fs::read_to_string(&reference).unwrap();
    let row = text.lines().find(|l| l.starts_with("| `buffer-size`")).expect("the network table documents buffer-size").to_owned();
    let text = text.replace(&row, &row.replace("`buffer-size`", "`buffer-sise`"));
    std::fs::write(&reference, text).unwrap();
    let problems = differences(&copy).join("\n");
    assert!(problems.contains("[network] accepts `buffer-size`, which the table does not document"), "{problems}");
    assert!(problems.contains("[network] documents `buffer-sise`, which the config does not accept"), "{problems}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target: PathBuf = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

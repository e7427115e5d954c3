//! Pipelines run end to end by the real binary with real Wasm plugins.

use std::collections::BTreeMap;
use std::time::Duration;
use weir_tests::{json_lines, Scratch};

const T: Duration = Duration::from_secs(120);

fn user(n: u64) -> String {
    format!("user-{:04}", n * 7919 % 10000)
}

/// Issue 2: generator -> json-filter -> keyed running-sum -> file sink, the
/// output equals what the job means, record for record.
#[test]
fn events_filter_and_keyed_running_sum_are_exact() {
    let s = Scratch::new();
    let p = s.pipeline(
        "p.toml",
        r#"
        [sources.events]
        type = "generator"
        count = 20000
        [[operators]]
        name = "parse"
        plugin = "json-filter"
        config = { filter = "amount >= 90", project = ["user", "amount"], key = "user" }
        [[operators]]
        name = "sum"
        plugin = "running-sum"
        partition = "hash"
        [sinks.out]
        type = "file"
        path = "out.txt"
        "#,
    );
    s.weir(&["run", "--quiet", p.to_str().unwrap()], T).expect_code(0).expect_stderr(&["20000 records read", "2000 written"]);
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected = String::new();
    for n in 0..20000u64 {
        if n % 100 >= 90 {
            let sum = sums.entry(user(n)).or_default();
            *sum += n % 100;
            expected.push_str(&format!("{{\"key\":\"{}\",\"sum\":{}}}\n", user(n), sum));
        }
    }
    assert_eq!(std::fs::read_to_string(s.path("out.txt")).unwrap(), expected);
}

fn final_sums(s: &Scratch, parallelism: u32) -> BTreeMap<String, u64> {
    let p = s.pipeline(
        &format!("p{parallelism}.toml"),
        &format!(
            r#"
            [sources.events]
            type = "generator"
            count = 30000
            [[operators]]
            name = "parse"
            plugin = "json-filter"
            parallelism = {parallelism}
            config = {{ filter = "amount >= 50", project = ["user", "amount"], key = "user" }}
            [[operators]]
            name = "sum"
            plugin = "running-sum"
            partition = "hash"
            parallelism = {parallelism}
            [sinks.out]
            type = "file"
            parallelism = 1
            path = "out{parallelism}.jsonl"
            "#
        ),
    );
    s.weir(&["run", "--quiet", p.to_str().unwrap()], T).expect_code(0);
    let mut sums = BTreeMap::new();
    for v in json_lines(&std::fs::read_to_string(s.path(&format!("out{parallelism}.jsonl"))).unwrap()) {
        let key = v["key"].as_str().unwrap().to_owned();
        let sum = v["sum"].as_u64().unwrap();
        let e = sums.entry(key).or_insert(0);
        *e = (*e).max(sum);
    }
    sums
}

/// Hash partitioning sends each key to one subtask: the final sums at
/// parallelism 1, 2 and 4 are the same, and right.
#[test]
fn keyed_sums_are_the_same_at_every_parallelism() {
    let s = Scratch::new();
    let one = final_sums(&s, 1);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for n in 0..30000u64 {
        if n % 100 >= 50 {
            *expected.entry(user(n)).or_default() += n % 100;
        }
    }
    assert_eq!(one, expected);
    assert_eq!(final_sums(&s, 2), expected);
    assert_eq!(final_sums(&s, 4), expected);
}

/// A flat-map from a file source: every word of every line comes out once.
#[test]
fn split_words_from_a_file_to_stdout() {
    let s = Scratch::new();
    s.write("in.txt", "the quick brown fox\r\njumps over the lazy dog\n\nThe End");
    let p = s.pipeline(
        "p.toml",
        r#"
        [sources.lines]
        type = "file"
        path = "in.txt"
        [[operators]]
        name = "words"
        plugin = "split-words"
        config = { lowercase = true }
        [sinks.out]
        type = "stdout"
        "#,
    );
    let run = s.weir(&["run", "--quiet", p.to_str().unwrap()], T);
    run.expect_code(0);
    let words: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(words, ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "the", "end"]);
}

/// Records a plugin rejects are skipped with `on-error = "skip"` and counted;
/// nothing else is lost.
#[test]
fn skip_policy_sets_rejected_records_aside_and_keeps_the_rest() {
    let s = Scratch::new();
    let p = s.pipeline(
        "p.toml",
        r#"
        [sources.events]
        type = "generator"
        count = 1000
        [[operators]]
        name = "picky"
        plugin = "fixture-reject"
        on-error = "skip"
        config = { every = 100 }
        [sinks.out]
        type = "file"
        path = "out.txt"
        "#,
    );
    let run = s.weir(&["run", "--quiet", p.to_str().unwrap()], T);
    run.expect_code(0);
    let out = std::fs::read_to_string(s.path("out.txt")).unwrap();
    let ids: Vec<u64> = json_lines(&out).iter().map(|v| v["id"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..1000).filter(|n| n % 100 != 0).collect();
    assert_eq!(ids, expected);
    assert!(run.stderr.lines().any(|l| l.contains("picky") && l.contains("10")), "summary shows 10 skipped:\n{}", run.stderr);
}

/// Event-time windows: the generator's watermarks (and the final one at the
/// end of input) fire window-count's timers; every count is exact.
#[test]
fn event_time_windows_fire_from_watermarks_and_count_exactly() {
    let s = Scratch::new();
    let p = s.pipeline(
        "p.toml",
        r#"
        [sources.events]
        type = "generator"
        count = 30000
        rate = 10000
        [[operators]]
        name = "parse"
        plugin = "json-filter"
        config = { filter = "amount < 3", key = "user" }
        [[operators]]
        name = "windows"
        plugin = "window-count"
        partition = "hash"
        parallelism = 2
        config = { size-ms = 5000 }
        [sinks.out]
        type = "file"
        parallelism = 1
        path = "out.jsonl"
        "#,
    );
    s.weir(&["run", "--quiet", "--metrics-address", "off", p.to_str().unwrap()], T).expect_code(0);
    let mut expected: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for n in 0..30000u64 {
        if n % 100 < 3 {
            let ts = 1_700_000_000_000i64 + n as i64;
            let end = ts.div_euclid(5000) * 5000 + 5000;
            *expected.entry((user(n), end)).or_default() += 1;
        }
    }
    let mut got: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for v in json_lines(&std::fs::read_to_string(s.path("out.jsonl")).unwrap()) {
        let k = (v["key"].as_str().unwrap().to_owned(), v["window_end"].as_i64().unwrap());
        assert!(got.insert(k.clone(), v["count"].as_u64().unwrap()).is_none(), "window {k:?} emitted twice");
    }
    assert_eq!(got, expected);
}

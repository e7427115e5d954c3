//! Operators in other languages: the JavaScript example of the README
//! (sdk/js/errors-only.js), built into a component with componentize-js and
//! run by weir like any plugin.

use std::process::Command;
use std::time::Duration;
use weir_tests::{repo, run_with_timeout, Scratch};

#[test]
fn a_javascript_operator_built_with_componentize_js_runs() {
    let js = repo().join("sdk/js");
    let tool = js.join("node_modules/.bin/componentize-js");
    assert!(tool.exists(), "{} is missing: run `bash tests/run`, which installs it with `npm install` in sdk/js", tool.display());
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    let out = s.path("plugins/errors-only.wasm");
    let build = run_with_timeout(
        Command::new(&tool)
            .args(["errors-only.js", "--wit", "../../wit", "--world-name", "operator", "-d", "stdio", "random", "clocks", "http", "fetch-event", "-o"])
            .arg(&out)
            .current_dir(&js),
        Duration::from_secs(300),
    );
    build.expect_code(0);
    assert_eq!(s.run_log_filter("errors-only", "{}"), "disk error on sda\nnetwork error\n");
}

#!/usr/bin/env node
// weir-js build MODULE -o OUT.wasm [--world operator|async-operator|source|sink]
//
// Builds a weir plugin component from MODULE, whose default export is an
// Operator class (or what `filter` / `map` return), with componentize-js;
// an AsyncOperator class builds into the `async-operator` world, a Source
// into `source` and a Sink into `sink` (the build imports MODULE under Node
// to see which, unless --world says).
//
// componentize-js runs one ES module and the modules it imports by relative
// path; it does not resolve npm packages. So the build copies MODULE and the
// modules it imports relatively into a build directory, points its
// `weir-sdk` imports at a copy of this SDK's sources, and adds the entry
// that exports the `handler` interface. Line numbers are kept, so an error
// thrown in `process` names the author's file and line.
import { componentize } from "@bytecodealliance/componentize-js";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const sdkSrc = resolve(here, "../src");
// Per world, the entry's lines after `import Operator from "./app/...";`.
const GLUE = {
  operator: `import { exportOperator } from "./weir-sdk/component.js";\nexport const handler = exportOperator(Operator);\n`,
  "async-operator": `import { exportAsyncOperator } from "./weir-sdk/async-component.js";\nexport const asyncHandler = exportAsyncOperator(Operator);\n`,
  source: `import { exportSource } from "./weir-sdk/connector-component.js";\nexport const sourceHandler = exportSource(Operator);\n`,
  sink: `import { exportSink } from "./weir-sdk/connector-component.js";\nexport const sinkHandler = exportSink(Operator);\n`,
};
const IMPORT = /((?:import|export)\s[^'";]*?from\s*|import\s*\(?\s*)(['"])([^'"]+)\2/g;

function usage(message) {
  if (message) console.error(`weir-js: ${message}`);
  console.error(`usage: weir-js build MODULE -o OUT.wasm [--wit DIR] [--world ${Object.keys(GLUE).join("|")}]`);
  process.exit(2);
}

function projectRoot(file) {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir;
    if (dirname(dir) === dir) return dirname(file);
  }
}

/** Copies `file` and what it imports relatively into `out/app`, rewriting `weir-sdk` imports. */
function copyModules(entry, root, out) {
  const seen = new Set();
  const todo = [entry];
  while (todo.length) {
    const file = todo.pop();
    if (seen.has(file)) continue;
    seen.add(file);
    const rel = relative(root, file);
    if (rel.startsWith("..")) throw new Error(`${file} is outside the project ${root}; keep the operator's modules inside it`);
    const dest = join(out, "app", rel);
    mkdirSync(dirname(dest), { recursive: true });
    const source = readFileSync(file, "utf8").replace(IMPORT, (whole, head, quote, spec) => {
      if (spec.startsWith("./") || spec.startsWith("../")) {
        let target = resolve(dirname(file), spec);
        if (!existsSync(target) && existsSync(target + ".js")) {
          target += ".js";
          spec += ".js";
        }
        todo.push(target);
        return head + quote + spec + quote;
      }
      if (spec === "weir-sdk") {
        let to = relative(dirname(dest), join(out, "weir-sdk", "index.js")).split(sep).join("/");
        if (!to.startsWith(".")) to = "./" + to;
        return head + quote + to + quote;
      }
      if (spec.startsWith("weir:") || spec.startsWith("wasi:")) return whole;
      throw new Error(`${rel} imports "${spec}": a component can import weir-sdk and the project's own modules (by relative path) only`);
    });
    writeFileSync(dest, source);
  }
}

async function build(args) {
  let module, output, world, wit = join(here, "../wit");
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "-o" || args[i] === "--output") output = args[++i];
    else if (args[i] === "--wit") wit = args[++i];
    else if (args[i] === "--world") world = args[++i];
    else if (!module) module = args[i];
    else usage(`unexpected argument ${args[i]}`);
  }
  if (!module || !output) usage();
  const entry = resolve(module);
  if (!existsSync(entry)) usage(`${module} does not exist`);
  if (world === undefined) world = await worldOf(entry);
  if (!(world in GLUE)) usage(`--world is one of ${Object.keys(GLUE).join(", ")}, not ${world}`);
  const glue = GLUE[world];
  const out = mkdtempSync(join(tmpdir(), "weir-js-build-"));
  const started = Date.now();
  try {
    mkdirSync(join(out, "weir-sdk"));
    for (const f of readdirSync(sdkSrc)) if (f.endsWith(".js") && f !== "testing.js") copyFileSync(join(sdkSrc, f), join(out, "weir-sdk", f));
    const root = projectRoot(entry);
    copyModules(entry, root, out);
    const app = "./app/" + relative(root, entry).split(sep).join("/");
    writeFileSync(
      join(out, "entry.js"),
      `import Operator from ${JSON.stringify(app)};\n${glue}`,
    );
    const cwd = process.cwd();
    process.chdir(out);
    let component;
    try {
      ({ component } = await componentize({
        sourcePath: join(out, "entry.js"),
        witPath: resolve(cwd, wit),
        worldName: world,
        disableFeatures: ["http", "fetch-event"],
      }));
    } finally {
      process.chdir(cwd);
    }
    writeFileSync(resolve(output), component);
    console.error(`weir-js: built ${output} (${(component.length / 1e6).toFixed(1)} MB) in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** The world of the module's default export: its class's `weirWorld` (AsyncOperator, Source and Sink set it). */
async function worldOf(entry) {
  try {
    const m = await import(pathToFileURL(entry).href);
    return (m.default && m.default.weirWorld) || "operator";
  } catch (e) {
    console.error(`weir-js: importing ${entry} under Node to see its world failed (${e.message}); building the operator world (pass --world to choose)`);
    return "operator";
  }
}

const [command, ...rest] = process.argv.slice(2);
if (command !== "build") usage(command ? `unknown command ${command}` : undefined);
build(rest).catch((e) => {
  console.error(`weir-js: ${e.message}`);
  process.exit(1);
});

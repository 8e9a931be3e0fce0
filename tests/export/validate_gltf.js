// Validate glTF files with Khronos' validator (npm gltf-validator): prints one JSON summary per file.
// Usage: node validate_gltf.js <node_modules dir> FILE.glb...
const path = require("path");
const fs = require("fs");
const validator = require(path.join(process.argv[2], "gltf-validator"));

(async () => {
  for (const file of process.argv.slice(3)) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)));
    const issues = report.issues;
    console.log(JSON.stringify({file, errors: issues.numErrors, warnings: issues.numWarnings,
      messages: issues.messages.filter(m => m.severity <= 1).map(m => `${m.code}: ${m.message} (${m.pointer || ""})`)}));
  }
})().catch(e => { console.error(e); process.exit(2); });

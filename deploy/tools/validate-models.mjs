// Validates rendered manifests with kubernetes-models (ajv JSON schemas: enums, quantity and
// other formats, required fields) plus the prometheus-operator and Traefik CRD models.
// Usage: node validate-models.mjs <node_modules dir> <rendered.yaml>...
// Fails on: a YAML parse error or warning, a kind no model package knows, a schema error.
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, ...files] = process.argv.slice(2);
if (!nodeModules || files.length === 0) {
  console.error("usage: node validate-models.mjs <node_modules> <file.yaml>...");
  process.exit(2);
}
const load = (rel) => import(pathToFileURL(path.join(nodeModules, rel)).href);
const { parseAllDocuments } = await load("yaml/dist/index.js");

// apiVersion -> module path (index.js of the group/version) inside node_modules.
function modulePath(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "") return `kubernetes-models/${version}/index.js`;
  if (group === "monitoring.coreos.com") return `@kubernetes-models/prometheus-operator/${group}/${version}/index.js`;
  if (group === "traefik.io") return `@kubernetes-models/traefik/${group}/${version}/index.js`;
  return `kubernetes-models/${group}/${version}/index.js`;
}

const cache = new Map();
async function modelFor(apiVersion, kind) {
  const p = modulePath(apiVersion);
  if (!cache.has(p)) {
    try {
      cache.set(p, await load(p));
    } catch {
      cache.set(p, null);
    }
  }
  const mod = cache.get(p);
  const Model = mod && mod[kind];
  return Model && Model.apiVersion === apiVersion && Model.kind === kind ? Model : null;
}

let failures = 0;
let checked = 0;
for (const file of files) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"), { uniqueKeys: true });
  for (const [i, doc] of docs.entries()) {
    const problems = [...doc.errors, ...doc.warnings];
    if (problems.length) {
      failures++;
      console.error(`FAIL ${file} document ${i}: YAML: ${problems.map((e) => e.message).join("; ")}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    // kustomize wraps long base64 values over several lines; the API server's decoder (Go's
    // encoding/base64) skips newlines, ajv's "byte" format does not: compare like the server.
    if (obj.kind === "Secret" && obj.data) {
      for (const k of Object.keys(obj.data)) obj.data[k] = String(obj.data[k]).replace(/\s+/g, "");
    }
    const id = `${obj.kind}/${obj.metadata?.namespace ?? ""}/${obj.metadata?.name}`;
    const Model = await modelFor(obj.apiVersion, obj.kind);
    if (!Model) {
      failures++;
      console.error(`FAIL ${file}: ${id}: no model for ${obj.apiVersion} ${obj.kind}`);
      continue;
    }
    try {
      new Model(obj).validate();
      checked++;
    } catch (e) {
      failures++;
      const details = (e.errors ?? []).map((x) => `${x.instancePath || "/"} ${x.message}`).join("; ");
      console.error(`FAIL ${file}: ${id}: ${e.message}${details ? ` (${details})` : ""}`);
    }
  }
}
console.log(`kubernetes-models: ${checked} objects valid, ${failures} failures`);

process.exit(failures ? 1 : 0);

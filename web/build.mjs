// Builds the web client into src/dmds/web/static/ (not committed: `make web` makes it):
// assets/app-HASH.js (src/main.js bundled with its npm dependencies) and assets/app-HASH.css, named by
// their content so that they can be cached for a year, and index.html, which names them and is
// revalidated on every load.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "dmds", "web", "static");
const hashed = (name, ext, data) => `${name}-${createHash("sha256").update(data).digest("hex").slice(0, 12)}.${ext}`;

const bundle = await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  format: "esm",
  target: ["chrome109", "firefox115", "safari16"],
  minify: true,
  sourcemap: false,
  write: false,
  legalComments: "none",
});
const js = bundle.outputFiles[0].contents;
const css = readFileSync(join(here, "src", "style.css"));
const assets = { "app.js": hashed("app", "js", js), "app.css": hashed("app", "css", css) };

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });
writeFileSync(join(out, "assets", assets["app.js"]), js);
writeFileSync(join(out, "assets", assets["app.css"]), css);
const page = readFileSync(join(here, "src", "index.html"), "utf8")
  .replace("app.js", `assets/${assets["app.js"]}`)
  .replace("app.css", `assets/${assets["app.css"]}`);
writeFileSync(join(out, "index.html"), page);
writeFileSync(join(out, "manifest.json"), JSON.stringify(assets, null, 2));
console.log(`web client built into ${out}: ${Object.values(assets).join(", ")}`);

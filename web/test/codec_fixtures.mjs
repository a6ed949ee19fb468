// Checks web/src/codec.js against the Python codec's fixtures (written by tests/web/test_codec.py):
// every client frame encodes to the Python bytes, every server frame decodes to the Python value.
// Usage: node test/codec_fixtures.mjs FIXTURES.json; prints what differs and exits 1 if anything does.
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { CLIENT_FRAMES, CodecError, ERROR, VERSION, decodeFrame, encodeFrame } from "../src/codec.js";

const revive = (_key, value) =>
  value !== null && typeof value === "object" && "$bytes" in value
    ? Uint8Array.from(Buffer.from(value.$bytes, "hex"))
    : value;
const hex = (bytes) => Buffer.from(bytes).toString("hex");

const fixtures = JSON.parse(readFileSync(process.argv[2], "utf8"), revive);
const problems = [];
for (const { frame, bytes } of fixtures.client) {
  const ours = hex(encodeFrame(frame));
  if (ours !== bytes) problems.push(`encode ${frame.t}: ${ours} != ${bytes}`);
}
for (const { bytes, frame } of fixtures.server) {
  const ours = decodeFrame(Uint8Array.from(Buffer.from(bytes, "hex")));
  if (!isDeepStrictEqual(ours, frame)) {
    problems.push(`decode ${frame.t}: ${JSON.stringify(ours)} != ${JSON.stringify(frame)}`);
  }
}
const missing = fixtures.client_tags.filter((tag) => !CLIENT_FRAMES.includes(tag));
const extra = CLIENT_FRAMES.filter((tag) => !fixtures.client_tags.includes(tag));
if (missing.length || extra.length) problems.push(`client frames: missing ${missing}, unknown ${extra}`);
for (const bad of fixtures.garbage) {
  try {
    decodeFrame(Uint8Array.from(Buffer.from(bad, "hex")));
    problems.push(`decode accepted garbage ${bad}`);
  } catch (error) {
    if (!(error instanceof CodecError)) problems.push(`garbage ${bad}: ${error}`);
  }
}
if (!isDeepStrictEqual(ERROR, fixtures.error_codes)) problems.push(`error codes: ${JSON.stringify(ERROR)}`);
if (VERSION !== fixtures.version) problems.push(`version ${VERSION} != ${fixtures.version}`);
console.log(`${fixtures.client.length} client and ${fixtures.server.length} server frames checked`);
for (const problem of problems) console.log(problem);
process.exit(problems.length ? 1 : 0);

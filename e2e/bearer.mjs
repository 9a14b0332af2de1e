// Preloaded (node --import) into a Node.js program that cannot be told to
// send a header, such as the MCP conformance runner: every HTTP request it
// makes to BEARER_ORIGIN (fetch and undici alike) carries
// "Authorization: Bearer " + the token in the file BEARER_TOKEN_FILE, as
// agentmesh's local endpoints require. Requests elsewhere are untouched.
import { readFileSync } from "node:fs";
import { Agent, setGlobalDispatcher } from "undici";

const origin = process.env.BEARER_ORIGIN;
const file = process.env.BEARER_TOKEN_FILE;
if (!origin || !file) {
  throw new Error("bearer.mjs: set BEARER_ORIGIN and BEARER_TOKEN_FILE");
}
const value = "Bearer " + readFileSync(file, "utf8").trim();

// withAuth returns headers (in any of undici's forms) with Authorization
// set to value, replacing one already there.
function withAuth(headers) {
  const out = [];
  const add = (k, v) => {
    if (String(k).toLowerCase() !== "authorization") out.push(String(k), v);
  };
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) {
      for (const [k, v] of headers) add(k, v);
    } else {
      for (let i = 0; i + 1 < headers.length; i += 2) add(headers[i], headers[i + 1]);
    }
  } else if (headers && typeof headers[Symbol.iterator] === "function") {
    for (const [k, v] of headers) add(k, v);
  } else if (headers) {
    for (const [k, v] of Object.entries(headers)) add(k, v);
  }
  out.push("authorization", value);
  return out;
}

setGlobalDispatcher(
  new Agent().compose((dispatch) => (opts, handler) => {
    if (new URL(opts.origin).origin === origin) {
      opts = { ...opts, headers: withAuth(opts.headers) };
    }
    return dispatch(opts, handler);
  }),
);

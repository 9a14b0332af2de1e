// client.mjs drives an MCP server with the official TypeScript SDK client,
// so that agentmesh's end-to-end tests (e2e_test.go) check the connector
// against a real third-party client rather than against our own Go code.
//
// Usage: node client.mjs [SPEC_JSON]   (or the spec on stdin)
//
// SPEC is one JSON object:
//
//   {
//     "transport": "stdio" | "http",
//     "command": "/path/to/agentmesh", "args": ["connect", "everything", "--state", "DIR"],  // stdio
//     "cwd": "/dir/to/run/it/in",                                                            // stdio, optional
//     "url": "http://127.0.0.1:PORT/mcp",                                                    // http
//     "headers": {"Authorization": "Bearer TOKEN"},           // http: sent with every request
//     "elicitation": "decline",   // optional: declare form elicitation and answer every
//                                 // elicitation/create with this action (accept, decline, cancel)
//     "steps": [
//       {"op": "listTools"},
//       {"op": "callTool", "name": "echo", "arguments": {"message": "hi"}, "progress": true},
//       {"op": "readResource", "uri": "demo://resource/dynamic/text/1"},
//       {"op": "getPrompt", "name": "simple-prompt", "arguments": {}},
//       {"op": "listPrompts"}, {"op": "listResources"}, {"op": "listResourceTemplates"}
//     ]
//   }
//
// It runs the steps in order on one session and prints one JSON object on
// stdout: {"server": {...}, "results": [{"op", "result"?, "error"?, "progress"?}],
// "protocolErrors": [...], "elicitations": [params of each elicitation/create]}.
// A step that fails with a JSON-RPC error records {"code", "message", "data"}
// and the next step runs; only a failure to connect exits with status 1.
import { readFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

function readSpec() {
  const text = process.argv.length > 2 ? process.argv[2] : readFileSync(0, "utf8");
  return JSON.parse(text);
}

function transportFor(spec) {
  switch (spec.transport) {
    case "stdio":
      // stderr is inherited so that the connector's diagnostics reach the
      // test log; stdout carries only MCP messages.
      return new StdioClientTransport({ command: spec.command, args: spec.args ?? [], cwd: spec.cwd, stderr: "inherit" });
    case "http":
      // requestInit.headers is how the SDK sends configured headers (the
      // local endpoint's bearer token) with every POST, GET and DELETE.
      return new StreamableHTTPClientTransport(new URL(spec.url), { requestInit: { headers: spec.headers ?? {} } });
    default:
      throw new Error(`unknown transport ${JSON.stringify(spec.transport)}: want stdio or http`);
  }
}

// errorJSON keeps what a test asserts on: the JSON-RPC code and data.
function errorJSON(err) {
  return { code: err?.code ?? null, message: String(err?.message ?? err), data: err?.data ?? null };
}

// wire is every message the transport delivered to the client, in arrival
// order, so a test can check ordering independently of how the SDK
// dispatches them.
const wire = [];

async function runStep(client, step) {
  const out = { op: step.op };
  const wireStart = wire.length;
  const progress = [];
  const opts = { timeout: step.timeoutMs ?? 30000 };
  if (step.progress) {
    opts.onprogress = (p) => {
      progress.push(p);
      // A line per notification as it arrives, for a test that acts
      // while the request is in flight.
      process.stderr.write(`client.mjs: progress ${JSON.stringify(p)}\n`);
    };
  }
  try {
    switch (step.op) {
      case "listTools":
        out.result = await client.listTools({}, opts);
        break;
      case "listPrompts":
        out.result = await client.listPrompts({}, opts);
        break;
      case "listResources":
        out.result = await client.listResources({}, opts);
        break;
      case "listResourceTemplates":
        out.result = await client.listResourceTemplates({}, opts);
        break;
      case "callTool":
        out.result = await client.callTool({ name: step.name, arguments: step.arguments ?? {} }, undefined, opts);
        break;
      case "readResource":
        out.result = await client.readResource({ uri: step.uri }, opts);
        break;
      case "getPrompt":
        out.result = await client.getPrompt({ name: step.name, arguments: step.arguments ?? {} }, opts);
        break;
      default:
        throw new Error(`unknown op ${JSON.stringify(step.op)}`);
    }
  } catch (err) {
    out.error = errorJSON(err);
  }
  if (step.progress) {
    out.progress = progress;
    // Progress notifications that reached the transport before the step's
    // response did (steps run one at a time, so the first response after
    // the step started is its own).
    let before = 0;
    for (const m of wire.slice(wireStart)) {
      if (m.id !== undefined && (m.result !== undefined || m.error !== undefined)) break;
      if (m.method === "notifications/progress") before++;
    }
    out.wireProgressBeforeResult = before;
  }
  return out;
}

async function main() {
  const spec = readSpec();
  const elicitations = [];
  const client = new Client(
    { name: "agentmesh-e2e", version: "1.0.0" },
    spec.elicitation ? { capabilities: { elicitation: {} } } : undefined,
  );
  if (spec.elicitation) {
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      elicitations.push(req.params);
      return { action: spec.elicitation };
    });
  }
  // Errors outside any request: a line on the connector's stdout that is
  // not an MCP message, a stream that broke. A test wants none.
  const protocolErrors = [];
  client.onerror = (err) => protocolErrors.push(String(err?.message ?? err));
  const transport = transportFor(spec);
  try {
    await client.connect(transport);
    const deliver = transport.onmessage;
    transport.onmessage = (msg, extra) => {
      wire.push(msg);
      deliver?.(msg, extra);
    };
  } catch (err) {
    process.stderr.write(`client.mjs: connect: ${err?.stack ?? err}\n`);
    process.stdout.write(JSON.stringify({ connectError: errorJSON(err) }) + "\n");
    process.exitCode = 1;
    await transport.close().catch(() => {});
    return;
  }
  const results = [];
  for (const step of spec.steps ?? []) {
    results.push(await runStep(client, step));
  }
  await client.close();
  process.stdout.write(JSON.stringify({ server: client.getServerVersion() ?? null, results, protocolErrors, elicitations }) + "\n");
}

main().catch((err) => {
  process.stderr.write(`client.mjs: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});

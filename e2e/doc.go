// Package e2e holds agentmesh's end-to-end tests: the built agentmesh binary
// with real third-party MCP servers (the reference "everything" and
// "filesystem" servers) behind `agentmesh serve`, driven through
// `agentmesh connect` by the official TypeScript SDK client (client.mjs),
// over stdio and over the connector's local Streamable HTTP endpoint (with
// the endpoint's bearer token, sent as the SDK sends configured headers,
// through requestInit; a client without it is refused with 401 local_auth).
//
// The Node.js packages are pinned in package.json and package-lock.json.
// When e2e/node_modules lacks them and npm is installed, TestMain runs
// `npm ci --prefix e2e --no-audit --no-fund` once (a failed install fails the
// run), so `go test ./...` on a fresh clone runs these tests too. Without
// Node.js, or with -short, they skip, and TestMain prints why on stderr
// (which go test shows with -v, or when the package fails).
//
// TestQuickstartAsWritten runs the README's quickstart as written: the
// commands come from README.md; quickstart_test.go lists what it
// substitutes (a temporary directory, free ports, the pinned npm package).
//
// What the tests establish, from the outside, as a user sees it: policy
// filters tools/list; an allowed call, resource read and prompt get reach the
// server and come back; a call outside the grant, or whose arguments fail the
// grant's `when` (a path outside the allowed folder, a ".." escape), is
// answered by the gateway with JSON-RPC error -32040 and a reason, never
// reaches the server, and lands in the audit trail as a deny with that reason;
// progress notifications stream back to the client; `agentmesh audit verify`
// accepts the resulting hash chain.
//
// Model endpoints are driven the same way by the official `openai` npm
// client (openai_client.mjs) through `agentmesh connect model:NAME --listen`
// against a model node whose upstream is the Go test server of
// internal/modelgw/modelgwtest: the model list is filtered, completions
// (plain and streamed with usage) and embeddings come back, a denied model
// surfaces as an APIError with our reason code, a client without the
// endpoint's token (its API key) as an AuthenticationError with local_auth,
// and the audit trail records status, time to first byte and token usage.
//
// TestConformanceThroughTheMesh runs the official MCP conformance suite
// (@modelcontextprotocol/conformance, its server mode) against the Go
// SDK's conformance server (built from the module's go-sdk requirement)
// directly, through `connect SERVICE --listen` and through `connect --all
// --no-prefix --listen`, and compares the scenarios that pass; the runner
// gets the endpoints' bearer token from bearer.mjs, preloaded with
// node --import.
package e2e

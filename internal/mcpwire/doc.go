// Package mcpwire is the one strict decoder for JSON-RPC 2.0 / MCP messages
// that every policy check in agentmesh looks at.
//
// The gateway calls [Decode] on each message from a peer, makes its policy
// decision from the decoded method, tool name, resource URI, prompt name and
// arguments (see [Message.ToolCall], [Message.ResourceURI],
// [Message.PromptGet], [Message.CompletionRef], and for tasks and
// subscriptions [Message.TaskID], [Message.TaskRequest],
// [Message.Listen]) and then forwards the
// ORIGINAL bytes ([Message.Raw]) to the upstream MCP server. [FilterList]
// (or [Message.FilterResult], which skips re-validating a decoded result)
// rewrites list results so a caller sees only what it may use,
// [ErrorResponse] builds the JSON-RPC error sent back for a denied request,
// and [ErrorCode] picks its code from a Decode error. Responses must be
// matched to requests with [IDKey], not by raw id bytes.
//
// The protocol's versions ([VersionStateless], [SessionVersions]), the
// Streamable HTTP header names and content types, and the header
// allow-lists every hop passes on ([CopyRequestHeaders],
// [CopyResponseHeaders], [IsMirrorHeader]) are defined here once, so the
// gateway, the connector and the model gateway cannot disagree on which
// headers cross a hop: Authorization and Cookie never do, since the mesh
// identity is the only credential.
//
// # Threat model
//
// The peer is hostile and the upstream server is an unknown JSON parser:
// Go's encoding/json (matches struct fields case-insensitively, folding the
// Kelvin sign K and long s ſ to k and s, and turns invalid UTF-8 into
// U+FFFD), JavaScript's JSON.parse (last duplicate key wins), Python's json
// (accepts NaN, lone surrogates, first or last duplicate depending on use),
// and others. Because the gateway forwards the bytes it validated rather than
// a re-encoding, any input on which two reasonable parsers could disagree is
// a policy bypass: {"name":"read","name":"drop"} or {"name":"read","Name":"drop"}
// lets the policy see one tool and the server run another. Decode therefore
// accepts only input that every such parser reads the same way:
//
//   - strict RFC 8259 grammar: one value, no comments, no trailing commas,
//     no NaN or Infinity, no leading zeros, only JSON whitespace around it;
//   - valid UTF-8 everywhere, and no lone surrogate in \u escapes, so no
//     parser has to substitute U+FFFD;
//   - no duplicate keys in any object at any depth, compared after
//     unescaping ("na\u006de" duplicates "name");
//   - no two keys of one object that are equal under Unicode simple case
//     folding (the equivalence strings.EqualFold and encoding/json use, which
//     includes K/k/K and s/S/ſ), in EVERY object at ANY depth. Checking only
//     the envelope, params and arguments would be enough for the fields this
//     package reads, but policies (CEL "when" clauses) read nested argument
//     values and upstream servers bind nested structs case-insensitively, so
//     the rule applies everywhere; legitimate MCP traffic never relies on two
//     keys that differ only in case;
//   - no key that is alone in its object but differs only in case from a
//     key an accessor reads ("Arguments", "URI", "Ref", "TaskId", "_Meta"):
//     code that reads the exact key would not see it, while an upstream that
//     binds keys case-insensitively reads it as the key; the accessors fail
//     with ErrCaseVariantKey instead ([KeyIs] and [Fold] give the same test
//     to packages that read keys of their own, such as the policy's when);
//   - no control character (C0 or DEL, which must be escaped) in any object
//     key: C-string based parsers truncate "name\u0000x" to "name";
//   - bounded size and nesting depth ([Limits]), checked while scanning,
//     before anything is built;
//   - a JSON-RPC 2.0 envelope with only the keys jsonrpc, id, method, params,
//     result and error, "jsonrpc":"2.0", ids that are strings or integers in
//     the range every parser represents exactly (|id| <= 2^53-1), and exactly
//     the request, notification or response shape.
//
// Unicode escapes are allowed, since every parser decodes them identically;
// every name this package returns is the unescaped value. Names used for
// policy (tool and prompt names, resource URIs) must be non-empty JSON
// strings without control characters (C0, DEL or C1).
//
// Decode makes one validating pass over the bytes with its own scanner and
// records where the envelope members are; the accessors then read those
// already-validated bytes. Slices in a [Message] alias the input: the caller
// must not modify the buffer passed to Decode while the Message is in use.
package mcpwire

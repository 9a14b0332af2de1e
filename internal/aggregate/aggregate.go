// Package aggregate is the aggregated endpoint of an agent: one MCP server
// (the official Go SDK's) whose tools are those of every tool service the
// agent may reach, each named SERVICE__TOOL, with each call routed to its
// service's gateway over an SDK client session of its own. Every gateway
// still decides and audits its calls; the aggregator only merges lists and
// routes calls, and passes a gateway's errors (denials among them) back
// unchanged.
//
// Sessions. Each service has one session of the aggregator's own, for
// lists (and for the requests of 2026-07-28 clients, which have no
// session). A client session of an earlier protocol gets, in addition, a
// session of its own to each service it uses, opened on its first request
// there and closed when it ends (clientsessions.go): a service's
// server-to-client requests (sampling, elicitation, roots/list) and log
// messages on it can then only belong to that client, and reach it; the
// gateway sees one session per client, as with single-service connect.
// A 2026-07-28 client gets what a service asks of it in an input_required
// result, passed through both ways. Progress tokens are replaced by the
// aggregator's own and routed back, a call's answer after the progress
// the service sent before it (progressorder.go); a client's cancellation cancels the
// aggregator's request, which the SDK passes on; logging/setLevel applies
// to the client's own sessions (routing.go), and a 2026-07-28 request that
// asks for log messages gets a session of its own (requestlog.go). Over
// HTTP, 2026-07-28 requests are served statelessly beside the sessions of
// earlier clients (sessionless.go). What a client can make the aggregator
// hold is bounded (MaxInFlightPerClient, MaxSessionsPerClient,
// MaxClientSessions, MaxAsksPerClient, MaxProgressRoutes,
// MaxSessionlessRequests, MaxSessionlessListens, MaxRequestSessions).
//
// Prompts are aggregated as tools are (SERVICE__PROMPT, prompts.go);
// resources and resource templates under agentmesh://SERVICE/ followed by
// the service's own URI, with subscriptions routed (resources.go; over a
// 2026-07-28 session to the gateway, on a 2025-11-25 one beside it, so
// that a refusal comes back: subscriptions.go).
package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// Separator is the default separator joining a service's name and its
// tool's (or prompt's) name: SERVICE__TOOL. Config.Separator replaces it
// (CheckSeparator says which are allowed). A service whose name contains
// the separator, a tool whose own name contains it, and a name whose first
// separator is not where the service's name ends are skipped, so that the
// first separator of an aggregated name always ends the service's name and
// no service can list a name that reads as another's tool.
const Separator = "__"

// MetaKey is the key, in the initialize result's _meta, of what the
// aggregated endpoint says about itself (see Meta).
const MetaKey = "agentmesh"

// Limits on what a gateway can make the aggregator hold or wait for.
const (
	// DefaultListTimeout bounds one service's initialize and one
	// tools/list (all pages); past it the session is dropped and tried
	// again. Services are listed each on its own, so a slow one never
	// holds up the others' tools; it is generous because a gateway whose
	// MCP server is a stdio command (npx) starts a process per session.
	DefaultListTimeout = 30 * time.Second
	// MaxToolsPerService is the most tools taken from one service; the
	// rest are skipped with a warning.
	MaxToolsPerService = 1000
	// maxToolName is the longest aggregated tool name MCP allows.
	maxToolName = 128
	// retryMin and retryMax bound the wait before reconnecting to a
	// service whose session failed.
	retryMin = 250 * time.Millisecond
	retryMax = 10 * time.Second
)

// CodeServiceUnavailable is the JSON-RPC error code of a call to a tool
// whose service has no session right now (data.reason is
// gateway_unreachable); a gateway's own errors keep their codes.
const CodeServiceUnavailable = -32051

// Service is one tool service to aggregate.
type Service struct {
	// Name is the service's node name, the prefix of its tools.
	Name string
	// ID is its SPIFFE ID; Addr its gateway's address (host:port). A
	// change of either reconnects.
	ID, Addr string
}

// Snapshot is what the aggregator serves: the services the agent may
// reach under one policy version.
type Snapshot struct {
	PolicyVersion int64
	Services      []Service
}

// Meta is the value under MetaKey in the initialize result's _meta.
type Meta struct {
	// SPIFFEID is the caller's (this agent's) identity in the mesh.
	SPIFFEID string `json:"spiffe_id"`
	// PolicyVersion is the version of the policy in the agent's netmap.
	PolicyVersion int64 `json:"policy_version"`
	// Services are the tool services aggregated, sorted.
	Services []string `json:"services"`
	// Separator joins a service's name and its tools' and prompts'
	// names; empty when they keep their own names (Config.NoPrefix).
	Separator string `json:"separator"`
}

// Config configures New.
type Config struct {
	// SPIFFEID is the agent's identity, told in the initialize result.
	SPIFFEID string
	// Transport returns a client transport to s's gateway (over the
	// agent's mTLS). Required.
	Transport func(s Service) (mcp.Transport, error)
	// Logger receives warnings (skipped tools, services down); nil
	// discards them.
	Logger *slog.Logger
	// ListTimeout bounds one service's tools/list; zero is
	// DefaultListTimeout.
	ListTimeout time.Duration
	// Version is the aggregated server's version in serverInfo.
	Version string
	// NoPrefix lists tools, prompts and resources under their own names
	// and URIs, and then aggregates at most one service (see noprefix.go).
	NoPrefix bool
	// Separator joins a service's name and its tools' and prompts'
	// names; "" is Separator. New refuses one CheckSeparator refuses.
	Separator string
}

// Aggregator serves the aggregated MCP server. Update feeds it the
// services to aggregate; Close ends every upstream session.
type Aggregator struct {
	cfg    Config
	log    *slog.Logger
	server *mcp.Server
	sep    string

	mu       sync.Mutex
	closed   bool
	policy   int64
	backends map[string]*backend // by service name
	owner    map[string]*backend // aggregated tool name → the backend serving it
	more     features            // prompts, resources, subscriptions
	wg       sync.WaitGroup

	clients  *clients        // client sessions' own sessions (routing.go)
	progress *progressRoutes // calls' progress tokens (routing.go)
	// requestSessions holds a token per session open for one request
	// (requestlog.go).
	requestSessions chan struct{}
}

// New returns an aggregator with no services yet.
func New(cfg Config) (*Aggregator, error) {
	if cfg.Transport == nil {
		return nil, errors.New("aggregate: Transport is required")
	}
	if cfg.ListTimeout <= 0 {
		cfg.ListTimeout = DefaultListTimeout
	}
	if cfg.Separator == "" {
		cfg.Separator = Separator
	}
	if err := CheckSeparator(cfg.Separator); err != nil {
		return nil, fmt.Errorf("aggregate: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Aggregator{cfg: cfg, log: log, sep: cfg.Separator, backends: map[string]*backend{}, owner: map[string]*backend{}}
	a.more.init()
	a.clients, a.progress = newClients(a), newProgressRoutes(a)
	a.requestSessions = make(chan struct{}, MaxRequestSessions)
	a.server = mcp.NewServer(&mcp.Implementation{Name: "agentmesh-aggregate", Version: cfg.Version}, &mcp.ServerOptions{
		// Tools always with list_changed: the set changes as services
		// come and go. Logging: services' messages are routed (routing.go).
		// Prompts and resources here too, so that the SDK grants a
		// 2026-07-28 client's subscriptions to them; what a client is
		// offered at initialize is what the services offer (capabilities).
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{ListChanged: true}, Logging: &mcp.LoggingCapabilities{},
			Prompts:   &mcp.PromptCapabilities{ListChanged: true},
			Resources: &mcp.ResourceCapabilities{ListChanged: true, Subscribe: true}, Completions: &mcp.CompletionCapabilities{}},
		Logger:             log,
		SubscribeHandler:   a.subscribe,
		UnsubscribeHandler: a.unsubscribe,
		CompletionHandler:  a.complete,
	})
	a.server.AddReceivingMiddleware(a.initializeMeta, a.routing, a.bareURIs)
	return a, nil
}

// Server is the aggregated MCP server, to run on a transport or behind
// a Streamable HTTP handler.
func (a *Aggregator) Server() *mcp.Server { return a.server }

// initializeMeta adds the agentmesh _meta and the upstreams' labelled
// instructions to the initialize (or server/discover) result.
func (a *Aggregator) initializeMeta(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if err != nil {
			return res, err
		}
		switch r := res.(type) {
		case *mcp.InitializeResult:
			r.Meta, r.Instructions = a.withMeta(r.Meta)
			r.Capabilities = a.capabilities(r.Capabilities)
		case *mcp.DiscoverResult: // server/discover, from MCP 2026-07-28 on
			r.Meta, r.Instructions = a.withMeta(r.Meta)
			r.Capabilities = a.capabilities(r.Capabilities)
		}
		return res, nil
	}
}

// withMeta is meta with the agentmesh key set, and the instructions.
func (a *Aggregator) withMeta(meta mcp.Meta) (mcp.Meta, string) {
	m, instr := a.describe()
	if meta == nil {
		meta = mcp.Meta{}
	}
	meta[MetaKey] = m
	return meta, instr
}

// describe returns the Meta and the instructions of every upstream that
// gave some, each under its service's name.
func (a *Aggregator) describe() (Meta, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := Meta{SPIFFEID: a.cfg.SPIFFEID, PolicyVersion: a.policy, Services: []string{}, Separator: a.separator()}
	var b strings.Builder
	for name := range a.backends {
		m.Services = append(m.Services, name)
	}
	sort.Strings(m.Services)
	for _, name := range m.Services {
		if in := a.backends[name].instructions(); in != "" {
			fmt.Fprintf(&b, "## %s%s\n%s\n\n", name, a.where(name), strings.TrimSpace(in))
		}
	}
	return m, strings.TrimSpace(b.String())
}

// Update makes the aggregated services those of s: new ones are
// connected, gone ones (or ones whose gateway changed) disconnected and
// their tools removed.
func (a *Aggregator) Update(s Snapshot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.policy = s.PolicyVersion
	want := map[string]Service{}
	for _, svc := range s.Services {
		if strings.Contains(svc.Name, a.sep) || svc.Name == "" {
			a.log.Warn("aggregate: skipping a service whose name contains the separator", "service", svc.Name, "separator", a.sep)
			continue
		}
		want[svc.Name] = svc
	}
	want = a.atMostOne(want)
	for name, be := range a.backends {
		if svc, ok := want[name]; !ok || svc != be.svc {
			a.dropLocked(be)
			delete(a.backends, name)
		}
	}
	for name, svc := range want {
		if _, ok := a.backends[name]; ok {
			continue
		}
		be := newBackend(a, svc)
		a.backends[name] = be
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			be.run()
		}()
	}
}

// WaitSettled waits until every service of the last Update has been
// tried once (listed, or found down), or ctx ends: a client served
// after it sees every service that answers in time, rather than a
// partial list followed by list_changed.
func (a *Aggregator) WaitSettled(ctx context.Context) error {
	a.mu.Lock()
	var waits []<-chan struct{}
	for _, be := range a.backends {
		waits = append(waits, be.settled)
	}
	a.mu.Unlock()
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close stops every upstream session and waits for them.
func (a *Aggregator) Close() {
	a.mu.Lock()
	a.closed = true
	for name, be := range a.backends {
		a.dropLocked(be)
		delete(a.backends, name)
	}
	a.mu.Unlock()
	a.clients.close()
	a.wg.Wait()
}

// dropLocked stops be and removes its tools from the server at once, so
// that a successor for the same service finds their names free.
func (a *Aggregator) dropLocked(be *backend) {
	be.stop()
	a.clients.dropBackend(be)
	gone := released(be, be.tools, nil, a.owner)
	be.tools = map[string]*mcp.Tool{}
	if len(gone) > 0 {
		a.server.RemoveTools(gone...)
	}
	a.dropMoreLocked(be)
}

// setTools makes be's tools in the server exactly tools (nil: none),
// skipping, with a warning, any that could shadow another's.
func (a *Aggregator) setTools(be *backend, tools []*mcp.Tool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if tools != nil && a.backends[be.svc.Name] != be {
		return // stopped meanwhile: its successor sets its own tools
	}
	next := map[string]*mcp.Tool{}
	for _, t := range tools {
		name, ok := a.admit(be, "tool", t.Name, func(n string) bool { return next[n] != nil }, a.owner)
		if !ok {
			continue
		}
		next[name] = t
	}
	if gone := released(be, be.tools, next, a.owner); len(gone) > 0 {
		a.server.RemoveTools(gone...)
	}
	for name, t := range next {
		if old, ok := be.tools[name]; ok && same(old, t) {
			continue
		}
		a.owner[name] = be
		a.server.AddTool(namespaced(name, t), be.call(t.Name))
	}
	be.tools = next
}

// admit returns the aggregated name of be's tool or prompt (kind says
// which), or false with a warning when it must be skipped: its name
// contains the separator, the aggregated name's first separator is not
// where the service's name ends (a service named "a_" and the separator
// "__"), the aggregated name is too long, it repeats one of the same list
// (taken), or another service owns the name in owner. Every admitted name
// thus reads back as exactly one service's item.
func (a *Aggregator) admit(be *backend, kind, item string, taken func(string) bool, owner map[string]*backend) (string, bool) {
	svc := be.svc.Name
	name := a.aggregatedName(svc, item)
	skip := func(why string) (string, bool) {
		a.log.Warn("aggregate: skipping a "+kind+": "+why, "service", svc, kind, item)
		return "", false
	}
	switch {
	case item == "":
		return skip("it has no name")
	case !a.cfg.NoPrefix && strings.Contains(item, a.sep):
		return skip("its name contains the separator " + a.sep)
	case !a.cfg.NoPrefix && strings.Index(name, a.sep) != len(svc):
		return skip("its aggregated name would read as another service's (the service's name ends with part of the separator " + a.sep + ")")
	case len(name) > maxToolName:
		return skip(fmt.Sprintf("its aggregated name is longer than %d characters", maxToolName))
	case taken(name):
		return skip("the service lists it twice")
	case owner[name] != nil && owner[name] != be:
		return skip("another session, of " + owner[name].svc.Name + ", has that aggregated name")
	}
	return name, true
}

// namespaced is t as the gateway listed it under the aggregated name.
func namespaced(name string, t *mcp.Tool) *mcp.Tool {
	c := *t
	c.Name = name
	if c.InputSchema == nil {
		c.InputSchema = map[string]any{"type": "object"}
	}
	return &c
}

// released returns the names of was that next lacks and that be owns,
// and forgets that be owns them.
func released[T any](be *backend, was, next map[string]T, owner map[string]*backend) []string {
	var gone []string
	for name := range was {
		if _, ok := next[name]; !ok && owner[name] == be {
			gone = append(gone, name)
			delete(owner, name)
		}
	}
	return gone
}

// unavailable is the error answering a call to svc's tool while svc has
// no session.
func unavailable(svc string, why error) error {
	msg := fmt.Sprintf("service %s is unreachable", svc)
	if why != nil {
		msg += ": " + why.Error()
	}
	data, _ := json.Marshal(map[string]reason.Code{"reason": reason.GatewayUnreachable})
	return &jsonrpc.Error{Code: CodeServiceUnavailable, Message: msg, Data: data}
}

// validTools drops tools whose input schema is not an object (the SDK
// would refuse to serve them) and keeps at most MaxToolsPerService.
func validTools(log *slog.Logger, svc string, tools []*mcp.Tool) []*mcp.Tool {
	out := tools[:0:0]
	for _, t := range tools {
		if t == nil {
			continue
		}
		if t.InputSchema != nil {
			var m map[string]any
			b, err := json.Marshal(t.InputSchema)
			if err != nil || json.Unmarshal(b, &m) != nil || m["type"] != "object" {
				log.Warn("aggregate: skipping a tool whose input schema is not an object", "service", svc, "tool", t.Name)
				continue
			}
		}
		if len(out) == MaxToolsPerService {
			log.Warn("aggregate: the service lists more tools than are aggregated; skipping the rest", "service", svc, "max", MaxToolsPerService)
			break
		}
		out = append(out, t)
	}
	return slices.Clip(out)
}

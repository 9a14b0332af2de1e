package aggregate

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/yosida95/uritemplate/v3"
)

// URIScheme is the scheme of aggregated resource URIs: a service's
// resource URI U is served as agentmesh://SERVICE/U (U verbatim, its own
// scheme and all), and a template T as agentmesh://SERVICE/T. Service
// names are DNS-label-like, so SERVICE is the URI's host and the '/'
// after it ends the service's name: no service can list a URI that reads
// as another's.
const URIScheme = "agentmesh"

// Limits on what a service can make the aggregator hold for resources.
const (
	// MaxResourcesPerService is the most resources, and separately the
	// most resource templates, taken from one service; the rest are
	// skipped with a warning.
	MaxResourcesPerService = 1000
	// maxURI is the longest aggregated resource URI or URI template.
	maxURI = 4096
	// MaxSubscriptions is the most (aggregated URI, client session)
	// subscriptions the aggregator keeps; past it resources/subscribe
	// fails.
	MaxSubscriptions = 1000
)

// serviceTemplate is a service's resource template, with its own URI
// template parsed (to resolve a bare URI, bareURIs).
type serviceTemplate struct {
	def   *mcp.ResourceTemplate
	match *uritemplate.Template
}

// uriPrefix is the prefix of svc's aggregated resource URIs.
func uriPrefix(svc string) string { return URIScheme + "://" + svc + "/" }

// splitURI returns the service and the service's own URI of an
// aggregated resource URI, or false if uri is not one.
func splitURI(uri string) (svc, own string, ok bool) {
	rest, ok := strings.CutPrefix(uri, URIScheme+"://")
	if !ok {
		return "", "", false
	}
	svc, own, ok = strings.Cut(rest, "/")
	return svc, own, ok && svc != "" && own != ""
}

// listResources reads the service's resources and resource templates
// (every page of each, within ListTimeout each) and puts them in the
// aggregated server. A gateway's JSON-RPC error for one list (many
// servers have resources but no templates) leaves that kind empty with
// a warning; any other failure ends the session, as for tools.
func (b *backend) listResources(s *mcp.ClientSession) error {
	log := b.a.log.With("service", b.svc.Name)
	refused := func(method string, err error) bool {
		var je *jsonrpc.Error
		if errors.As(err, &je) {
			log.Warn("aggregate: the service refused "+method+"; that list is empty", "err", err)
			return true
		}
		return false
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.a.cfg.ListTimeout)
	defer cancel()
	resources := []*mcp.Resource{}
	for r, err := range s.Resources(ctx, nil) {
		if err != nil {
			if refused("resources/list", err) {
				resources = []*mcp.Resource{}
				break
			}
			return fmt.Errorf("resources/list: %w", err)
		}
		if r == nil {
			continue
		}
		if len(resources) == MaxResourcesPerService {
			log.Warn("aggregate: the service lists more resources than are aggregated; skipping the rest", "max", MaxResourcesPerService)
			break
		}
		resources = append(resources, r)
	}
	cancel()
	ctx, cancel = context.WithTimeout(b.ctx, b.a.cfg.ListTimeout)
	defer cancel()
	templates := []*mcp.ResourceTemplate{}
	for t, err := range s.ResourceTemplates(ctx, nil) {
		if err != nil {
			if refused("resources/templates/list", err) {
				templates = []*mcp.ResourceTemplate{}
				break
			}
			return fmt.Errorf("resources/templates/list: %w", err)
		}
		if t == nil {
			continue
		}
		if len(templates) == MaxResourcesPerService {
			log.Warn("aggregate: the service lists more resource templates than are aggregated; skipping the rest", "max", MaxResourcesPerService)
			break
		}
		templates = append(templates, t)
	}
	b.a.setResources(b, resources, templates)
	return nil
}

// setResources makes be's resources and templates in the server exactly
// these (both nil: none), under be's URI prefix.
func (a *Aggregator) setResources(be *backend, resources []*mcp.Resource, templates []*mcp.ResourceTemplate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if (resources != nil || templates != nil) && a.backends[be.svc.Name] != be {
		return // stopped meanwhile: its successor sets its own
	}
	a.setResourcesLocked(be, resources, templates)
}

func (a *Aggregator) setResourcesLocked(be *backend, resources []*mcp.Resource, templates []*mcp.ResourceTemplate) {
	svc, prefix := be.svc.Name, a.uriPrefix(be.svc.Name)
	skip := func(kind, uri, why string) {
		a.log.Warn("aggregate: skipping a "+kind+": "+why, "service", svc, kind, uri)
	}
	check := func(kind, own, agg string, owner map[string]*backend, taken bool) bool {
		switch {
		case own == "":
			skip(kind, own, "it has no URI")
		case len(agg) > maxURI:
			skip(kind, own, fmt.Sprintf("its aggregated URI is longer than %d characters", maxURI))
		case taken:
			skip(kind, own, "the service lists it twice")
		case owner[agg] != nil && owner[agg] != be:
			skip(kind, own, "another session, of "+owner[agg].svc.Name+", has that aggregated URI")
		default:
			return true
		}
		return false
	}

	nextRes := map[string]*mcp.Resource{}
	for _, r := range resources {
		agg := prefix + r.URI
		if !check("resource", r.URI, agg, a.more.resOwner, nextRes[agg] != nil) {
			continue
		}
		if _, err := url.Parse(agg); err != nil {
			skip("resource", r.URI, "its aggregated URI is not a URI")
			continue
		}
		if tooBig(r) {
			skip("resource", r.URI, "its definition is too large")
			continue
		}
		nextRes[agg] = r
	}
	nextTmpl := map[string]*serviceTemplate{}
	for _, t := range templates {
		agg := prefix + t.URITemplate
		if !check("resource template", t.URITemplate, agg, a.more.tmplOwner, nextTmpl[agg] != nil) {
			continue
		}
		own, err1 := uritemplate.New(t.URITemplate)
		_, err2 := uritemplate.New(agg)
		if err1 != nil || err2 != nil {
			skip("resource template", t.URITemplate, "it is not a URI template")
			continue
		}
		if tooBig(t) {
			skip("resource template", t.URITemplate, "its definition is too large")
			continue
		}
		nextTmpl[agg] = &serviceTemplate{def: t, match: own}
	}

	goneRes := released(be, be.more.resources, nextRes, a.more.resOwner)
	goneTmpl := released(be, be.more.templates, nextTmpl, a.more.tmplOwner)
	if len(goneRes) > 0 {
		a.server.RemoveResources(goneRes...)
	}
	if len(goneTmpl) > 0 {
		a.server.RemoveResourceTemplates(goneTmpl...)
	}
	for agg, r := range nextRes {
		if old, ok := be.more.resources[agg]; ok && same(old, r) {
			continue
		}
		a.more.resOwner[agg] = be
		c := *r
		c.URI = agg
		a.server.AddResource(&c, be.readResource())
	}
	for agg, t := range nextTmpl {
		if old, ok := be.more.templates[agg]; ok && same(old.def, t.def) {
			continue
		}
		a.more.tmplOwner[agg] = be
		c := *t.def
		c.URITemplate = agg
		a.server.AddResourceTemplate(&c, be.readResource())
	}
	be.more.resources, be.more.templates = nextRes, nextTmpl
}

// readResource is the handler of the service's resources and templates:
// the read goes to the gateway with the service's own URI, and the
// result comes back with its contents' URIs in the aggregated form; a
// gateway's error comes back unchanged.
func (b *backend) readResource() mcp.ResourceHandler {
	prefix := b.a.uriPrefix(b.svc.Name)
	return func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		own, ok := strings.CutPrefix(req.Params.URI, prefix)
		if !ok {
			return nil, mcp.ResourceNotFoundError(req.Params.URI)
		}
		s, end, err := b.sessionForRequest(ctx, req.Session, req.Params.Meta)
		if err != nil {
			return nil, err
		}
		defer end()
		res, err := s.ReadResource(ctx, &mcp.ReadResourceParams{URI: own, Meta: forwardMeta(req.Params.Meta)})
		if err != nil {
			return nil, upstreamError(b.svc.Name, err)
		}
		for _, c := range res.Contents {
			if c != nil && c.URI != "" {
				c.URI = prefix + c.URI
			}
		}
		return res, nil
	}
}

// bareURIs lets a client read a resource by the service's own URI (as a
// resource link in a tool's result gives it) when that URI is not
// already an aggregated one and exactly one service lists it, or, if
// none lists it, exactly one service's template whose scheme is literal
// matches it: the read then goes to that service. Subscriptions take
// aggregated URIs only.
func (a *Aggregator) bareURIs(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if r, ok := req.(*mcp.ReadResourceRequest); ok && method == "resources/read" && r.Params != nil {
			if agg, ok := a.resolveBare(r.Params.URI); ok {
				p := *r.Params
				p.URI = agg
				r.Params = &p
			}
		}
		return next(ctx, method, req)
	}
}

// resolveBare returns the aggregated URI of uri, a service's own URI,
// when exactly one service can have meant it (bareURIs).
func (a *Aggregator) resolveBare(uri string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.NoPrefix {
		return "", false // URIs are the services' own
	}
	if svc, _, ok := splitURI(uri); ok && a.backends[svc] != nil {
		return "", false // already aggregated
	}
	var listed, matched []string
	for name, be := range a.backends {
		agg := uriPrefix(name) + uri
		if be.more.resources[agg] != nil {
			listed = append(listed, agg)
			continue
		}
		for _, t := range be.more.templates {
			if literalScheme(t.def.URITemplate) && t.match.Regexp().MatchString(uri) {
				matched = append(matched, agg)
				break
			}
		}
	}
	switch {
	case len(listed) == 1:
		return listed[0], true
	case len(listed) == 0 && len(matched) == 1:
		return matched[0], true
	}
	return "", false
}

// literalScheme reports whether template's scheme is literal text (no
// expression before its ':'): only such a template takes a bare URI, so
// that a service cannot catch every bare URI with "{+uri}".
func literalScheme(template string) bool {
	lit, _, _ := strings.Cut(template, "{")
	return strings.Contains(lit, ":")
}

// subscription is one client session's subscription to an aggregated
// URI, and the session to the service that carries it (sessionFor's, or
// its carrier: subscriptions.go); shared when it was made over the
// backend's shared session (not one of the client's own).
type subscription struct {
	client *mcp.ServerSession
	up     *mcp.ClientSession
	shared bool
}

// subscribe routes a client's resources/subscribe to the service whose
// aggregated URI it names, over the session sessionFor gives, and
// remembers which (the SDK sends the client the updates,
// resourceUpdated).
func (a *Aggregator) subscribe(ctx context.Context, req *mcp.SubscribeRequest) error {
	uri := req.Params.URI
	be, own, err := a.owning(uri)
	if err != nil {
		return err
	}
	a.mu.Lock()
	if a.countSubsLocked() >= MaxSubscriptions {
		a.pruneSubsLocked()
		if a.countSubsLocked() >= MaxSubscriptions {
			a.mu.Unlock()
			return &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: fmt.Sprintf("too many resource subscriptions (at most %d)", MaxSubscriptions)}
		}
	}
	a.mu.Unlock()
	s, err := be.sessionFor(ctx, req.Session)
	if err != nil {
		return err
	}
	// Over a 2026-07-28 session the SDK would not report a refusal.
	if s, err = be.carrier(s); err != nil {
		return err
	}
	if err := s.Subscribe(ctx, &mcp.SubscribeParams{URI: own, Meta: forwardMeta(req.Params.Meta)}); err != nil {
		return upstreamError(be.svc.Name, err)
	}
	shared := !ownSessions(req.Session)
	a.mu.Lock()
	defer a.mu.Unlock()
	subs := a.more.subs[uri]
	for i, sub := range subs {
		if sub.client == req.Session {
			subs[i].up, subs[i].shared = s, shared
			return nil
		}
	}
	a.more.subs[uri] = append(subs, subscription{client: req.Session, up: s, shared: shared})
	return nil
}

// unsubscribe forgets a client session's subscription, and ends it at the
// service when no other client session's subscription rides on the same
// session to the service.
func (a *Aggregator) unsubscribe(ctx context.Context, req *mcp.UnsubscribeRequest) error {
	uri := req.Params.URI
	a.mu.Lock()
	var up *mcp.ClientSession
	subs := a.more.subs[uri]
	for i, sub := range subs {
		if sub.client == req.Session {
			up = sub.up
			subs = append(subs[:i:i], subs[i+1:]...)
			break
		}
	}
	a.more.subs[uri] = subs
	a.pruneSubsLocked()
	shared := false
	for _, sub := range a.more.subs[uri] {
		shared = shared || sub.up == up
	}
	a.mu.Unlock()
	be, own, err := a.owning(uri)
	if up == nil || shared || err != nil {
		return nil // not ours, still needed, or the service is gone with it
	}
	// A 2026-07-28 client unsubscribes by ending its listen, whose
	// context has ended by then: the service's subscription is ended
	// all the same.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), be.a.cfg.ListTimeout)
	defer cancel()
	if err := up.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: own, Meta: forwardMeta(req.Params.Meta)}); err != nil {
		var je *jsonrpc.Error
		if errors.As(err, &je) {
			return je
		}
		be.a.log.Debug("aggregate: a service's subscription could not be ended; its session has", "service", be.svc.Name, "err", err)
	}
	return nil
}

// owning returns the backend of an aggregated URI and the service's own
// URI, or the error to answer. Under NoPrefix the one service owns every
// URI.
func (a *Aggregator) owning(uri string) (*backend, string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.NoPrefix {
		for _, be := range a.backends {
			return be, uri, nil
		}
		return nil, "", mcp.ResourceNotFoundError(uri)
	}
	svc, own, ok := splitURI(uri)
	be := a.backends[svc]
	if !ok || be == nil {
		return nil, "", mcp.ResourceNotFoundError(uri)
	}
	return be, own, nil
}

func (a *Aggregator) countSubsLocked() int {
	n := 0
	for _, subs := range a.more.subs {
		n += len(subs)
	}
	return n
}

// pruneSubsLocked forgets the subscriptions of client sessions that have
// ended (the SDK forgets them on its side when they end).
func (a *Aggregator) pruneSubsLocked() {
	live := map[*mcp.ServerSession]bool{}
	for ss := range a.server.Sessions() {
		live[ss] = true
	}
	for uri, subs := range a.more.subs {
		subs = slices.DeleteFunc(subs, func(sub subscription) bool { return !live[sub.client] })
		if len(subs) == 0 {
			delete(a.more.subs, uri)
		} else {
			a.more.subs[uri] = subs
		}
	}
}

// resourceUpdated passes a service's notifications/resources/updated,
// received on its session from, on to the client sessions subscribed to
// its aggregated URI. The SDK sends an update to every client session
// subscribed to the URI, so only the session to the service that carries
// the earliest of their subscriptions is heard: one update from the
// service is one notification to each client.
func (a *Aggregator) resourceUpdated(ctx context.Context, be *backend, from *mcp.ClientSession, own string) {
	agg := a.uriPrefix(be.svc.Name) + own
	if own == "" || len(agg) > maxURI {
		return
	}
	a.mu.Lock()
	subs := a.more.subs[agg]
	heard := a.backends[be.svc.Name] == be && len(subs) > 0 && subs[0].up == from
	a.mu.Unlock()
	if heard {
		_ = a.server.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: agg})
	}
}

// resubscribe makes again, on a new session s of the backend's own (or
// its carrier), the subscriptions made over its previous one, which ended
// with it.
func (b *backend) resubscribe(s *mcp.ClientSession) {
	a := b.a
	a.mu.Lock()
	old := b.more.subscribedOn
	if old == s {
		a.mu.Unlock()
		return
	}
	b.more.subscribedOn = s
	a.pruneSubsLocked()
	prefix := a.uriPrefix(b.svc.Name)
	// moving are the URIs (own and aggregated) with subscriptions
	// made over the shared session.
	moving := map[string]string{}
	for uri, subs := range a.more.subs {
		if own, ok := strings.CutPrefix(uri, prefix); ok && old != nil && slices.ContainsFunc(subs, func(sub subscription) bool { return sub.shared }) {
			moving[own] = uri
		}
	}
	// Clients whose subscriptions ride on sessions of their own: those
	// sessions ended too if the service restarted (and each remakes its
	// own then), or the service was down when they ended.
	if old != nil {
		for _, ss := range a.ownSubscribersLocked(prefix) {
			a.wg.Add(1) // on the backend's run, which a.wg counts
			go func() {
				defer a.wg.Done()
				b.resubscribeOwn(ss, 0)
			}()
		}
	}
	a.mu.Unlock()
	if len(moving) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.a.cfg.ListTimeout)
	defer cancel()
	up, err := b.carrier(s)
	if err != nil {
		a.log.Warn("aggregate: could not subscribe again to resources after reconnecting", "service", b.svc.Name, "err", err)
		return
	}
	var uris []string
	a.mu.Lock()
	for own, uri := range moving {
		subs := a.more.subs[uri]
		for i := range subs {
			if subs[i].shared {
				subs[i].up = up
			}
		}
		if len(subs) > 0 {
			uris = append(uris, own)
		}
	}
	a.mu.Unlock()
	sort.Strings(uris)
	for _, own := range uris {
		if err := up.Subscribe(ctx, &mcp.SubscribeParams{URI: own}); err != nil {
			a.log.Warn("aggregate: could not subscribe again to a resource after reconnecting", "service", b.svc.Name, "err", err)
		}
	}
}

// ownSubscribersLocked returns the client sessions with subscriptions to
// URIs under prefix made over sessions of their own.
func (a *Aggregator) ownSubscribersLocked(prefix string) []*mcp.ServerSession {
	var out []*mcp.ServerSession
	for uri, subs := range a.more.subs {
		if !strings.HasPrefix(uri, prefix) {
			continue
		}
		for _, sub := range subs {
			if !sub.shared && !slices.Contains(out, sub.client) {
				out = append(out, sub.client)
			}
		}
	}
	return out
}

// ownSubscriptionLocked returns the index of ss's subscription to uri made
// over a session of its own, or -1.
func (a *Aggregator) ownSubscriptionLocked(uri string, ss *mcp.ServerSession) int {
	return slices.IndexFunc(a.more.subs[uri], func(sub subscription) bool { return sub.client == ss && !sub.shared })
}

// resubscribeOwn makes again the subscriptions the client session ss
// made to b's service over a session of its own that has since ended (a
// gateway restart, its idle timeout), over ss's current session, opened
// if need be: a client is not told that a subscription ended, so it must
// not end while the client and the service are still there. It first
// waits delay, so that a service that ends every session it opens is not
// asked again in a loop. One that cannot be made again is logged and
// tried on the next reconnect to the service.
func (b *backend) resubscribeOwn(ss *mcp.ServerSession, delay time.Duration) {
	a := b.a
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	prefix := a.uriPrefix(b.svc.Name)
	var uris []string
	a.mu.Lock()
	if a.backends[b.svc.Name] == b {
		a.pruneSubsLocked()
		for uri := range a.more.subs {
			if strings.HasPrefix(uri, prefix) && a.ownSubscriptionLocked(uri, ss) >= 0 {
				uris = append(uris, uri)
			}
		}
	}
	a.mu.Unlock()
	if len(uris) == 0 {
		return
	}
	sort.Strings(uris)
	ctx, cancel := context.WithTimeout(b.ctx, a.cfg.ListTimeout)
	defer cancel()
	s, err := b.sessionFor(ctx, ss)
	if err != nil {
		a.log.Warn("aggregate: could not make a client's resource subscriptions again", "service", b.svc.Name, "err", err)
		return
	}
	for _, uri := range uris {
		own := strings.TrimPrefix(uri, prefix)
		a.mu.Lock()
		i := a.ownSubscriptionLocked(uri, ss)
		stale := i >= 0 && a.more.subs[uri][i].up != s
		a.mu.Unlock()
		if !stale {
			continue
		}
		if err := s.Subscribe(ctx, &mcp.SubscribeParams{URI: own}); err != nil {
			a.log.Warn("aggregate: could not make a client's resource subscription again", "service", b.svc.Name, "err", err)
			continue
		}
		a.mu.Lock()
		i = a.ownSubscriptionLocked(uri, ss)
		if i >= 0 {
			a.more.subs[uri][i].up = s
		}
		a.mu.Unlock()
		if i < 0 { // unsubscribed meanwhile
			if err := s.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: own}); err != nil {
				a.log.Debug("aggregate: a subscription made again could not be ended", "service", b.svc.Name, "err", err)
			}
		}
	}
}

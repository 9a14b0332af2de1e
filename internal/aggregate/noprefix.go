package aggregate

import "fmt"

// Config.NoPrefix: an aggregated endpoint in front of a single service
// whose tools keep their own names, so that a client written for that
// service (or a conformance suite calling tools by fixed names) works
// through it unchanged. Names are namespaced only to keep services apart;
// with no namespace, two services could list the same name and one
// shadow the other, so a NoPrefix aggregator serves at most one service:
// while the agent may reach more, it serves none (and says why), rather
// than pick one.

// aggregatedName is the name under which the aggregated server lists the
// tool (or prompt) of service svc: SERVICE__TOOL, or the tool's own name
// under NoPrefix.
func (a *Aggregator) aggregatedName(svc, tool string) string {
	if a.cfg.NoPrefix {
		return tool
	}
	return svc + a.sep + tool
}

// separator is the Meta's Separator: empty when names are not prefixed.
func (a *Aggregator) separator() string {
	if a.cfg.NoPrefix {
		return ""
	}
	return a.sep
}

// atMostOne is want, or no service at all when NoPrefix is set and want
// has more than one.
func (a *Aggregator) atMostOne(want map[string]Service) map[string]Service {
	if !a.cfg.NoPrefix || len(want) <= 1 {
		return want
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	a.log.Error("aggregate: tools keep their own names (no prefix), so only one service can be aggregated, yet this agent may reach several: serving none until it is one again", "services", names)
	return map[string]Service{}
}

// uriPrefix is the prefix of svc's aggregated resource URIs (resources.go):
// none under NoPrefix.
func (a *Aggregator) uriPrefix(svc string) string {
	if a.cfg.NoPrefix {
		return ""
	}
	return uriPrefix(svc)
}

// where says, after a service's heading in the instructions, under which
// names its tools, prompts and resources are: nothing under NoPrefix,
// where they keep their own.
func (a *Aggregator) where(svc string) string {
	if a.cfg.NoPrefix {
		return ""
	}
	return fmt.Sprintf(" (tools and prompts %s, resources %s*)", a.aggregatedName(svc, "*"), a.uriPrefix(svc))
}

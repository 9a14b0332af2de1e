package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tailscale/hujson"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// node_owners says which people, signed in through the coordinator's
// OpenID Connect issuer, may join nodes of which kinds and tags without an
// auth key ('agentmesh join --sso'), the way Tailscale's tagOwners does:
//
//	"node_owners": {
//	  "agent":        ["user:*"],
//	  "tool":         ["sso:platform"],
//	  "tag:payments": ["user:alice@example.com", "sso:payments-team"],
//	}
//
// A key is a node kind (agent, tool, model; an admin node is never joined
// this way) or a tag; its owners are user:EMAIL (one person), user:* (any
// person signed in) or sso:GROUP (a group from the issuer's groups claim).
// A person may join a node of kind K with tags T when K's list and every
// tag's list in T name them. A kind or tag not listed admits nobody.

// MaxOwners bounds the owners of one key.
const MaxOwners = 1000

type rawOwners struct {
	off  int
	keys []rawOwnerKey
}

type rawOwnerKey struct {
	key    str
	owners strList
}

func (d *decoder) nodeOwners(v *hujson.Value) *rawOwners {
	out := &rawOwners{off: v.StartOffset}
	d.object(v, "node_owners", func(name string, kv *hujson.Value) bool {
		l, ok := d.stringList(kv, "node_owners."+name)
		if ok {
			out.keys = append(out.keys, rawOwnerKey{key: str{name, memberOffset(v, name)}, owners: l})
		}
		return true
	})
	return out
}

// owners is the compiled section: each key's people and groups.
type owners struct {
	anyone bool
	users  map[string]bool
	groups map[string]bool
}

func (c *compiler) nodeOwners(raw *rawOwners) map[string]*owners {
	if raw == nil {
		return nil
	}
	out := make(map[string]*owners, len(raw.keys))
	for _, k := range raw.keys {
		path := "node_owners." + k.key.s
		if kind, err := identity.ParseKind(k.key.s); err == nil {
			if kind == identity.KindAdmin {
				c.d.fail(k.key.off, path, ErrInvalid, "an admin node cannot be joined with --sso; admin rights for people come from --sso-admin-group")
				continue
			}
		} else if _, err := identity.ParseTag(k.key.s); err != nil {
			c.d.fail(k.key.off, path, ErrInvalid, "key %q: want a node kind (agent, tool, model) or tag:NAME", k.key.s)
			continue
		}
		if len(k.owners.items) > MaxOwners {
			c.d.fail(k.owners.off, path, ErrInvalid, "more than %d owners", MaxOwners)
			continue
		}
		o := &owners{users: map[string]bool{}, groups: map[string]bool{}}
		for _, it := range k.owners.items {
			switch {
			case it.s == "user:*":
				o.anyone = true
			case strings.HasPrefix(it.s, "user:"):
				u, err := identity.ParseUser(strings.TrimPrefix(it.s, "user:"))
				if err != nil || "user:"+string(u) != it.s {
					c.d.fail(it.off, path, ErrInvalid, "owner %q: want user:EMAIL in lower case (%s), user:* or sso:GROUP", it.s, identity.UserRule)
					continue
				}
				o.users[string(u)] = true
			case strings.HasPrefix(it.s, "sso:") && validLogin(strings.TrimPrefix(it.s, "sso:")):
				o.groups[strings.TrimPrefix(it.s, "sso:")] = true
			default:
				c.d.fail(it.off, path, ErrInvalid, "owner %q: want user:EMAIL, user:* or sso:GROUP (a group of the issuer's groups claim)", it.s)
			}
		}
		out[k.key.s] = o
	}
	return out
}

func (o *owners) admits(user string, groups []string) bool {
	if o == nil {
		return false
	}
	if o.anyone || o.users[user] {
		return true
	}
	return slices.ContainsFunc(groups, func(g string) bool { return o.groups[g] })
}

// MayOwn reports whether the person user (an e-mail address, see
// identity.User) in the issuer's groups may join a node of kind with
// tags, under the node_owners section; why names what refused it.
func (p *Policy) MayOwn(user string, groups []string, kind identity.Kind, tags []identity.Tag) (ok bool, why string) {
	if p == nil || p.owners == nil {
		return false, "the policy has no node_owners section: nobody may join with --sso"
	}
	if kind == identity.KindAdmin || !p.owners[string(kind)].admits(user, groups) {
		return false, fmt.Sprintf("node_owners does not let user:%s join %s node", user, kind.WithArticle())
	}
	for _, t := range tags {
		if !p.owners[string(t)].admits(user, groups) {
			return false, fmt.Sprintf("node_owners does not let user:%s give a node %s", user, t)
		}
	}
	return true, ""
}

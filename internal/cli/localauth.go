package cli

import (
	"net"
	"strconv"

	"agentmesh/internal/identity"
	"agentmesh/internal/loopback"
	"agentmesh/internal/nodestate"
)

// localAuth decides how the local endpoint on ln admits its owner, says
// where it serves, and returns a function to call when it has stopped. A
// TCP endpoint gets a fresh bearer token, written with mode 0600 to the
// state directory (where only the owner can read it) and removed by done,
// unless noToken opts out; a Unix socket's file mode admits the owner, so
// it needs none.
func localAuth(env Env, state string, ln net.Listener, kind identity.Kind, service string, noToken bool) (loopback.Auth, func(), error) {
	path, what := "/mcp", ""
	if kind == identity.KindModel {
		path, what = "/v1", " (OPENAI_BASE_URL)"
	}
	tcp, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		printf(env.Stderr, "connect: serving %s at %s%s, HTTP path %s (only this user may open the socket)\n",
			service, loopback.UnixPrefix, ln.Addr(), path)
		return loopback.Auth{}, func() {}, nil
	}
	url := "http://" + ln.Addr().String() + path
	if noToken {
		printf(env.Stderr, "connect: serving %s at %s%s\n", service, url, what)
		printf(env.Stderr, "connect: warning: --no-token: every local user and process can act as this agent through %s\n", url)
		return loopback.Auth{NoToken: true}, func() {}, nil
	}
	if err := needState(state); err != nil {
		return loopback.Auth{}, nil, usagef("the endpoint's bearer token is written to the state directory: give --state DIR, or --listen unix:PATH, or --no-token")
	}
	dir, err := nodestate.Open(state)
	if err != nil {
		return loopback.Auth{}, nil, err
	}
	token, err := loopback.NewToken()
	if err != nil {
		return loopback.Auth{}, nil, err
	}
	port := strconv.Itoa(tcp.Port)
	file, err := dir.SaveLocalToken(port, token)
	if err != nil {
		return loopback.Auth{}, nil, err
	}
	done := func() {
		if err := dir.RemoveLocalToken(port); err != nil {
			printf(env.Stderr, "connect: %v\n", err)
		}
	}
	printf(env.Stderr, "connect: serving %s at %s%s\n", service, url, what)
	if kind == identity.KindModel {
		printf(env.Stderr, "connect: token in %s: send it as the API key (OPENAI_API_KEY=$(cat %s))\n", file, file)
	} else {
		printf(env.Stderr, "connect: token in %s: send it as Authorization: Bearer TOKEN\n", file)
	}
	return loopback.Auth{Token: token}, done, nil
}

package cli

import (
	"flag"

	"github.com/agentmesh/agentmesh/internal/engine"
)

// metricsFlags adds --metrics and --metrics-allow-remote, the Prometheus
// endpoint of the commands that serve.
func metricsFlags(fs *flag.FlagSet) *engine.MetricsConfig {
	mc := &engine.MetricsConfig{}
	fs.StringVar(&mc.Listen, "metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics (a loopback address such as 127.0.0.1:9464, unless --metrics-allow-remote)")
	fs.BoolVar(&mc.AllowRemote, "metrics-allow-remote", false, "allow a --metrics address that is not loopback: whoever reaches it reads the counters")
	return mc
}

// metricsUsage is the usage of metricsFlags.
const metricsUsage = "[--metrics ADDR [--metrics-allow-remote]]"

package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/agentmesh/agentmesh/internal/engine"
)

func init() {
	register(&command{
		name:  "alerts",
		usage: "check FILE [--send-test] [--json]",
		short: "check a coordinator's alerts file, and try its webhooks",
		long: `The alerts file is what 'agentmesh coordinator --alerts FILE' reads: webhooks, the alert kinds
each gets, thresholds (README, "Alerts"). check reads it as the coordinator would, secrets
included, and says what is wrong with each line, or what it configures (each receiver's URL is
shown as its scheme and host only; secrets never). --send-test also sends one signed alert of
kind "test" to every receiver, one attempt each, from this process (nothing is audited), and exits
1 unless every receiver answered 2xx.

Examples:
  agentmesh alerts check alerts.hujson
  agentmesh alerts check /etc/agentmesh/alerts.hujson --send-test`,
		subs: []*subcommand{
			{name: "check", usage: "FILE [--send-test] [--json]", short: "validate an alerts file; --send-test sends a test alert to each receiver", flags: alertsCheck},
		},
	})
}

// alertsCheckOutput is check's --json output.
type alertsCheckOutput struct {
	File string                   `json:"file"`
	Conf *engine.AlertsFile       `json:"config"`
	Sent []engine.AlertTestResult `json:"test,omitempty"`
}

func alertsCheck(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	send := fs.Bool("send-test", false, "send a signed test alert to every receiver")
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "FILE"); err != nil {
			return err
		}
		sum, cfg, err := engine.CheckAlerts(pos[0])
		if err != nil {
			return err
		}
		out := alertsCheckOutput{File: pos[0], Conf: sum}
		if *send {
			out.Sent = engine.SendTestAlert(ctx, cfg)
		}
		failed := 0
		for _, r := range out.Sent {
			if !r.Delivered {
				failed++
			}
		}
		if *asJSON {
			if err := printJSON(env.Stdout, out); err != nil {
				return err
			}
		} else {
			printAlertsCheck(env, out)
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d receivers did not take the test alert", failed, len(out.Sent))
		}
		return nil
	}
}

func printAlertsCheck(env Env, out alertsCheckOutput) {
	s := out.Conf
	fmt.Fprintf(env.Stdout, "%s: valid, %d receivers\n", out.File, len(s.Receivers))
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RECEIVER\tENDPOINT\tKINDS")
	for _, r := range s.Receivers {
		kinds := "every kind"
		if len(r.Kinds) > 0 {
			kinds = strings.Join(r.Kinds, ", ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Endpoint, kinds)
	}
	tw.Flush()
	margin := "a quarter of --cert-ttl"
	if s.RenewalMargin > 0 {
		margin = s.RenewalMargin.String()
	}
	verify := "only when asked"
	if s.VerifyEvery > 0 {
		verify = "every " + s.VerifyEvery.String()
	}
	fmt.Fprintf(env.Stdout, "denials alert at %d a minute from one source; spool backlog at %v; renewal margin %s; audit verify %s\n",
		s.DenialsPerMinute, s.SpoolBacklog, margin, verify)
	for _, r := range out.Sent {
		switch {
		case r.Delivered:
			fmt.Fprintf(env.Stdout, "test alert: %s took it (HTTP %d)\n", r.Receiver, r.Status)
		default:
			fmt.Fprintf(env.Stdout, "test alert: %s did not take it: %s\n", r.Receiver, r.Error)
		}
	}
}

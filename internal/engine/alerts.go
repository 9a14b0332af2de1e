package engine

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/agentmesh/agentmesh/internal/alert"
)

// AlertsConfig is a parsed alerts file, secrets included; see
// alert.Config.
type AlertsConfig = alert.Config

// AlertsFile is what an alerts file (coordinator --alerts) configures, as
// 'agentmesh alerts check' shows it: no secret, and of each receiver's URL
// only its scheme and host (webhook services often put a token in the
// path).
type AlertsFile struct {
	Receivers []AlertReceiver `json:"receivers"`
	// Thresholds; RenewalMargin 0 means a quarter of the certificate
	// lifetime, VerifyEvery 0 no periodic verification.
	DenialsPerMinute int           `json:"denials_per_minute"`
	SpoolBacklog     time.Duration `json:"spool_backlog_ns"`
	RenewalMargin    time.Duration `json:"renewal_margin_ns"`
	VerifyEvery      time.Duration `json:"verify_every_ns"`
}

// AlertReceiver is one webhook of an alerts file.
type AlertReceiver struct {
	Name string `json:"name"`
	// Endpoint is the URL's scheme and host.
	Endpoint string `json:"endpoint"`
	// Kinds it gets; empty means every kind.
	Kinds []string `json:"kinds,omitempty"`
}

// AlertTestResult is one receiver's answer to a test alert.
type AlertTestResult struct {
	Receiver  string `json:"receiver"`
	Delivered bool   `json:"delivered"`
	Status    int    `json:"status,omitempty"`
	Error     string `json:"error,omitempty"`
}

// CheckAlerts reads and validates an alerts file as the coordinator
// would at start, secrets included. A problem in it wraps ErrConfig,
// each with its line.
func CheckAlerts(path string) (*AlertsFile, *AlertsConfig, error) {
	cfg, err := alert.Load(path)
	var ce *alert.ConfigError
	if errors.As(err, &ce) {
		return nil, nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err != nil {
		return nil, nil, err
	}
	out := &AlertsFile{DenialsPerMinute: cfg.Thresholds.DenialsPerMinute, SpoolBacklog: cfg.Thresholds.SpoolBacklog,
		RenewalMargin: cfg.Thresholds.RenewalMargin, VerifyEvery: cfg.Thresholds.VerifyEvery}
	for _, r := range cfg.Receivers {
		ar := AlertReceiver{Name: r.Name}
		if u, err := url.Parse(r.URL); err == nil {
			ar.Endpoint = u.Scheme + "://" + u.Host
		}
		for _, k := range r.Kinds {
			ar.Kinds = append(ar.Kinds, string(k))
		}
		out.Receivers = append(out.Receivers, ar)
	}
	return out, cfg, nil
}

// SendTestAlert sends one signed alert of kind "test" to every receiver
// of cfg, one attempt each, and returns each one's answer. It is sent
// from this process, not through a coordinator: nothing is claimed or
// audited.
func SendTestAlert(ctx context.Context, cfg *AlertsConfig) []AlertTestResult {
	results := make(chan alert.Attempt, len(cfg.Receivers))
	s := alert.NewSender(cfg.Receivers, alert.Options{MaxAttempts: 1, Timeout: cfg.Delivery.Timeout,
		OnAttempt: func(a alert.Attempt) { results <- a }})
	a := alert.New(alert.Test, "test", "a test alert from 'agentmesh alerts check --send-test'", time.Now())
	a.Coordinator = "agentmesh alerts check"
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	s.Send(a)
	got := map[string]AlertTestResult{}
	for len(got) < len(cfg.Receivers) {
		select {
		case at := <-results:
			r := AlertTestResult{Receiver: at.Receiver, Delivered: at.Delivered(), Status: at.Status}
			if at.Err != nil {
				r.Error = at.Err.Error()
			}
			got[at.Receiver] = r
		case <-ctx.Done():
			for _, rc := range cfg.Receivers {
				if _, ok := got[rc.Name]; !ok {
					got[rc.Name] = AlertTestResult{Receiver: rc.Name, Error: ctx.Err().Error()}
				}
			}
		}
	}
	var out []AlertTestResult
	for _, rc := range cfg.Receivers {
		out = append(out, got[rc.Name])
	}
	return out
}

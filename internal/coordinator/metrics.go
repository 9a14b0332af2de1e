package coordinator

import "context"

// serveMetrics serves Config.Metrics on Config.MetricsListener, when set,
// until ctx ends (Close waits for it through c.wg).
func (c *Coordinator) serveMetrics(ctx context.Context) {
	ln := c.cfg.MetricsListener
	if ln == nil || c.cfg.Metrics == nil {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.cfg.Metrics.Serve(ctx, ln); err != nil {
			c.log.Error("coordinator: serving metrics", "err", err)
		}
	}()
}

// MetricsAddr is the address metrics are served at ("" when they are not).
func (c *Coordinator) MetricsAddr() string {
	if c.cfg.MetricsListener == nil {
		return ""
	}
	return c.cfg.MetricsListener.Addr().String()
}

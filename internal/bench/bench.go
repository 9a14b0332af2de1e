package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/internal/httpserver"
)

// Components run the product's data plane. The CLI supplies the functions
// behind 'agentmesh serve' and 'agentmesh connect'.
type Components struct {
	// Gateway serves the tool node whose state directory is state in front
	// of the Streamable HTTP MCP server at upstream until ctx ends, calling
	// ready with its listening address once it serves.
	Gateway func(ctx context.Context, state, upstream string, ready func(addr string)) error
	// Connector relays MCP from ln (which it closes) to service's gateway
	// with the identity of the agent node in state, until ctx ends.
	Connector func(ctx context.Context, state, service string, ln net.Listener) error
}

// Layouts: where the components run.
const (
	// LayoutDeployed runs every component as its own OS process, as the
	// README deploys them: the coordinator, gateway and connector are
	// the agentmesh binary (Config.Executable), the upstream and every
	// comparison proxy hop are that binary in a hidden role (RunRole),
	// nginx is nginx; only the client runs in the bench process.
	LayoutDeployed = "deployed"
	// LayoutInProcess runs the coordinator, gateway, connector, upstream
	// and Go proxies in the bench process (nginx stays a child): a
	// breakdown that leaves out the cost of crossing processes.
	LayoutInProcess = "inprocess"
)

// Config configures Run. The zero value of each field means its default.
type Config struct {
	// Layout is LayoutDeployed (the default) or LayoutInProcess.
	Layout string
	// Executable is the agentmesh binary that runs the components as
	// deployed; required for LayoutDeployed.
	Executable string
	// Components run the gateway and connector in process; required for
	// LayoutInProcess.
	Components Components
	// ProfileDir, when set, receives CPU profiles of the gateway and
	// connector processes (gateway.prof, connector.prof) as deployed.
	ProfileDir string
	// ChildEnv is extra environment (NAME=VALUE) for the gateway and
	// connector processes, for experiments such as GOGC or GOMAXPROCS.
	ChildEnv []string
	// CompareEnv, when set (deployed layout), adds the column
	// ColAgentmeshEnv: a second gateway and connector whose processes get
	// this extra environment, measured in the same rounds as agentmesh.
	CompareEnv []string
	// Scenarios to run, by name (Scenarios lists them); empty runs all.
	Scenarios []string
	// Quick runs every path with small counts: a smoke test that checks
	// that everything works and counts, not timings.
	Quick bool
	// Columns restricts the endpoint columns (ColDirect, ...) that run;
	// empty runs all. Useful with a CPU profile of one path.
	Columns []string
	// Gateways is the number of gateways of the policy scenario (100, or
	// 5 when Quick).
	Gateways int
	// Sessions is the number of idle sessions of the memory scenario
	// (1,000, or 20 when Quick).
	Sessions int
	// NginxPath is the nginx binary; "" looks up nginx in PATH and /usr/sbin.
	NginxPath string
	// Dir is the work directory; "" uses a temporary one, removed at the end.
	Dir string
	// Progress receives one line per step; nil discards.
	Progress io.Writer
	// Logger receives the components' logs; nil discards.
	Logger *slog.Logger
}

// Scenario is one measurement.
type Scenario struct {
	Name  string
	Title string
	run   func(ctx context.Context, r *runner, s *Result) error
}

// Scenarios lists the scenarios in the order Run runs them.
func Scenarios() []Scenario {
	return []Scenario{
		{"latency", "tools/call latency, sequential", scenarioLatency},
		{"aggregate", "tools/call through connect --all vs connect SERVICE", scenarioAggregate},
		{"work", "tools/call that does 10 ms of work", scenarioWork},
		{"throughput", "tools/call throughput at concurrency 1, 16 and 64", scenarioThroughput},
		{"session", "new session setup (connection + initialize)", scenarioSession},
		{"policy", "policy apply -> enforced on every gateway", scenarioPolicy},
		{"policy-procs", "policy apply -> enforced on every gateway process", scenarioPolicyProcs},
		{"join", "joins per second", scenarioJoin},
		{"audit", "audit ingest per second", scenarioAudit},
		{"resource", "large resource read", scenarioResource},
		{"memory", "memory per idle session", scenarioMemory},
	}
}

// Column names, in the order tables print them.
const (
	ColDirect    = "direct"
	ColHTTPUtil  = "httputil"
	ColGoChain   = "go-chain"
	ColNginx     = "nginx-chain"
	ColAgentmesh = "agentmesh"
	// ColLibrary is the zero-hop path: a tool server serving with the
	// gateway's enforcement in its own process (mesh.Node.Serve), the
	// client dialing it as a library agent (mesh.Node.HTTPClient).
	ColLibrary = "library"
	// ColAgentmeshEnv is the agentmesh column run with Config.CompareEnv.
	ColAgentmeshEnv = "agentmesh+env"
)

// Report is the outcome of Run.
type Report struct {
	Machine Machine `json:"machine"`
	Command string  `json:"command,omitempty"`
	// Layout is LayoutDeployed or LayoutInProcess.
	Layout string `json:"layout"`
	// Processes lists every process the bench started (the bench's own
	// is BenchPID), all stopped by the time Run returns.
	Processes []Process `json:"processes"`
	BenchPID  int       `json:"bench_pid"`
	Quick     bool      `json:"quick"`
	Started   time.Time `json:"started"`
	Duration  string    `json:"duration"`
	Scenarios []*Result `json:"scenarios"`
}

// Machine describes where the figures come from.
type Machine struct {
	CPU       string `json:"cpu"`
	CPUs      int    `json:"cpus"`
	OS        string `json:"os"`
	GoVersion string `json:"go"`
	Nginx     string `json:"nginx"`
}

// Result is one scenario's table: rows of metrics, one value per column.
type Result struct {
	Name    string   `json:"name"`
	Title   string   `json:"title"`
	Columns []string `json:"columns"`
	Rows    []Row    `json:"rows"`
	Goals   []Goal   `json:"goals,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	// Calls and Failed count every operation the scenario made.
	Calls  int64  `json:"calls"`
	Failed int64  `json:"failed"`
	Error  string `json:"error,omitempty"`
}

// Row is one metric. A nil value is a column that did not run (see Notes).
type Row struct {
	Metric string     `json:"metric"`
	Unit   string     `json:"unit"`
	Values []*float64 `json:"values"`
	// LowerIsBetter orients the ratios printed beside the values.
	LowerIsBetter bool `json:"lower_is_better"`
}

// Goal is one target of issue 8 checked against this run's figures.
type Goal struct {
	Text     string `json:"text"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

func (s *Result) row(metric, unit string, lower bool, vals map[string]float64) {
	r := Row{Metric: metric, Unit: unit, LowerIsBetter: lower}
	for _, c := range s.Columns {
		if v, ok := vals[c]; ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			r.Values = append(r.Values, &v)
		} else {
			r.Values = append(r.Values, nil)
		}
	}
	s.Rows = append(s.Rows, r)
}

func (s *Result) goal(met bool, text, format string, a ...any) {
	s.Goals = append(s.Goals, Goal{Text: text, Measured: fmt.Sprintf(format, a...), Met: met})
}

func (s *Result) note(format string, a ...any) { s.Notes = append(s.Notes, fmt.Sprintf(format, a...)) }

// Run runs the scenarios and returns their report. A scenario that fails
// records its error in its Result and the others still run; the error
// returned is the first of them, or ErrLostCalls if calls failed.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	switch cfg.Layout {
	case "", LayoutDeployed:
		cfg.Layout = LayoutDeployed
		if cfg.Executable == "" {
			return nil, ErrNoComponents
		}
	case LayoutInProcess:
		if cfg.Components.Gateway == nil || cfg.Components.Connector == nil {
			return nil, ErrNoComponents
		}
	default:
		return nil, fmt.Errorf("%w %q (%s or %s)", ErrUnknownLayout, cfg.Layout, LayoutDeployed, LayoutInProcess)
	}
	all := Scenarios()
	var todo []Scenario
	if len(cfg.Scenarios) == 0 {
		todo = all
	}
	for _, name := range cfg.Scenarios {
		i := slices.IndexFunc(all, func(s Scenario) bool { return s.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("%w %q (one of %s)", ErrUnknownScenario, name, strings.Join(ScenarioNames(), ", "))
		}
		todo = append(todo, all[i])
	}
	if cfg.Gateways <= 0 {
		cfg.Gateways = pick(cfg.Quick, 5, 100)
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = pick(cfg.Quick, 20, 1000)
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "agentmesh-bench-")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	rep := &Report{BenchPID: os.Getpid(), Machine: machine(cfg.NginxPath), Layout: cfg.Layout, Quick: cfg.Quick, Started: time.Now().UTC()}
	r := &runner{cfg: cfg, dir: dir, log: cfg.Logger}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		r.stop()
	}()
	r.progress("starting the upstream, proxies, nginx and the mesh (layout %s) in %s", cfg.Layout, dir)
	err := r.start(ctx)
	rep.Processes = r.processes()
	if err != nil {
		return rep, fmt.Errorf("bench: start: %w", err)
	}
	var first error
	for _, sc := range todo {
		if ctx.Err() != nil {
			break
		}
		res := &Result{Name: sc.Name, Title: sc.Title}
		r.progress("scenario %s: %s", sc.Name, sc.Title)
		start := time.Now()
		if err := sc.run(ctx, r, res); err != nil {
			res.Error = err.Error()
			if first == nil {
				first = fmt.Errorf("bench: %s: %w", sc.Name, err)
			}
		}
		if res.Failed > 0 && first == nil {
			first = fmt.Errorf("%w: %d of %d in %s", ErrLostCalls, res.Failed, res.Calls, sc.Name)
		}
		r.progress("  done in %v", time.Since(start).Round(time.Millisecond))
		rep.Scenarios = append(rep.Scenarios, res)
	}
	rep.Processes = r.processes()
	rep.Duration = time.Since(rep.Started).Round(time.Millisecond).String()
	if first == nil {
		first = ctx.Err()
	}
	return rep, first
}

// ScenarioNames lists the scenario names.
func ScenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	return out
}

func pick[T any](quick bool, q, full T) T {
	if quick {
		return q
	}
	return full
}

func machine(nginxPath string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, GoVersion: runtime.Version(), Nginx: "not installed"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if p := findNginx(nginxPath); p != "" {
		out, _ := exec.Command(p, "-v").CombinedOutput()
		m.Nginx = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version:"))
	}
	return m
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteText writes the report as tables for people, with the ratio of
// agentmesh to the direct baseline and to the nginx chain.
func (rep *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "agentmesh bench: %s, %d CPUs, %s, %s, nginx %s%s\n", rep.Machine.CPU, rep.Machine.CPUs, rep.Machine.OS,
		rep.Machine.GoVersion, rep.Machine.Nginx, map[bool]string{true: " (quick: a smoke run, figures are not meaningful)"}[rep.Quick])
	switch rep.Layout {
	case LayoutDeployed:
		fmt.Fprintf(w, "layout: deployed, one OS process per component (bench/client pid %d):", rep.BenchPID)
		for _, p := range rep.Processes {
			fmt.Fprintf(w, " %s %d,", p.Role, p.PID)
		}
		fmt.Fprintln(w, " the policy, join and audit scenarios on an in-process coordinator")
	case LayoutInProcess:
		fmt.Fprintln(w, "layout: IN-PROCESS BREAKDOWN: coordinator, gateway, connector, upstream and Go proxies share the bench process; not the deployed figures")
	}
	for _, s := range rep.Scenarios {
		fmt.Fprintf(w, "\n== %s: %s (%d operations, %d failed)\n", s.Name, s.Title, s.Calls, s.Failed)
		if s.Error != "" {
			fmt.Fprintf(w, "   ERROR: %s\n", s.Error)
		}
		if len(s.Rows) > 0 {
			tw := tabwriter.NewWriter(w, 4, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprint(tw, "metric\t")
			for _, c := range s.Columns {
				fmt.Fprintf(tw, "%s\t", c)
			}
			am, dir, ngx := slices.Index(s.Columns, ColAgentmesh), slices.Index(s.Columns, ColDirect), slices.Index(s.Columns, ColNginx)
			ratios := am >= 0 && (dir >= 0 || ngx >= 0)
			if ratios {
				fmt.Fprint(tw, "am/direct\tam/nginx\t")
			}
			env := slices.Index(s.Columns, ColAgentmeshEnv)
			if env >= 0 {
				fmt.Fprint(tw, "env/am\t")
			}
			agg := slices.Index(s.Columns, ColAggregate)
			if agg >= 0 {
				fmt.Fprint(tw, "all/am\t")
			}
			fmt.Fprintln(tw)
			for _, row := range s.Rows {
				fmt.Fprintf(tw, "%s (%s)\t", row.Metric, row.Unit)
				for _, v := range row.Values {
					fmt.Fprintf(tw, "%s\t", fmtValue(v))
				}
				if ratios {
					fmt.Fprintf(tw, "%s\t%s\t", ratio(row, am, dir), ratio(row, am, ngx))
				}
				if env >= 0 {
					fmt.Fprintf(tw, "%s\t", ratio(row, env, am))
				}
				if agg >= 0 {
					fmt.Fprintf(tw, "%s\t", ratio(row, agg, am))
				}
				fmt.Fprintln(tw)
			}
			tw.Flush()
		}
		for _, g := range s.Goals {
			mark := "MET "
			if !g.Met {
				mark = "MISS"
			}
			fmt.Fprintf(w, "   goal %s  %s: %s\n", mark, g.Text, g.Measured)
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "   note: %s\n", n)
		}
	}
	fmt.Fprintf(w, "\ntotal %s\n", rep.Duration)
	return nil
}

func fmtValue(v *float64) string {
	switch {
	case v == nil:
		return "n/a"
	case *v >= 100 || *v == math.Trunc(*v):
		return fmt.Sprintf("%.0f", *v)
	case *v >= 10:
		return fmt.Sprintf("%.1f", *v)
	default:
		return fmt.Sprintf("%.2f", *v)
	}
}

func ratio(row Row, a, b int) string {
	if a < 0 || b < 0 || row.Values[a] == nil || row.Values[b] == nil || *row.Values[b] == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", *row.Values[a] / *row.Values[b])
}

// runner holds what the scenarios share and stops it all at the end.
type runner struct {
	cfg Config
	dir string
	log *slog.Logger

	up      *upstream
	pki     *chainPKI
	columns []column // the MCP endpoints, direct first
	mesh    *mesh    // controlMesh's, nil until first used
	dmesh   *mesh    // dataMesh's as deployed
	spawner spawner

	mu       sync.Mutex
	stops    []func()
	wg       sync.WaitGroup
	children []*proc   // in start order
	procs    []Process // the same, for the report
}

func (r *runner) deployed() bool { return r.cfg.Layout == LayoutDeployed }

func (r *runner) processes() []Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.procs)
}

func (r *runner) progress(format string, a ...any) {
	fmt.Fprintf(r.cfg.Progress, "bench: "+format+"\n", a...)
}

// onStop registers f to run, in reverse order, when the bench ends.
func (r *runner) onStop(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stops = append(r.stops, f)
}

// serve runs hs on ln until the runner stops.
func (r *runner) serve(hs *http.Server, ln net.Listener) {
	ctx, stop := context.WithCancel(context.Background())
	r.goStop(func() { httpserver.Run(ctx, hs, ln) })
	r.onStop(stop)
}

// goStop runs f in a goroutine owned by the runner.
func (r *runner) goStop(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

func (r *runner) stop() {
	r.mu.Lock()
	stops := r.stops
	r.stops = nil
	r.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	r.wg.Wait()
}

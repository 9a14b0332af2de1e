package alert

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tailscale/hujson"
)

// Limits on a configuration file.
const (
	MaxConfigBytes = 1 << 20
	MaxReceivers   = 64
)

// Config is a parsed alerts file: where alerts go and when they fire.
type Config struct {
	Receivers  []Receiver
	Thresholds Thresholds
	Delivery   Delivery
}

// Thresholds say when alerts fire. Zero fields are defaults (see each).
type Thresholds struct {
	// DenialsPerMinute: a denials alert fires when one source is denied
	// this often within a sliding minute (default 20).
	DenialsPerMinute int
	// SpoolBacklog: a spool_backlog alert fires when a node ships events
	// older than this on arrival (default 10m).
	SpoolBacklog time.Duration
	// RenewalMargin: a renewal_failing alert fires when a node's
	// certificate expires within this and it has not renewed (default a
	// quarter of the certificate lifetime, when it is not set).
	RenewalMargin time.Duration
	// VerifyEvery, when positive, has the coordinator verify the audit
	// trail this often (an audit_verify alert on a problem); zero: only
	// verifications someone asks for ('agentmesh audit verify').
	VerifyEvery time.Duration
}

// Delivery bounds deliveries; zero fields are the Options defaults.
type Delivery struct {
	MaxAttempts int
	Timeout     time.Duration
	QueueSize   int
}

// Defaults of Thresholds.
const (
	DefaultDenialsPerMinute = 20
	DefaultSpoolBacklog     = 10 * time.Minute
)

// ConfigError is one problem in a configuration file, with its place.
type ConfigError struct {
	File         string
	Line, Column int // 0 when the problem has no place
	Path         string
	Msg          string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
	} else {
		b.WriteString("alerts")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Env reads the environment and files for Parse: the receivers' secrets.
type Env struct {
	Getenv   func(string) string
	ReadFile func(string) ([]byte, error)
	Stat     func(string) (os.FileInfo, error)
}

// Load reads and parses the file at path, reading secrets from the real
// environment and file system.
func Load(path string) (*Config, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	return Parse(path, doc, Env{Getenv: os.Getenv, ReadFile: os.ReadFile, Stat: os.Stat})
}

// Parse parses an alerts file (HuJSON). name names it in errors. Every
// problem found is returned (errors.Join of *ConfigError), each with its
// line when it has one.
func Parse(name string, doc []byte, env Env) (*Config, error) {
	d := &cdec{name: name, doc: doc, env: env}
	if len(doc) > MaxConfigBytes {
		d.fail(-1, "", "file is %d bytes, more than the limit of %d", len(doc), MaxConfigBytes)
		return nil, d.err()
	}
	root, err := hujson.Parse(doc)
	if err != nil {
		e := &ConfigError{File: name, Msg: err.Error()}
		var line, col int
		if _, serr := fmt.Sscanf(err.Error(), "hujson: line %d, column %d:", &line, &col); serr == nil {
			e.Line, e.Column = line, col
		}
		return nil, e
	}
	cfg := &Config{}
	d.object(&root, "", map[string]func(*hujson.Value, string){
		"receivers": func(v *hujson.Value, path string) {
			d.array(v, path, func(ev *hujson.Value, ep string) {
				if len(cfg.Receivers) >= MaxReceivers {
					d.fail(ev.StartOffset, ep, "more than %d receivers", MaxReceivers)
					return
				}
				if r, ok := d.receiver(ev, ep); ok {
					for _, o := range cfg.Receivers {
						if o.Name == r.Name {
							d.fail(ev.StartOffset, ep, "a second receiver named %q", r.Name)
							return
						}
					}
					cfg.Receivers = append(cfg.Receivers, r)
				}
			})
		},
		"thresholds": func(v *hujson.Value, path string) {
			t := &cfg.Thresholds
			d.object(v, path, map[string]func(*hujson.Value, string){
				"denials_per_minute": func(v *hujson.Value, p string) { t.DenialsPerMinute = int(d.count(v, p, 1, 1_000_000)) },
				"spool_backlog":      func(v *hujson.Value, p string) { t.SpoolBacklog = d.duration(v, p, time.Second, 30*24*time.Hour) },
				"renewal_margin":     func(v *hujson.Value, p string) { t.RenewalMargin = d.duration(v, p, time.Second, 24*time.Hour) },
				"verify_every":       func(v *hujson.Value, p string) { t.VerifyEvery = d.duration(v, p, time.Minute, 30*24*time.Hour) },
			})
		},
		"delivery": func(v *hujson.Value, path string) {
			dl := &cfg.Delivery
			d.object(v, path, map[string]func(*hujson.Value, string){
				"max_attempts": func(v *hujson.Value, p string) { dl.MaxAttempts = int(d.count(v, p, 1, 20)) },
				"timeout":      func(v *hujson.Value, p string) { dl.Timeout = d.duration(v, p, 100*time.Millisecond, 2*time.Minute) },
				"queue":        func(v *hujson.Value, p string) { dl.QueueSize = int(d.count(v, p, 1, 100_000)) },
			})
		},
	})
	if err := d.err(); err != nil {
		return nil, err
	}
	if len(cfg.Receivers) == 0 {
		return nil, &ConfigError{File: name, Msg: "no receivers: add at least one to \"receivers\""}
	}
	if cfg.Thresholds.DenialsPerMinute == 0 {
		cfg.Thresholds.DenialsPerMinute = DefaultDenialsPerMinute
	}
	if cfg.Thresholds.SpoolBacklog == 0 {
		cfg.Thresholds.SpoolBacklog = DefaultSpoolBacklog
	}
	return cfg, nil
}

// receiver decodes one receiver and reads its secret.
func (d *cdec) receiver(v *hujson.Value, path string) (Receiver, bool) {
	var r Receiver
	var secretFile, secretEnv string
	var urlOff, secretOff int
	before := len(d.errs)
	ok := d.object(v, path, map[string]func(*hujson.Value, string){
		"name": func(v *hujson.Value, p string) {
			r.Name = d.str(v, p)
			if r.Name != "" && !validName(r.Name) {
				d.fail(v.StartOffset, p, "a name is 1 to 64 letters, digits, '-', '_' or '.'")
			}
		},
		"url":         func(v *hujson.Value, p string) { urlOff = v.StartOffset; r.URL = d.str(v, p) },
		"secret_file": func(v *hujson.Value, p string) { secretOff = v.StartOffset; secretFile = d.str(v, p) },
		"secret_env":  func(v *hujson.Value, p string) { secretOff = v.StartOffset; secretEnv = d.str(v, p) },
		"kinds": func(v *hujson.Value, p string) {
			if arr, ok := v.Value.(*hujson.Array); ok && len(arr.Elements) == 0 {
				d.fail(v.StartOffset, p, "an empty list would send nothing; leave \"kinds\" out for every kind")
				return
			}
			d.array(v, p, func(ev *hujson.Value, ep string) {
				if s := d.str(ev, ep); s != "" {
					k, err := ParseKind(s)
					if err != nil {
						d.fail(ev.StartOffset, ep, "%v", err)
						return
					}
					r.Kinds = append(r.Kinds, k)
				}
			})
		},
	})
	if !ok || len(d.errs) > before {
		return r, false
	}
	if r.Name == "" {
		d.fail(v.StartOffset, path, "a receiver needs a \"name\"")
	}
	if r.URL == "" {
		d.fail(v.StartOffset, path, "a receiver needs a \"url\"")
	} else if msg := checkURL(r.URL); msg != "" {
		d.fail(urlOff, join(path, "url"), "%s", msg)
	}
	switch {
	case secretFile != "" && secretEnv != "":
		d.fail(secretOff, path, "give \"secret_file\" or \"secret_env\", not both")
	case secretFile == "" && secretEnv == "":
		d.fail(v.StartOffset, path, "a receiver needs a secret: \"secret_file\" (a file of mode 600) or \"secret_env\" (an environment variable's name)")
	default:
		s, msg := d.secret(secretFile, secretEnv)
		if msg != "" {
			d.fail(secretOff, path, "%s", msg)
		}
		r.Secret = s
	}
	return r, len(d.errs) == before
}

// secret reads a receiver's secret. Messages never include it.
func (d *cdec) secret(file, env string) ([]byte, string) {
	var s []byte
	if file != "" {
		if d.env.Stat != nil {
			if fi, err := d.env.Stat(file); err == nil && fi.Mode().Perm()&0o077 != 0 {
				return nil, fmt.Sprintf("secret file %s is readable by other users; run: chmod 600 %s", file, file)
			}
		}
		if d.env.ReadFile == nil {
			return nil, "secret files cannot be read here"
		}
		b, err := d.env.ReadFile(file)
		if err != nil {
			return nil, fmt.Sprintf("secret file: %v", err)
		}
		s = bytes.TrimSpace(b)
	} else {
		if d.env.Getenv != nil {
			s = []byte(strings.TrimSpace(d.env.Getenv(env)))
		}
		if len(s) == 0 {
			return nil, fmt.Sprintf("environment variable %s is not set or empty", env)
		}
	}
	if len(s) < MinSecret {
		return nil, fmt.Sprintf("the secret is %d bytes; use at least %d (for example: openssl rand -hex 32)", len(s), MinSecret)
	}
	return s, ""
}

// checkURL says what is wrong with a receiver URL, or "". Plain http is
// allowed only to loopback: anywhere else the alert would cross the
// network readable (the signature protects its integrity, not its
// content).
func checkURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "not a URL"
	}
	if u.User != nil {
		return "credentials in the URL are not allowed; use the signature secret"
	}
	if u.Host == "" {
		return "the URL has no host"
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopbackHost(u.Hostname()) {
			return "http is allowed only to a loopback address (127.0.0.1, ::1, localhost); use https"
		}
	default:
		return "the URL must be https:// (or http:// to loopback)"
	}
	return ""
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

func validName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// cdec walks a parsed HuJSON tree strictly, collecting errors.
type cdec struct {
	name string
	doc  []byte
	env  Env
	errs []error
}

const maxErrors = 20

func (d *cdec) fail(off int, path, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	e := &ConfigError{File: d.name, Path: path, Msg: fmt.Sprintf(format, args...)}
	if off >= 0 && off <= len(d.doc) {
		e.Line = 1 + bytes.Count(d.doc[:off], []byte("\n"))
		e.Column = 1 + off - (bytes.LastIndexByte(d.doc[:off], '\n') + 1)
	}
	d.errs = append(d.errs, e)
}

func (d *cdec) err() error { return errors.Join(d.errs...) }

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// object decodes an object whose fields are those of fields, refusing
// unknown and duplicate keys.
func (d *cdec) object(v *hujson.Value, path string, fields map[string]func(*hujson.Value, string)) bool {
	obj, ok := v.Value.(*hujson.Object)
	if !ok {
		d.fail(v.StartOffset, path, "want an object")
		return false
	}
	seen := map[string]bool{}
	for i := range obj.Members {
		m := &obj.Members[i]
		lit, _ := m.Name.Value.(hujson.Literal)
		name := lit.String()
		p := join(path, name)
		f, known := fields[name]
		switch {
		case !known:
			d.fail(m.Name.StartOffset, p, "unknown field %q", name)
		case seen[name]:
			d.fail(m.Name.StartOffset, p, "duplicate field %q", name)
		default:
			seen[name] = true
			f(&m.Value, p)
		}
	}
	return true
}

func (d *cdec) array(v *hujson.Value, path string, elem func(*hujson.Value, string)) {
	arr, ok := v.Value.(*hujson.Array)
	if !ok {
		d.fail(v.StartOffset, path, "want an array")
		return
	}
	for i := range arr.Elements {
		elem(&arr.Elements[i], fmt.Sprintf("%s[%d]", path, i))
	}
}

func (d *cdec) str(v *hujson.Value, path string) string {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '"' {
		d.fail(v.StartOffset, path, "want a string")
		return ""
	}
	s := lit.String()
	if s == "" {
		d.fail(v.StartOffset, path, "empty string")
	}
	return s
}

func (d *cdec) count(v *hujson.Value, path string, lo, hi int64) int64 {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '0' {
		d.fail(v.StartOffset, path, "want a number")
		return 0
	}
	n := lit.Int()
	if lit.Float() != float64(n) || n < lo || n > hi {
		d.fail(v.StartOffset, path, "want a whole number from %d to %d", lo, hi)
		return 0
	}
	return n
}

func (d *cdec) duration(v *hujson.Value, path string, lo, hi time.Duration) time.Duration {
	s := d.str(v, path)
	if s == "" {
		return 0
	}
	t, err := time.ParseDuration(s)
	if err != nil || t < lo || t > hi {
		d.fail(v.StartOffset, path, "want a duration from %v to %v, such as \"10m\"", lo, hi)
		return 0
	}
	return t
}

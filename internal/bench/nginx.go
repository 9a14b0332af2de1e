package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func findNginx(path string) string {
	if path != "" {
		return path
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// nginxConf is the two-hop chain: hop 1 takes plain HTTP on loopback (like
// the connector) and proxies over TLS 1.3 with a client certificate to hop
// 2, which requires and verifies it and proxies to the upstream. Both keep
// upstream connections alive and stream responses (no buffering), which
// MCP's server-sent events need.
const nginxConf = `daemon off;
master_process on;
worker_processes auto;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path {{dir}}/body;
  proxy_temp_path {{dir}}/proxy;
  fastcgi_temp_path {{dir}}/fastcgi;
  uwsgi_temp_path {{dir}}/uwsgi;
  scgi_temp_path {{dir}}/scgi;
  client_max_body_size 64m;
  upstream mcp_upstream { server {{upstream}}; keepalive 256; }
  upstream hop2 { server 127.0.0.1:{{port2}}; keepalive 256; }
  server {
    listen 127.0.0.1:{{port1}};
    location / {
      proxy_pass https://hop2;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_certificate {{clientCert}};
      proxy_ssl_certificate_key {{clientKey}};
      proxy_ssl_trusted_certificate {{ca}};
      proxy_ssl_verify on;
      proxy_ssl_name ` + chainServerName + `;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }
  }
  server {
    listen 127.0.0.1:{{port2}} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate {{serverCert}};
    ssl_certificate_key {{serverKey}};
    ssl_client_certificate {{ca}};
    ssl_verify_client on;
    keepalive_requests 100000;
    location / {
      proxy_pass http://mcp_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
    }
  }
}
`

// startNginx runs the nginx chain as a child process and returns its MCP
// endpoint, or "" and the reason it could not.
func (r *runner) startNginx(ctx context.Context, p *chainPKI) (string, string) {
	bin := findNginx(r.cfg.NginxPath)
	if bin == "" {
		return "", "nginx is not installed (apt-get install nginx-light)"
	}
	dir := filepath.Join(r.dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err.Error()
	}
	port1, err1 := freePort()
	port2, err2 := freePort()
	if err1 != nil || err2 != nil {
		return "", fmt.Sprintf("no free port: %v %v", err1, err2)
	}
	conf := strings.NewReplacer("{{dir}}", dir, "{{upstream}}", hostOf(r.up.url), "{{port1}}", port1, "{{port2}}", port2,
		"{{clientCert}}", p.clientCert, "{{clientKey}}", p.clientKey, "{{ca}}", p.caFile,
		"{{serverCert}}", p.serverCert, "{{serverKey}}", p.serverKey).Replace(nginxConf)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return "", err.Error()
	}
	// nginx workers run as nobody when started as root: they must read the
	// keys and write the temp directories.
	os.Chmod(r.dir, 0o755)
	for _, f := range []string{p.caFile, p.clientCert, p.clientKey, p.serverCert, p.serverKey} {
		os.Chmod(f, 0o644)
	}
	ngx, err := r.launch("nginx", nil, bin, "-p", dir, "-c", confFile, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		return "", fmt.Sprintf("nginx did not start: %v", err)
	}
	// Ready when both ports accept connections.
	deadline := time.Now().Add(10 * time.Second)
	for _, port := range []string{port1, port2} {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-ngx.exited:
				log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
				return "", fmt.Sprintf("nginx exited: %v: %s %s", ngx.err, ngx.tail(), strings.TrimSpace(string(log)))
			case <-ctx.Done():
				return "", ctx.Err().Error()
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return "", "nginx did not listen within 10s"
			}
		}
	}
	return "http://127.0.0.1:" + port1 + "/mcp", ""
}

// freePort finds a free loopback port for a child process. The port could
// be taken between this check and nginx's bind; nginx then fails to start
// and the column says so.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

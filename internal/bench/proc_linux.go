package bench

import "syscall"

// childAttr puts a child in a process group of its own (so stopping it
// stops whatever it started) and has the kernel kill it when the bench's
// spawning thread dies: a bench killed with SIGKILL leaves nothing behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signal sends SIGTERM (SIGINT to nginx, its fast shutdown) or, with kill,
// SIGKILL to the child's process group.
func (p *proc) signal(kill bool) {
	sig := syscall.SIGTERM
	if p.role == "nginx" {
		sig = syscall.SIGINT
	}
	if kill {
		sig = syscall.SIGKILL
	}
	syscall.Kill(-p.pid(), sig)
}

//go:build !linux

package bench

import (
	"os"
	"syscall"
)

// childAttr is the portable part of the Linux one: no parent-death
// signal, so a bench killed with SIGKILL may leave children behind here.
func childAttr() *syscall.SysProcAttr { return nil }

func (p *proc) signal(kill bool) {
	if kill {
		p.cmd.Process.Kill()
		return
	}
	p.cmd.Process.Signal(os.Interrupt)
}

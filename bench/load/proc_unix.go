//go:build unix

package main

import (
	"os/exec"
	"syscall"
	"time"
)

// cpuTime is the CPU (user and system) this process has used: the
// generator's own cost, which the server under test does not get.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ownGroup puts the child in its own process group, so a Ctrl-C at the
// terminal reaches only the generator, which then stops the child itself
// once the run it is measuring has ended.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

//go:build !unix

package main

import (
	"os/exec"
	"time"
)

// cpuTime is unknown here; the output shows 0.
func cpuTime() time.Duration { return 0 }

func ownGroup(*exec.Cmd) {}

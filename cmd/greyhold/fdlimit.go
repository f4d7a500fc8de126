package main

import (
	"fmt"
	"log/slog"
	"syscall"
)

// fdReserve is how many descriptors are kept from connections: the log's
// segments and the directory syncs, a snapshot being written and the one
// read at start, whitelist files on a reload, the listeners, the data
// directory's lock, stdio and the Go runtime's own (epoll, timers). About
// thirty are open at once in the worst case measured; four times that
// leaves room for what a future version adds.
const fdReserve = 128

// minConnections is the fewest a listener is lowered to before greyhold
// refuses to start: fewer would not serve one busy Postfix.
const minConnections = 16

// fdPlan fits the connection limits into the descriptor limit nofile:
// listeners each take up to maxConns connections and HTTP up to
// httpConns, and fdReserve stays free. When they do not fit, both are
// lowered in proportion; when not even minConnections a listener fit, it
// is an error.
func fdPlan(nofile uint64, listeners, maxConns, httpConns int) (newMax, newHTTP int, err error) {
	need := uint64(listeners)*uint64(maxConns) + uint64(httpConns) + fdReserve
	if nofile >= need {
		return maxConns, httpConns, nil
	}
	avail := int64(nofile) - fdReserve
	floor := int64(listeners+1) * minConnections
	if avail < floor {
		return 0, 0, fmt.Errorf("the open-file limit is %d descriptors; greyhold needs at least %d (%d kept for the log, snapshots and files, and %d connections for each listener and HTTP): raise it (LimitNOFILE= in systemd, ulimit -n)",
			nofile, floor+fdReserve, fdReserve, minConnections)
	}
	demand := int64(listeners)*int64(maxConns) + int64(httpConns)
	newMax = max(minConnections, int(int64(maxConns)*avail/demand))
	newHTTP = max(minConnections, int(avail-int64(listeners)*int64(newMax)))
	newHTTP = min(newHTTP, httpConns)
	return newMax, newHTTP, nil
}

// fitDescriptors raises the soft open-file limit to the hard one (Go does
// so at start too; this says what came of it) and fits the connection
// limits into it, logging what it lowered.
func fitDescriptors(logger *slog.Logger, listeners int, maxConns, httpConns *int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open-file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			logger.Warn("could not raise the open-file limit to its hard limit", "soft", lim.Cur, "hard", lim.Max, "err", err)
		} else {
			lim = raised
		}
	}
	if listeners == 0 && *httpConns == 0 {
		return nil
	}
	newMax, newHTTP, err := fdPlan(lim.Cur, listeners, *maxConns, *httpConns)
	if err != nil {
		return err
	}
	if newMax != *maxConns || newHTTP != *httpConns {
		logger.Warn("the open-file limit does not fit the connection limits; lowering them so the log and snapshots keep descriptors (raise LimitNOFILE= in systemd, or ulimit -n, to keep them)",
			"nofile", lim.Cur, "listeners", listeners, "max_connections", *maxConns, "lowered_to", newMax,
			"http_connections", *httpConns, "http_lowered_to", newHTTP, "reserved", fdReserve)
		*maxConns, *httpConns = newMax, newHTTP
	}
	return nil
}

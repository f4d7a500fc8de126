package server

import (
	"log/slog"
	"sync"

	"github.com/greyhold/greyhold/internal/ratelog"
)

// logLimits holds a limiter for every message a client's requests can
// repeat: each is logged when it first happens and then as a count every
// ratelog.DefaultInterval, so a failing disk or a hostile client cannot
// fill the log (and with it the disk) at the rate of the requests.
type logLimits struct {
	log *slog.Logger

	notLogged, badRequest, overflow            *ratelog.Limiter
	protocol, tooSlow, lineTooLong, badTime    *ratelog.Limiter
	httpServer, panicked, snapshot, ruleChange *ratelog.Limiter
	connLimit, bodyBudget                      *ratelog.Limiter

	mu  sync.Mutex
	all []*ratelog.Limiter
}

func newLogLimits(log *slog.Logger) *logLimits {
	l := &logLimits{log: log}
	l.notLogged = l.new(slog.LevelError, "change could not be logged; answered DUNNO so no mail waits on state that may be lost (check the disk under the data directory)")
	l.badRequest = l.new(slog.LevelWarn, "request not greylisted: incomplete")
	l.overflow = l.new(slog.LevelWarn, "memory bound reached with nothing left to evict: new triplets pass without greylisting (raise --max-entries, or the memory behind it)")
	l.protocol = l.new(slog.LevelWarn, "policy request broke the protocol; answered DUNNO and closed the connection")
	l.tooSlow = l.new(slog.LevelWarn, "client too slow: request not complete within the read timeout; closing")
	l.lineTooLong = l.new(slog.LevelWarn, "line protocol request longer than the line limit; closing")
	l.badTime = l.new(slog.LevelWarn, "bad policy_test_time; using the clock")
	l.httpServer = l.new(slog.LevelWarn, "http server error")
	l.panicked = l.new(slog.LevelError, "http handler panicked; answered 500")
	l.snapshot = l.new(slog.LevelError, "snapshot on request failed")
	l.ruleChange = l.new(slog.LevelError, "whitelist change not logged")
	l.bodyBudget = l.new(slog.LevelWarn, "HTTP request bodies in flight reached their budget; answered 503 (raise --http-body-budget if this is real load)")
	l.connLimit = l.new(slog.LevelWarn, "connection limit reached; refusing new connections (raise --max-connections if this is real load)")
	return l
}

// new makes a limiter that flush will see.
func (l *logLimits) new(level slog.Level, msg string) *ratelog.Limiter {
	r := ratelog.New(l.log, level, msg, ratelog.DefaultInterval)
	l.mu.Lock()
	l.all = append(l.all, r)
	l.mu.Unlock()
	return r
}

// flush logs every pending count, for a shutdown.
func (l *logLimits) flush() {
	l.mu.Lock()
	all := l.all
	l.mu.Unlock()
	for _, r := range all {
		r.Flush()
	}
}

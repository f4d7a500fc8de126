package server

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/greyhold/greyhold/whitelist"
)

// A reload whose files do not come (a hung mount, issue 9, defect 10)
// fails after ReloadTimeout instead of holding its caller, the next one
// is refused while the first still reads, and once it ends reloads work
// again.
func TestReloadTimesOut(t *testing.T) {
	release := make(chan struct{})
	calls := 0
	ts := startServer(t, func(c *Config) {
		c.ReloadTimeout = 50 * time.Millisecond
		c.WhitelistLoad = func() (*whitelist.Set, error) {
			calls++
			if calls == 1 {
				<-release
			}
			return whitelist.LoadFiles([]string{whitelist.Builtin}, nil)
		}
	})
	start := time.Now()
	if _, err := ts.srv.ReloadWhitelist(); !errors.Is(err, ErrReloadTimeout) {
		t.Fatalf("stuck reload: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the stuck reload held its caller %v", took)
	}
	code, body := ts.http("POST", "/v1/whitelist/reload", "", "")
	if code != 500 || !strings.Contains(body, "still reading its files") {
		t.Errorf("reload while one is stuck: %d %s", code, body)
	}
	close(release)
	waitFor(t, "the stuck reload to end", func() bool { return !ts.srv.reloading.Load() })
	if code, body := ts.http("POST", "/v1/whitelist/reload", "", ""); code != 200 || !strings.Contains(body, `"builtin"`) {
		t.Errorf("reload after the stuck one ended: %d %s", code, body)
	}
}

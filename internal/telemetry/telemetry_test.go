package telemetry

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	m := New()
	for _, c := range []struct {
		pprof bool
		path  string
		code  int
		body  string
	}{
		{false, "/healthz", 200, "ok"},
		{false, "/readyz", 503, "not ready"},
		{false, "/metrics", 200, "quarantine_watch_transactions_total"},
		{false, "/metrics", 200, "go_goroutines"},
		{false, "/debug/pprof/", 404, ""},
		{true, "/debug/pprof/", 200, "goroutine"},
		{true, "/debug/pprof/cmdline", 200, "quarantine-watch\x00run\x00--sasl-password\x00[redacted]"},
		{false, "/debug/pprof/cmdline", 404, ""},
	} {
		srv := httptest.NewServer(m.Handler(c.pprof, []string{"quarantine-watch", "run", "--sasl-password", "[redacted]"}))
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(body), c.body) {
			t.Errorf("pprof=%v GET %s: %d %.80q, want %d containing %q", c.pprof, c.path, resp.StatusCode, body, c.code, c.body)
		}
	}
	m.SetReady(func() bool { return true })
	if !m.Ready() {
		t.Error("not ready once the check says so")
	}
	m.Stopping()
	if m.Ready() {
		t.Error("ready after shutdown began")
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// The password of the secret tests: distinctive, so that finding it
// anywhere in an output is a leak and nothing else.
const secret = "pa55-Zq7-never-shown"

// TestSecretsNeverPrinted feeds the SASL password through each source a
// setting has (flag, environment, config file) and then asks for every
// message the command line prints: help, an unknown flag, a bad value of
// another flag from each source, a config file that does not parse, one
// with a key that is no setting. None may show the password.
func TestSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withSecret := file("with-secret.yaml", "sasl-password: "+secret+"\n")
	syntaxError := file("syntax.yaml", "sasl-username: watcher\nsasl-password: "+secret+"\nmax-batch: [1, 2\nrules: elastic\n")
	badValue := file("bad-value.yaml", "sasl-password: "+secret+"\nmax-batch: lots\n")
	unknownKey := file("unknown-key.yaml", "sasl-password: "+secret+"\nsasl-pasword: "+secret+"\n")
	secretMapping := file("mapping.yaml", "sasl-password:\n  value: "+secret+"\n")

	for _, c := range []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		want     string // the output must say this, so that it is the message meant
	}{
		{"-h, password in the environment", map[string]string{"QW_SASL_PASSWORD": secret}, []string{"run", "-h"}, 2, "-sasl-password"},
		{"-h, password in the config file", nil, []string{"run", "--config", withSecret, "-h"}, 2, "-sasl-password"},
		{"-h, config file from QW_CONFIG", map[string]string{"QW_CONFIG": withSecret}, []string{"run", "-h"}, 2, "-sasl-password"},
		{"unknown flag, password in the environment", map[string]string{"QW_SASL_PASSWORD": secret}, []string{"run", "--no-such-flag"}, 2, "no-such-flag"},
		{"unknown flag, password on the command line", nil, []string{"run", "--sasl-password", secret, "--no-such-flag"}, 2, "no-such-flag"},
		{"unknown flag, password in the config file", nil, []string{"run", "--config", withSecret, "--no-such-flag"}, 2, "no-such-flag"},
		{"bad flag value, password in the environment", map[string]string{"QW_SASL_PASSWORD": secret}, []string{"run", "--max-batch", "lots"}, 2, "max-batch"},
		{"bad environment value, password in the environment", map[string]string{"QW_SASL_PASSWORD": secret, "QW_MAX_BATCH": "lots"}, []string{"run"}, 2, "QW_MAX_BATCH"},
		{"config file that does not parse", nil, []string{"run", "--config", syntaxError}, 2, syntaxError},
		{"config file with a bad value", nil, []string{"run", "--config", badValue}, 2, "max-batch"},
		{"config file with a key that is no setting", nil, []string{"run", "--config", unknownKey}, 2, "sasl-pasword"},
		{"config file with a mapping for the password", nil, []string{"run", "--config", secretMapping}, 2, "sasl-password"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var code int
			var stdout, stderr string
			logs := captureStderr(t, func() { code, stdout, stderr = runCmd(t, "", c.args...) })
			out := stdout + stderr + logs
			if code != c.wantCode || !strings.Contains(out, c.want) {
				t.Errorf("exit %d, want %d with a message saying %q; output:\n%s", code, c.wantCode, c.want, out)
			}
			if strings.Contains(out, secret) {
				t.Errorf("the password is printed:\n%s", out)
			}
		})
	}
}

// TestSecretsNeverServed runs the service as its own process (so that its
// command line is its own) against an in-process Kafka that requires
// SCRAM-SHA-512, with the password from each source, debug logs from the
// service and from the Kafka client, and pprof on. Once it is ready it
// scrapes /metrics and /debug/pprof/cmdline, then stops it with SIGTERM:
// neither the pages nor a line of its log may show the password.
func TestSecretsNeverServed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three processes")
	}
	const user = "watcher"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", user, secret),
		kfake.SeedTopics(2, "cloudtrail", "quarantine-alerts", "quarantine-alerts.dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	conf := filepath.Join(t.TempDir(), "qw.yaml")
	if err := os.WriteFile(conf, []byte("sasl-password: "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"--sasl-password", secret}},
		{"environment", []string{"QW_SASL_PASSWORD=" + secret}, nil},
		{"config file", nil, []string{"--config", conf}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"run", "--brokers", strings.Join(cluster.ListenAddrs(), ","),
				"--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", user,
				"--group", "g-" + strings.ReplaceAll(c.name, " ", "-"), "--transactional-id", "t-" + strings.ReplaceAll(c.name, " ", "-"),
				"--metrics-addr", "127.0.0.1:0", "--pprof", "--create-topics",
				"--log-level", "debug", "--kafka-log-level", "debug", "--log-format", "json"}, c.args...)
			p := startSelf(t, c.env, args...)
			addr := p.waitLog(t, "serving /metrics, /healthz and /readyz", "addr")
			base := "http://" + addr
			deadline := time.Now().Add(30 * time.Second)
			for {
				code, _ := httpGet(t, base+"/readyz")
				if code == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not ready within 30 s; it logged:\n%s", p.stop(t))
				}
				time.Sleep(50 * time.Millisecond)
			}
			_, metrics := httpGet(t, base+"/metrics")
			if !strings.Contains(metrics, "quarantine_watch_transactions_total") {
				t.Errorf("/metrics does not look like the service's:\n%.500s", metrics)
			}
			cmdCode, cmdline := httpGet(t, base+"/debug/pprof/cmdline")
			if cmdCode == http.StatusOK && !strings.Contains(cmdline, "--sasl-username") {
				t.Errorf("/debug/pprof/cmdline does not show the command line: %q", cmdline)
			}
			logs := p.stop(t)
			if !strings.Contains(logs, `"sasl_password":"[redacted]"`) {
				t.Errorf("the log lacks the redacted security settings, so the check below proves little:\n%.2000s", logs)
			}
			for what, out := range map[string]string{"/metrics": metrics, "/debug/pprof/cmdline": cmdline, "the log": logs} {
				if strings.Contains(out, secret) {
					t.Errorf("%s shows the password:\n%s", what, excerpt(out, secret))
				}
			}
		})
	}
}

// excerpt returns the lines of out that contain s.
func excerpt(out, s string) string {
	var lines []string
	for l := range strings.SplitSeq(out, "\n") {
		if strings.Contains(l, s) {
			lines = append(lines, fmt.Sprintf("%.400s", l))
		}
	}
	return strings.Join(lines, "\n")
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// selfEnv makes the test binary run main instead of the tests: a process
// of the service whose command line and environment are its own.
const selfEnv = "QUARANTINE_WATCH_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(selfEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

type selfProcess struct {
	cmd   *exec.Cmd
	lines chan string
	all   strings.Builder
	done  chan struct{}
}

// startSelf starts the test binary as quarantine-watch with args and env
// (and none of the test's QW_ variables); it is killed when the test ends.
func startSelf(t *testing.T, env []string, args ...string) *selfProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QW_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(append(cmd.Env, selfEnv+"=1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &selfProcess{cmd: cmd, lines: make(chan string, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			p.all.WriteString(line + "\n")
			select {
			case p.lines <- line:
			default:
			}
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		_ = cmd.Wait()
	})
	return p
}

// waitLog waits for a JSON log line whose msg is msg and returns its field
// key.
func (p *selfProcess) waitLog(t *testing.T, msg, key string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("the process ended before logging %q", msg)
			}
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == msg {
				return fmt.Sprint(entry[key])
			}
		case <-timeout:
			t.Fatalf("no %q logged within 30 s", msg)
		}
	}
}

// stop sends SIGTERM, waits for the exit and returns everything the
// process wrote.
func (p *selfProcess) stop(t *testing.T) string {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		for range p.lines {
		}
	}()
	select {
	case <-p.done:
	case <-ctx.Done():
		t.Fatal("the process did not stop within a minute of SIGTERM")
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	return p.all.String()
}
